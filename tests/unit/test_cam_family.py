"""The CAM family: pytorch-grad-cam as the oracle for every variant, known answers, the
token reshape, pass sizes, and each variant through the engine and the audits."""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution, LayerGradCam
from pytorch_grad_cam import (
    AblationCAM,
    EigenCAM,
    FullGrad,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
from torch import nn
from torchvision import models

from tests.helpers.audit_toys import TinyNet, audit_input, images_for
from xaudit.audit import run_audits
from xaudit.data.base import Record
from xaudit.errors import XauditError
from xaudit.explain import EXPLAINERS, ExplainContext, build_explainer
from xaudit.explain.cam import CamExplainer, find_target_layer, resolve_layer
from xaudit.explain.counting import count_model_evals
from xaudit.explain.engine import MapStore, explain_records
from xaudit.explain.fastpath import FastPath
from xaudit.run import RunDir

ORACLES = {
    "grad_cam": GradCAM,
    "grad_cam_plusplus": GradCAMPlusPlus,
    "hires_cam": HiResCAM,
    "xgrad_cam": XGradCAM,
    "layer_cam": LayerCAM,
    "score_cam": ScoreCAM,
    "ablation_cam": AblationCAM,
    "full_grad": FullGrad,
}
FAMILY = [*ORACLES, "eigen_cam"]


class Net(nn.Module):
    """Conv-BN-ReLU, two strided convs: an 8×8 layer at 32 px; a BN with non-trivial stats."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 12, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.fc = nn.Linear(12, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def net() -> Net:
    torch.manual_seed(0)
    model = Net().eval()
    bn = model.features[1]
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return model


class OneConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)
        self.fc = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def inputs(n: int = 3, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))
    return x, torch.tensor([0, 2, 4, 1, 3][:n])


def ctx_of(model: nn.Module, layer: nn.Module | None, reshape=None) -> ExplainContext:
    return ExplainContext(mean=torch.zeros(3), std=torch.ones(3), target_layer=layer,
                          layers=dict(model.named_modules()), reshape=reshape)


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Each map to [0, 1] (all-zero maps stay zero): pytorch-grad-cam's final scaling."""
    flat = maps.flatten(1)
    flat = flat - flat.amin(1, keepdim=True)
    span = flat.amax(1, keepdim=True)
    return torch.where(span > 0, flat / span.clamp_min(1e-30), flat).view_as(maps)


def oracle(name: str, model: nn.Module, layer: nn.Module, x, t, reshape=None) -> torch.Tensor:
    layers = [] if name == "full_grad" else [layer]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with ORACLES[name](model, layers, reshape_transform=reshape) as cam:
            out = cam(x, [ClassifierOutputTarget(int(k)) for k in t])
    return torch.from_numpy(out)


def ours(name: str, model: nn.Module, layer: nn.Module, x, t, reshape=None, **params) -> torch.Tensor:
    attr = build_explainer({"name": name, **params}).attribute(model, x, t, ctx_of(model, layer, reshape))
    assert attr.shape == (len(x), 1, *x.shape[-2:]) and attr.dtype == torch.float32
    return attr[:, 0]


# ---------------------------------------------------------------- pytorch-grad-cam as the oracle


@pytest.mark.parametrize("name", list(ORACLES))
@pytest.mark.parametrize("where", ["relu", "conv"])
def test_each_variant_equals_pytorch_grad_cam(name, where):
    """Same model, layer and targets; both upsample bilinearly with half-pixel centres
    (OpenCV's resize, F.interpolate align_corners=False). On the conv layer (negative
    activations, then a ReLU) Ablation-CAM's two ablations agree: both end at 0 after it."""
    model = net()
    layer = model.features[6] if where == "relu" else model.features[5]
    x, t = inputs()
    expected = oracle(name, model, layer, x, t)
    got = minmax(ours(name, model, layer, x, t))
    assert expected.flatten(1).amax(1).gt(0).sum() >= 2  # not a comparison of blank maps
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_ablation_cam_zeroes_channels_where_pytorch_grad_cam_uses_min_minus_1e7():
    """Where the layer's output can be negative and no ReLU follows (one conv, mean, linear
    head), pytorch-grad-cam's min - 1e7 ablation is not the paper's zeroing: its map
    differs, while xaudit's equals the zeroing by hand (test_known_answers_on_one_conv)."""
    torch.manual_seed(0)
    model = OneConv().eval()
    x, t = inputs(2, 8)
    got = minmax(ours("ablation_cam", model, model.conv, x, t))
    assert (got - oracle("ablation_cam", model, model.conv, x, t)).abs().max() > 1e-2


def test_eigen_cam_is_pytorch_grad_cams_projection_with_a_fixed_sign():
    """The projection is pytorch-grad-cam's (get_2d_projection) up to its sign, which
    xaudit fixes (positive correlation with the channel sum); pytorch-grad-cam's EigenCAM
    equals xaudit's map where LAPACK happened to return that sign, else the flipped one."""
    model = net()
    layer = model.features[6]
    x, t = inputs()
    with torch.no_grad():
        acts = model.features(x)
    proj = torch.from_numpy(get_2d_projection(acts.numpy()))
    sign = torch.sign((proj.flatten(1) * acts.sum(1).flatten(1)).sum(1))[:, None, None]
    signed = F.interpolate(F.relu(sign * proj)[:, None], size=(32, 32), mode="bilinear",
                           align_corners=False)[:, 0]
    got = minmax(ours("eigen_cam", model, layer, x, t))
    torch.testing.assert_close(got, minmax(signed), rtol=1e-4, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with EigenCAM(model, [layer]) as cam:
            theirs = torch.from_numpy(cam(x, None))
    flipped = minmax(F.interpolate(F.relu(-sign * proj)[:, None], size=(32, 32), mode="bilinear",
                                   align_corners=False)[:, 0])
    for n in range(len(x)):
        assert torch.allclose(theirs[n], got[n], rtol=1e-4, atol=1e-5) or torch.allclose(
            theirs[n], flipped[n], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- Grad-CAM unchanged, known answers


def test_grad_cam_equals_captums_layer_grad_cam_on_mobilenet_v2():
    """The demo's model family: maps identical to the Captum implementation it replaced."""
    torch.manual_seed(0)
    model = models.mobilenet_v2(weights=None, num_classes=4).eval()
    name, layer = find_target_layer(model)
    assert name == "features.18"
    x, t = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2)), torch.tensor([1, 3])
    for relu in (True, False):
        expected = LayerAttribution.interpolate(
            LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=relu),
            (64, 64), interpolate_mode="bilinear")
        got = build_explainer({"name": "grad_cam", "relu": relu}).attribute(model, x, t, ctx_of(model, layer))
        torch.testing.assert_close(got, expected.detach(), rtol=0, atol=1e-6)


