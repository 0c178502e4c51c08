"""The engine's fast path against plain per-image Captum calls on the same inputs."""

import pytest
import torch
from captum.attr import IntegratedGradients, Occlusion
from torch import nn

from xaudit.data.base import Record
from xaudit.errors import ConfigError, XauditError
from xaudit.explain import ExplainContext, build_explainer
from xaudit.explain.engine import MapStore, explain_dataset, explain_records
from xaudit.explain.fastpath import (
    FastPath,
    ForwardCache,
    samples_per_pass,
    step_ladder,
    unique_forward,
    with_backoff,
)

N, SIZE = 6, 24


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def setup():
    images = torch.randn(N, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    records = [Record(id=f"r{i}", label=0, image=images[i]) for i in range(N)]
    index = {r.id: i for i, r in enumerate(records)}
    ctx = ExplainContext(mean=torch.full((3,), 0.5), std=torch.full((3,), 0.25),
                         generator=torch.Generator().manual_seed(0))
    targets = [i % 3 for i in range(N)]
    return images, records, ctx, targets, lambda recs: images[[index[r.id] for r in recs]]


def run(tmp_path, spec, fast, name="x", forwards=None, batch_size=4):
    images, records, ctx, targets, batch_fn = setup()
    model = SmallCNN().eval()
    explainer = build_explainer(spec)
    store = MapStore(tmp_path / name, explainer.label)
    stats = explain_records(model, explainer, records, targets, batch_fn, ctx, store, batch_size, 4,
                            torch.device("cpu"), fast=fast, forwards=forwards)
    return store.load(), stats, (images, ctx, targets, model)


def captum_ig(model, images, ctx, targets, n_steps):
    ig = IntegratedGradients(model)
    maps, deltas = [], []
    for i in range(N):
        x = images[i : i + 1]
        base = ctx.pixel_to_input(torch.zeros_like(x))
        a, d = ig.attribute(x, baselines=base, target=targets[i], n_steps=n_steps,
                            method="gausslegendre", return_convergence_delta=True)
        maps.append(a.sum(1))
        deltas.append(d)
    return torch.cat(maps), torch.cat(deltas)


def test_fp32_ig_equals_per_image_captum_and_counts_evals(tmp_path):
    out, stats, (images, ctx, targets, model) = run(
        tmp_path, {"name": "integrated_gradients", "n_steps": 16}, FastPath())
    ref_maps, ref_delta = captum_ig(model, images, ctx, targets, 16)
    torch.testing.assert_close(out["maps"], ref_maps, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["delta"], ref_delta.float(), rtol=1e-3, atol=1e-4)
    # 16 steps per image, f(x) once per image, the black baseline once per batch (2 batches)
    assert stats["model_evals"] == N * 16 + N + 2
    assert stats["fp32_recomputed"] == 0 and stats["steps_used"] == N * 16


def test_occlusion_under_inference_mode_equals_captum_default(tmp_path):
    spec = {"name": "occlusion", "window": 5, "stride": 3, "baseline": "zero"}
    out, stats, (images, _ctx, targets, model) = run(tmp_path, spec, FastPath())
    occ = Occlusion(model)
    ref = torch.cat([
        occ.attribute(images[i : i + 1], sliding_window_shapes=(3, 5, 5), strides=(3, 3, 3),
                      baselines=0.0, target=targets[i]).sum(1)
        for i in range(N)
    ])
    torch.testing.assert_close(out["maps"], ref, rtol=1e-4, atol=1e-5)
    assert stats["samples_per_pass"] >= 1


def test_bf16_ig_meets_the_tolerance_or_is_recomputed_in_fp32(tmp_path):
    tol = 0.05
    out, stats, (images, ctx, targets, model) = run(
        tmp_path, {"name": "integrated_gradients", "n_steps": 16}, FastPath(precision="bf16", tolerance=tol))
    ref_maps, ref_delta = captum_ig(model, images, ctx, targets, 16)
    gap = ref_maps.flatten(1).sum(1) - ref_delta.float()  # f(x) - f(b) in fp32
    rel = (out["maps"].flatten(1).sum(1) - gap).abs() / gap.abs()
    assert (rel <= tol + 1e-6).all()
    # maps agree with fp32 Captum to bf16 accuracy
    err = (out["maps"] - ref_maps).norm() / ref_maps.norm()
    assert err < 0.05
    # an impossible tolerance sends every image back to fp32: then the maps are Captum's
    strict, stats, _ = run(tmp_path, {"name": "integrated_gradients", "n_steps": 16},
                           FastPath(precision="bf16", tolerance=1e-12), name="strict")
    assert stats["fp32_recomputed"] == N
    torch.testing.assert_close(strict["maps"], ref_maps, rtol=1e-4, atol=1e-5)


def test_adaptive_steps_refine_only_failing_images(tmp_path):
    spec = {"name": "integrated_gradients", "n_steps": 16}
    # a loose tolerance: every image passes at the coarse step count (a quarter)
    _, loose, _ = run(tmp_path, spec, FastPath(adaptive_steps=True, tolerance=10.0), name="loose")
    assert loose["refined"] == 0 and loose["steps_used"] == N * 4
    # an impossible one: every image climbs every rung (4, 8, 16 steps), and the result is
    # the full-step one
    full, _, _ = run(tmp_path, spec, FastPath(), name="full")
    tight, stats, _ = run(tmp_path, spec, FastPath(adaptive_steps=True, tolerance=1e-12), name="tight")
    assert stats["refined"] == N and stats["steps_used"] == N * (4 + 8 + 16)
    torch.testing.assert_close(tight["maps"], full["maps"])
    # a tolerance between: each image stops at the first rung where it passes, and its map
    # is IG at that step count
    mid, mid_stats, _ = run(tmp_path, spec, FastPath(adaptive_steps=True, tolerance=0.003), name="mid")
    assert 0 < mid_stats["refined"] < N and N * 4 < mid_stats["steps_used"] < N * (4 + 8 + 16)
    rungs = []
    for steps in (4, 8, 16):
        alone, _, _ = run(tmp_path, {**spec, "n_steps": steps}, FastPath(), name=f"s{steps}")
        rungs.append(alone["maps"])
    for n in range(N):  # every map is IG at one of the rungs
        assert any(torch.allclose(mid["maps"][n], r[n], rtol=1e-5, atol=1e-7) for r in rungs), n


def test_forwards_are_shared_between_methods(tmp_path):
    images, records, ctx, targets, batch_fn = setup()
    model = SmallCNN().eval()
    methods = [build_explainer({"name": "integrated_gradients", "n_steps": 4}),
               build_explainer({"name": "saliency"})]
    stores = [MapStore(tmp_path, e.label) for e in methods]
    cache = ForwardCache()
    stats = explain_dataset(model, methods, records, targets, batch_fn, ctx, stores, 3, 4,
                            torch.device("cpu"), fast=FastPath(precision="bf16", tolerance=10.0),
                            forwards=cache)
    # fp32 f(x) runs once per image (for IG's completeness) and serves saliency's bf16 check
    assert cache.evals == N and cache.hits == N
    ig, sal = (stats[e.label] for e in methods)
    assert ig["model_evals"] == N * 4 + N + 2  # steps, f(x), one black baseline per batch
    assert sal["model_evals"] == N + N  # its own pass and the bf16 logits it is checked by


def test_batched_stream_equals_one_method_at_a_time(tmp_path):
    images, records, ctx, targets, batch_fn = setup()
    model = SmallCNN().eval()
    specs = [{"name": "saliency"}, {"name": "grad_cam", "layer": "features.2"}]
    ctx.layers = dict(model.named_modules())
    methods = [build_explainer(s) for s in specs]
    together = [MapStore(tmp_path / "a", e.label) for e in methods]
    explain_dataset(model, methods, records, targets, batch_fn, ctx, together, 4, 4, torch.device("cpu"))
    for e, store in zip(methods, together, strict=True):
        alone = MapStore(tmp_path / "b", e.label)
        explain_records(model, e, records, targets, batch_fn, ctx, alone, 2, 3, torch.device("cpu"))
        torch.testing.assert_close(store.load()["maps"], alone.load()["maps"])


def test_backoff_halves_on_out_of_memory_and_gives_up_at_one():
    seen = []

    def work(chunk):
        seen.append(chunk)
        if chunk > 4:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 GB")
        return chunk

    assert with_backoff(work, 32) == 4 and seen == [32, 16, 8, 4]
    with pytest.raises(XauditError, match="one sample per pass"):
        with_backoff(lambda c: (_ for _ in ()).throw(torch.OutOfMemoryError("out of memory")), 2)
    with pytest.raises(ValueError):  # other errors pass through untouched
        with_backoff(lambda c: (_ for _ in ()).throw(ValueError("bad")), 8)


def test_budget_arithmetic_and_step_ladder():
    assert samples_per_pass(per_sample=10 << 20, budget=1 << 30, gradients=True) == 51
    assert samples_per_pass(per_sample=10 << 20, budget=1 << 30, gradients=False) == 204
    assert samples_per_pass(per_sample=1 << 40, budget=1 << 20, gradients=True) == 1
    assert step_ladder(32, adaptive=False) == [32]
    assert step_ladder(32, adaptive=True) == [8, 16, 32]
    assert step_ladder(8, adaptive=True) == [4, 8]
    assert step_ladder(4, adaptive=True) == [4]
    with pytest.raises(ConfigError, match="Allowed: fp32, bf16"):
        FastPath(precision="fp16")


def test_unique_forward_runs_each_distinct_baseline_once():
    model = SmallCNN().eval()
    calls = []
    model.register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[0]))
    base = torch.zeros(5, 3, 8, 8)
    base[3] = 1.0
    out = unique_forward(model, base, torch.tensor([0, 1, 2, 0, 1]))
    assert calls == [2]
    with torch.no_grad():
        torch.testing.assert_close(out, model(base)[torch.arange(5), torch.tensor([0, 1, 2, 0, 1])])


def test_shard_stores_merge_into_one_index(tmp_path):
    maps = torch.arange(8.0).view(4, 1, 2)
    for part, ids in (("rank0", ["a", "b"]), ("rank1", ["c", "d"])):
        store = MapStore(tmp_path, "m", part)
        k = 0 if part == "rank0" else 2
        store.write_chunk(ids, maps[k : k + 2], torch.tensor([0, 1]), None)
    main = MapStore(tmp_path, "m")
    main.merge_parts(["rank0", "rank1"])
    loaded = main.load(["d", "a"])
    assert loaded["ids"] == ["d", "a"]
    torch.testing.assert_close(loaded["maps"], maps[[3, 0]])


def test_bf16_occlusion_is_redone_in_fp32_when_its_error_is_not_small_next_to_the_map(tmp_path):
    spec = {"name": "occlusion", "window": 5, "stride": 3, "baseline": "zero"}
    fp32, _, _ = run(tmp_path, spec, FastPath(), name="fp32")
    strict, stats, _ = run(tmp_path, spec, FastPath(precision="bf16", tolerance=1e-12), name="bf16")
    assert stats["fp32_recomputed"] == N
    torch.testing.assert_close(strict["maps"], fp32["maps"])
