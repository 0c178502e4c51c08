"""Incremental occlusion against Captum's per-image Occlusion, and its refusals."""

import pytest
import torch
import torchvision
from captum.attr import Occlusion
from torch import nn

from xaudit.data.base import Record
from xaudit.explain import ExplainContext, build_explainer
from xaudit.explain import incremental as inc
from xaudit.explain.engine import MapStore, explain_records
from xaudit.explain.fastpath import FastPath
from xaudit.explain.prefix import probe_axis

TOL = {"rtol": 1e-4, "atol": 1e-5}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Many tiny forwards: one thread is faster, and immune to spinning on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def captum(model, x, baselines, targets, window, stride):
    occ = Occlusion(model)
    return torch.cat([
        occ.attribute(x[i : i + 1], sliding_window_shapes=(x.shape[1], window, window),
                      strides=(x.shape[1], stride, stride), baselines=baselines[i : i + 1],
                      target=int(targets[i]))
        for i in range(len(x))
    ])


def net(name):
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(num_classes=10).eval()


def inputs(n, size, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randn(n, 3, size, size, generator=g)


def test_geometry_of_a_strided_conv_and_captums_window_positions():
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)
    ax = probe_axis(conv, torch.Size([2, 9, 9]), 2, torch.device("cpu"))
    assert (ax.stride, ax.n_out, ax.lo, ax.hi) == (2, 5, [0, 1, 3, 5, 7], [1, 3, 5, 7, 8])
    assert probe_axis(nn.AdaptiveAvgPool2d(1), torch.Size([2, 9, 9]), 2, torch.device("cpu")) is None
    # Captum shifts ceil((24 - 5) / 3) = 7 times; the last window is cut at the border
    assert inc.window_starts(24, 5, 3) == [0, 3, 6, 9, 12, 15, 18, 21]


@pytest.mark.parametrize("name,size,window,stride,baseline", [
    ("resnet18", 80, 12, 8, "zero"),  # windows tile the image
    ("resnet18", 78, 11, 7, "pixels"),  # they do not: the last ones are cut; per-pixel baseline
    ("mobilenet_v2", 64, 10, 6, "constant"),
])
def test_incremental_equals_per_image_captum(name, size, window, stride, baseline):
    model = net(name)
    x, noise = inputs(1, size)
    base = {"zero": torch.zeros_like(x), "pixels": noise, "constant": torch.full_like(x, -1.5)}[baseline]
    targets = torch.tensor([3])
    attr, report = inc.occlusion(model, x, base, targets, window, stride, per_pass=37)
    assert report["path"] == "incremental", report
    assert report["work"] < 0.9 and report["windows"] == len(inc.window_starts(size, window, stride)) ** 2
    torch.testing.assert_close(attr, captum(model, x, base, targets, window, stride), **TOL)


def test_a_named_split_is_used_and_an_unknown_one_is_refused():
    model = net("resnet18")
    x, _ = inputs(1, 64)
    attr, report = inc.occlusion(model, x, torch.zeros_like(x), torch.tensor([2]), 8, 8, 64, split="layer1")
    assert report["split"] == "layer1.1"
    torch.testing.assert_close(attr, captum(model, x, torch.zeros_like(x), [2], 8, 8), **TOL)
    attr, report = inc.occlusion(model, x, torch.zeros_like(x), torch.tensor([2]), 8, 8, 64, split="fc")
    assert attr is None and "not in the local prefix" in report["reason"]


class Scaled(nn.Module):
    """Pointwise in structure, but its values depend on the input's size: crops differ."""

    def forward(self, x):
        return x * x.shape[-1]


class SizeDependent(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.scale = Scaled()
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

    def forward(self, x):
        return self.head(self.conv2(self.scale(self.conv(x))))


class Functional(SizeDependent):
    """The input goes through a functional op before the first layer: no chain of stages."""

    def forward(self, x):
        return self.head(self.conv2(self.conv(x * 2)))


def engine(tmp_path, model, spec, x, targets, fast=None):
    records = [Record(id=f"r{i}", label=0, image=x[i]) for i in range(len(x))]
    pos = {r.id: i for i, r in enumerate(records)}
    ctx = ExplainContext(mean=torch.zeros(3), std=torch.ones(3))
    explainer = build_explainer(spec)
    store = MapStore(tmp_path / str(len(list(tmp_path.iterdir()))), explainer.label)
    stats = explain_records(model, explainer, records, targets, lambda rs: x[[pos[r.id] for r in rs]], ctx,
                            store, 2, 4, torch.device("cpu"), fast=fast or FastPath())
    return store.load()["maps"], stats


@pytest.mark.parametrize("model,why", [(SizeDependent(), "differ from full forwards"),
                                        (Functional(), "no local prefix")])
def test_models_where_the_split_does_not_hold_take_the_plain_path_and_say_so(tmp_path, model, why):
    model.eval()
    x, _ = inputs(3, 32)
    spec = {"name": "occlusion", "window": 6, "stride": 4, "baseline": "zero"}
    maps, stats = engine(tmp_path, model, spec, x, [0, 1, 2])
    assert stats["path"].startswith("plain (") and why in stats["path"]
    assert stats["incremental_images"] == 0
    ref = captum(model, x, torch.zeros_like(x), [0, 1, 2], 6, 4).sum(1)
    torch.testing.assert_close(maps, ref, **TOL)


def test_engine_uses_it_by_default_counts_windows_and_can_turn_it_off(tmp_path):
    model = net("resnet18")
    x, _ = inputs(2, 80, seed=2)
    spec = {"name": "occlusion", "window": 12, "stride": 8, "baseline": "zero"}
    maps, stats = engine(tmp_path, model, spec, x, [1, 2])
    assert stats["path"].startswith("incremental (prefix to ") and stats["incremental_images"] == 2
    assert 0 < stats["work_per_window"] < 1
    windows = len(inc.window_starts(80, 12, 8)) ** 2
    # each window and each clean image is one evaluation; the check on 5 windows of the
    # batch's first image adds its full forwards, and the first call traces the chain of
    # stages once
    assert stats["model_evals"] == 2 * (windows + 1) + (6 + 6) + 1
    plain, plain_stats = engine(tmp_path, model, {**spec, "incremental": False}, x, [1, 2])
    assert plain_stats["path"] == "plain (incremental: false)"
    assert plain_stats["model_evals"] == 2 * (windows + 1)
    torch.testing.assert_close(maps, plain, **TOL)
    torch.testing.assert_close(maps, captum(model, x, torch.zeros_like(x), [1, 2], 12, 8).sum(1), **TOL)


@pytest.mark.heavy
def test_bf16_runs_incrementally_and_a_strict_check_redoes_it_in_fp32(tmp_path):
    model = net("resnet18")
    x, _ = inputs(2, 80, seed=3)
    spec = {"name": "occlusion", "window": 12, "stride": 8, "baseline": "zero"}
    fp32, _ = engine(tmp_path, model, spec, x, [0, 1])
    strict, stats = engine(tmp_path, model, spec, x, [0, 1], FastPath(precision="bf16", tolerance=1e-12))
    assert stats["fp32_recomputed"] == 2 and stats["incremental_images"] == 4
    torch.testing.assert_close(strict, fp32)


def test_parameters_are_checked():
    from xaudit.errors import ConfigError

    with pytest.raises(ConfigError, match="incremental"):
        build_explainer({"name": "occlusion", "incremental": "yes"})