def test_known_answers_on_one_conv():
    """y_t = Σ_k w_tk mean(A_k): G_k = w_tk / hw everywhere, so HiResCAM = Grad-CAM,
    LayerCAM = Σ_k relu(w_tk) A_k / hw, and ablating channel k lowers y_t by w_tk mean(A_k)."""
    torch.manual_seed(0)
    model = OneConv().eval()
    x, t = inputs(2, 8)
    with torch.no_grad():
        acts = model.conv(x)
        w = model.fc.weight[t]
        y = model(x).gather(1, t[:, None])
    hw = acts[0, 0].numel()

    def up(cam):
        return F.interpolate(F.relu(cam)[:, None], size=(8, 8), mode="bilinear", align_corners=False)[:, 0]

    grad_cam = up((w[:, :, None, None] / hw * acts).sum(1))
    torch.testing.assert_close(ours("grad_cam", model, model.conv, x, t), grad_cam, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours("hires_cam", model, model.conv, x, t), grad_cam, rtol=1e-5, atol=1e-6)
    layer_cam = up((w.clamp_min(0)[:, :, None, None] / hw * acts).sum(1))
    torch.testing.assert_close(ours("layer_cam", model, model.conv, x, t), layer_cam, rtol=1e-5, atol=1e-6)
    ablation = up(((w * acts.mean(dim=(2, 3)) / y)[:, :, None, None] * acts).sum(1))
    torch.testing.assert_close(ours("ablation_cam", model, model.conv, x, t), ablation, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- token layers (ctx.reshape)


class TokenNet(nn.Module):
    """Patch embedding to N×(1 + h·w)×C tokens with a class token, a token-wise block, a
    head on the mean token: the shape of a vision transformer's blocks."""

    def __init__(self, dim: int = 6, classes: int = 5):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.block = nn.Sequential(nn.Linear(dim, dim), nn.GELU())
        self.mix = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1)
        tokens = self.block(tokens)
        return self.head(torch.tanh(self.mix(tokens)).mean(dim=1))


def drop_class_token(tokens: torch.Tensor) -> torch.Tensor:
    n, length, c = tokens.shape
    side = int((length - 1) ** 0.5)
    return tokens[:, 1:].reshape(n, side, side, c).permute(0, 3, 1, 2)


@pytest.mark.parametrize("name", ["grad_cam", "grad_cam_plusplus", "hires_cam", "layer_cam", "score_cam"])
def test_token_layer_through_reshape_equals_pytorch_grad_cam(name):
    torch.manual_seed(0)
    model = TokenNet().eval()
    x, t = inputs(3, 16)
    expected = oracle(name, model, model.block, x, t, reshape=drop_class_token)
    got = minmax(ours(name, model, model.block, x, t, reshape=drop_class_token))
    assert expected.flatten(1).amax(1).gt(0).sum() >= 2
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_ablation_cam_on_tokens_ablates_the_patch_tokens_of_a_channel():
    torch.manual_seed(0)
    model = TokenNet().eval()
    x, t = inputs(2, 16)
    with torch.no_grad():
        y = model(x).gather(1, t[:, None])
        acts = drop_class_token(model.block(torch.cat([model.cls.expand(2, -1, -1),
                                                       model.embed(x).flatten(2).transpose(1, 2)], 1)))
        drops = []
        for k in range(acts.shape[1]):
            def cut(_m, _a, out, k=k):
                out = out.clone()
                out[:, 1:, k] = 0
                return out
            handle = model.block.register_forward_hook(cut)
            drops.append(model(x).gather(1, t[:, None]))
            handle.remove()
        w = (y - torch.cat(drops, 1)) / y
        expected = F.interpolate(F.relu((w[:, :, None, None] * acts).sum(1, keepdim=True)),
                                 size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    got = ours("ablation_cam", model, model.block, x, t, reshape=drop_class_token)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_token_layer_without_reshape_is_refused_and_4d_layers_need_none():
    torch.manual_seed(0)
    model = TokenNet().eval()
    x, t = inputs(1, 16)
    with pytest.raises(XauditError, match="reshape"):
        ours("grad_cam", model, model.block, x, t)
    cnn = net()
    x, t = inputs(2)
    identity = ours("grad_cam", cnn, cnn.features[6], x, t, reshape=lambda a: a)
    torch.testing.assert_close(ours("grad_cam", cnn, cnn.features[6], x, t), identity, rtol=0, atol=0)


# ---------------------------------------------------------------- passes, shared forwards, registry


@pytest.mark.parametrize("name", ["score_cam", "ablation_cam"])
def test_pass_size_changes_nothing(name):
    model = net()
    x, t = inputs()
    maps = []
    for per_pass in (1, 5, 64):
        e = build_explainer(name)
        ctx = dataclasses.replace(ctx_of(model, model.features[6]), pass_size=per_pass)
        maps.append(e.attribute(model, x, t, ctx))
    torch.testing.assert_close(maps[0], maps[2], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(maps[1], maps[2], rtol=1e-5, atol=1e-7)


def test_score_cam_runs_the_blank_image_once_for_constant_channels():
    model = net()
    with torch.no_grad():  # channels 0-3 of the last conv: dead (weights 0, bias -1, then ReLU)
        model.features[5].weight[:4] = 0
        model.features[5].bias[:4] = -1.0
    x, t = inputs(2)
    with count_model_evals(model) as count:
        got = ours("score_cam", model, model.features[6], x, t)
    assert count.n == 2 + 2 * 8 + 1  # the activations, 8 live channels per image, one blank image
    torch.testing.assert_close(minmax(got), oracle("score_cam", model, model.features[6], x, t),
                               rtol=1e-4, atol=1e-5)


def test_every_variant_is_registered_with_kind_and_layer():
    for name in FAMILY:
        cls = EXPLAINERS.get(name)
        assert cls.kind == "cam"
        if name != "full_grad":
            assert issubclass(cls, CamExplainer)
            assert build_explainer({"name": name, "layer": "features.6"}).label == f"{name}[features.6]"
    with pytest.raises(Exception, match="relu"):
        build_explainer({"name": "layer_cam", "relu": "yes"})
    model = net()
    assert resolve_layer(None, ctx_of(model, model.features[6]), "grad_cam") is model.features[6]


def test_every_variant_through_the_engine_equals_a_direct_call(tmp_path):
    """The engine sets the pass size from a 1 MiB budget; maps equal direct calls."""
    model = net()
    x, t = inputs(5)
    records = [Record(id=f"r{i}", label=0, image=None) for i in range(5)]
    pos = {r.id: i for i, r in enumerate(records)}
    ctx = ctx_of(model, model.features[6])
    for name in FAMILY:
        e = build_explainer(name)
        store = MapStore(tmp_path, e.label)
        stats = explain_records(model, e, records, t.tolist(), lambda rs: x[[pos[r.id] for r in rs]], ctx,
                                store, 2, 4, torch.device("cpu"), fast=FastPath(memory_budget_mb=1))
        assert stats["n_new"] == 5 and stats["model_evals"] >= 5
        direct = build_explainer(name).attribute(model, x, t, ctx).sum(1)
        torch.testing.assert_close(store.load([r.id for r in records])["maps"], direct, rtol=1e-4, atol=1e-6)


def audit_all_variants(tmp_path, specs: list[dict], n: int) -> dict:
    torch.manual_seed(0)
    model = TinyNet()
    images = images_for(model, n=n, size=16)
    explainers = [build_explainer(name) for name in FAMILY]
    inp = audit_input(model, explainers, images, splits={"test": images, "train": images},
                      retrain_shuffled=lambda seed: TinyNet())
    inp = dataclasses.replace(inp, ctx=dataclasses.replace(
        inp.ctx, target_layer=model.act2, layers=dict(model.named_modules())))
    summary = run_audits(inp, specs, RunDir(tmp_path / "run").create(), n_images=n)
    json.dumps(summary, allow_nan=False)
    return summary


def test_every_variant_goes_through_the_audits(tmp_path):
    specs = [{"name": "model_randomization", "max_steps": 1, "independent": False},
             {"name": "label_randomization"}, {"name": "localization"}, {"name": "shortcut"},
             {"name": "correctness"}]
    summary = audit_all_variants(tmp_path, specs, n=2)
    for audit in ("localization", "model_randomization"):
        assert set(FAMILY) <= set(summary[audit]), (audit, sorted(summary[audit]))
    assert set(summary["cost"]) >= {s["name"] for s in specs}


@pytest.mark.slow
def test_every_variant_goes_through_faithfulness(tmp_path):
    specs = [{"name": "faithfulness", "steps": 4, "road_percentages": [0.5], "infidelity_samples": 2,
              "sensitivity_samples": 2}]
    summary = audit_all_variants(tmp_path, specs, n=2)
    assert set(FAMILY) <= set(summary["faithfulness"]), sorted(summary["faithfulness"])


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.ModuleDict({"conv": nn.Conv2d(3, 6, 3, stride=2), "act": nn.ReLU()})
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.block["act"](self.block["conv"](x)).mean(dim=(2, 3)))


@pytest.mark.parametrize("arch, layer, channels", [("net", "features.6", 12), ("net", "features", 12),
                                                   ("resnet18", "layer4", 512)])
def test_ablation_cam_runs_only_the_model_after_a_chain_layer(arch, layer, channels, monkeypatch):
    """The suffix path (layers before the target computed once) equals the plain path."""
    from xaudit.explain.cam import ablation_cam

    torch.manual_seed(0)
    model = net() if arch == "net" else models.resnet18(weights=None, num_classes=5).eval()
    x, t = inputs(2)
    e = build_explainer({"name": "ablation_cam", "layer": layer})
    with count_model_evals(model) as count:
        fast = e.attribute(model, x, t, dataclasses.replace(ctx_of(model, None), pass_size=600))
    report = e.take_report()
    assert report["path"] == "incremental" and report["split"] == layer and report["work"] < 0.05
    assert count.n == 2 + 1 + 1 + 2 * channels  # activations, chain trace, check, one copy per channel
    monkeypatch.setattr(ablation_cam.Suffix, "build", classmethod(lambda cls, run: "forced plain"))
    plain = e.attribute(model, x, t, ctx_of(model, None))
    assert e.take_report() == {"path": "plain", "images": 2, "reason": "forced plain"}
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-6)


def test_ablation_cam_inside_a_stage_runs_the_whole_model_and_says_why():
    torch.manual_seed(0)
    model = Nested().eval()
    x, t = inputs(2)
    e = build_explainer({"name": "ablation_cam", "layer": "block.conv"})
    got = e.attribute(model, x, t, ctx_of(model, None))
    report = e.take_report()
    assert report["path"] == "plain" and "block.conv is not a stage" in report["reason"]
    torch.testing.assert_close(minmax(got[:, 0]), oracle("ablation_cam", model, model.block["conv"], x, t),
                               rtol=1e-4, atol=1e-5)


class InPlace(nn.Module):
    """A frozen conv followed by an in-place ReLU: the layer's output is overwritten."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).mean(dim=(2, 3)))


def test_layer_before_an_in_place_op_with_frozen_weights():
    torch.manual_seed(0)
    model = InPlace().eval()
    for p in model.conv.parameters():
        p.requires_grad_(False)
    x, t = inputs(2, 16)
    ctx = ctx_of(model, model.conv)
    got = build_explainer("hires_cam").attribute(model, x, t, ctx)
    with torch.no_grad():
        acts = model.conv(x)  # dy/dA = w_t / hw where A > 0, else 0
        grads = (acts > 0) * model.fc.weight[t][:, :, None, None] / acts[0, 0].numel()
        expected = F.interpolate(F.relu((grads * acts).sum(1, keepdim=True)), size=(16, 16),
                                 mode="bilinear", align_corners=False)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    w = grads.mean(dim=(2, 3))[:, :, None, None]
    by_hand = F.interpolate(F.relu((w * acts).sum(1, keepdim=True)), size=(16, 16), mode="bilinear",
                            align_corners=False)
    grad_cam = build_explainer("grad_cam").attribute(model, x, t, ctx)
    torch.testing.assert_close(grad_cam, by_hand, rtol=1e-5, atol=1e-7)
    # Captum's LayerGradCam (grad_cam's implementation before the template) misses the
    # hand-computed map on a layer whose output is modified in place: see docs/methods.md
    captum = LayerAttribution.interpolate(LayerGradCam(model, model.conv).attribute(x, target=t), (16, 16),
                                          interpolate_mode="bilinear").detach()
    assert (captum - by_hand).abs().max() > 1e-3
