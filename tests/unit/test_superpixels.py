"""RISE, LIME, KernelSHAP and feature ablation: Captum as the oracle, known answers on linear models."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from captum.attr import KernelShap, Lime
from scipy.stats import spearmanr
from torch import nn

from tests.helpers.explain_toys import TinyCNN, context, images, seeded
from xaudit.explain import ExplainContext, build_explainer
from xaudit.explain.gradient import baseline_for, sample_seeds, seeded_global_rng
from xaudit.explain.masking import binary_to_masks, masked_scores

SIZE = 32
BLOCK = 8  # the linear model's weights are constant on 8×8 blocks


def plain_context(seed: int = 0) -> ExplainContext:
    """Identity normalisation: input = pixels, baseline "zero" = black."""
    return ExplainContext(mean=torch.zeros(3), std=torch.ones(3),
                          generator=torch.Generator().manual_seed(seed))


class BlockLinear(nn.Module):
    """logit = Σ w ⊙ x with w constant on 8×8 blocks, 16 distinct levels."""

    def __init__(self):
        super().__init__()
        levels = torch.linspace(-1, 1, 16)[torch.randperm(16, generator=torch.Generator().manual_seed(4))]
        block = levels.view(1, 4, 4).repeat_interleave(BLOCK, 1).repeat_interleave(BLOCK, 2)
        self.register_buffer("w", block.expand(3, -1, -1).clone())

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1, keepdim=True).repeat(1, 2) * torch.tensor([1.0, -1.0])


def block_image() -> torch.Tensor:
    """16 flat blocks of random colours (plus faint noise): SLIC finds the blocks' edges."""
    g = torch.Generator().manual_seed(5)
    colours = 0.2 + 0.6 * torch.rand(1, 3, 4, 4, generator=g)
    blocks = colours.repeat_interleave(BLOCK, 2).repeat_interleave(BLOCK, 3)
    return blocks + 0.01 * torch.rand(1, 3, SIZE, SIZE, generator=g)


def superpixel_truth(model, explainer, x, ctx):
    """Each superpixel's exact contribution Σ w ⊙ x over it, and the labels."""
    segments = explainer.segments(x, ctx)[0]
    contrib = (model.w * x[0]).sum(0)
    m = int(segments.max()) + 1
    truth = torch.zeros(m).scatter_add_(0, segments.flatten(), contrib.flatten())
    return truth, segments


def per_superpixel(attr: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """The value each superpixel carries in a channel-broadcast map."""
    m = int(segments.max()) + 1
    first = torch.stack([(segments.flatten() == j).nonzero()[0, 0] for j in range(m)])
    return attr[0, 0].flatten()[first]


# ---------------------------------------------------------------- Captum as the oracle


@pytest.mark.parametrize("name, captum_cls", [("lime", Lime), ("kernel_shap", KernelShap)])
def test_maps_equal_captums_on_the_same_samples(name, captum_cls):
    """Same seed, same superpixels, same baseline: Captum draws the same samples, fits the
    same surrogate and returns the same map (per image, with its defaults)."""
    model = seeded(TinyCNN())
    x, t = images(2, 16, seed=3), torch.tensor([0, 2])
    ctx = context(model)
    explainer = build_explainer({"name": name, "n_samples": 60, "n_segments": 10})
    ours = explainer.attribute(model, x, t, ctx)
    segments = explainer.segments(x, ctx)
    base = baseline_for("zero", x, ctx)
    for i, seed in enumerate(sample_seeds(x, ctx)):
        with seeded_global_rng(seed, x.device), torch.no_grad():
            ref = captum_cls(model).attribute(
                x[i : i + 1], baselines=base[i : i + 1], target=int(t[i]),
                feature_mask=segments[i][None, None], n_samples=60, perturbations_per_eval=16,
            )
        scale = float(ref.abs().max())
        assert scale > 0
        torch.testing.assert_close(ours[i : i + 1], ref.float(), atol=1e-4 * scale, rtol=1e-4)


# ---------------------------------------------------------------- known answers on linear models


def test_kernel_shap_on_linear_model_is_exact():
    # f is linear in the on/off vector: f(z) = f(b) + Σ z_j c_j, so least squares recovers c
    model, x, ctx = BlockLinear(), block_image(), plain_context()
    explainer = build_explainer({"name": "kernel_shap", "n_samples": 120, "n_segments": 16})
    truth, segments = superpixel_truth(model, explainer, x, ctx)
    attr = explainer.attribute(model, x, torch.tensor([0]), ctx)
    torch.testing.assert_close(per_superpixel(attr, segments), truth, rtol=1e-3, atol=1e-3)
    assert len(truth) >= 12


def test_lime_on_linear_model_recovers_the_ranking():
    model, x, ctx = BlockLinear(), block_image(), plain_context()
    explainer = build_explainer({"name": "lime", "n_samples": 200, "n_segments": 16})
    truth, segments = superpixel_truth(model, explainer, x, ctx)
    attr = explainer.attribute(model, x, torch.tensor([0]), ctx)
    rho = spearmanr(per_superpixel(attr, segments).numpy(), truth.numpy()).statistic
    assert rho > 0.95, rho


def test_feature_ablation_on_linear_model_is_exact_and_additive():
    model, x, ctx = BlockLinear(), block_image(), plain_context()
    explainer = build_explainer({"name": "feature_ablation", "n_segments": 16})
    truth, segments = superpixel_truth(model, explainer, x, ctx)
    attr = explainer.attribute(model, x, torch.tensor([1]), ctx)  # class 1 = −logit 0
    values = per_superpixel(attr, segments)
    torch.testing.assert_close(values, -truth, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        gap = model(x)[0, 1] - model(torch.zeros_like(x))[0, 1]
    torch.testing.assert_close(values.sum(), gap, rtol=1e-4, atol=1e-4)


def test_kernel_shap_is_additive_on_a_nonlinear_model():
    # the all-on and all-off samples carry weight 1e6: Σ coefficients = f(x) − f(baseline)
    model = seeded(TinyCNN())
    x, t = images(2, 16, seed=6), torch.tensor([1, 0])
    ctx = context(model)
    explainer = build_explainer({"name": "kernel_shap", "n_samples": 80, "n_segments": 10})
    attr = explainer.attribute(model, x, t, ctx)
    segments = explainer.segments(x, ctx)
    sums = torch.stack([per_superpixel(attr[i : i + 1], segments[i]).sum() for i in range(2)])
    with torch.no_grad():
        gap = (model(x) - model(baseline_for("zero", x, ctx)))[[0, 1], t]
    torch.testing.assert_close(sums, gap, rtol=1e-3, atol=1e-4)


def test_rise_on_linear_model_recovers_the_block_ranking():
    model, x, ctx = BlockLinear(), block_image(), plain_context()
    attr = build_explainer({"name": "rise", "n_masks": 2000, "grid": 8}).attribute(
        model, x, torch.tensor([0]), ctx
    )
    blocks = nn.functional.avg_pool2d(attr, BLOCK).flatten()
    truth = nn.functional.avg_pool2d((model.w * x[0]).sum(0)[None, None], BLOCK).flatten()
    rho = spearmanr(blocks.numpy(), truth.numpy()).statistic
    assert rho > 0.9, rho


# ---------------------------------------------------------------- RISE against its formula


def test_rise_equals_its_formula_in_a_plain_loop():
    model = seeded(TinyCNN())
    x, t = images(2, 16, seed=7), torch.tensor([2, 0])
    ctx = context(model)
    explainer = build_explainer({"name": "rise", "n_masks": 20, "grid": 3, "p": 0.3})
    ours = explainer.attribute(model, x, t, ctx)
    masks = explainer.masks((16, 16), ctx, x.device)(0, 20)[0]  # 20 × 16 × 16
    assert 0 <= float(masks.min()) and float(masks.max()) <= 1
    base = baseline_for("zero", x, ctx)
    expected = torch.zeros(2, 1, 16, 16)
    with torch.no_grad():
        for i in range(2):
            for m in masks:
                score = model(base[i : i + 1] + (x[i : i + 1] - base[i : i + 1]) * m)[0, t[i]]
                expected[i, 0] += score * m
    expected /= 20 * 0.3
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["rise", "lime", "kernel_shap", "feature_ablation"])
def test_pass_size_changes_nothing(name):
    model = seeded(TinyCNN())
    x, t = images(3, 16, seed=8), torch.tensor([0, 1, 2])
    spec = {"name": name, **({"n_masks": 40} if name == "rise" else {"n_segments": 10}),
            **({"n_samples": 30} if name in ("lime", "kernel_shap") else {})}
    full = build_explainer(spec).attribute(model, x, t, context(model))
    small = build_explainer(spec)
    small_ctx = dataclasses.replace(context(model), pass_size=5)
    passes = []
    hook = model.register_forward_hook(lambda m, i, o: passes.append(len(i[0])))
    try:
        out = small.attribute(model, x, t, small_ctx)
    finally:
        hook.remove()
    torch.testing.assert_close(out, full, atol=1e-5, rtol=1e-4)
    assert max(passes) <= 5


def test_masked_scores_pack_images_and_masks():
    model = seeded(TinyCNN())
    x, t = images(2, 8, seed=9), torch.tensor([0, 1])
    base = torch.zeros_like(x)
    z = torch.randint(0, 2, (2, 7, 4), generator=torch.Generator().manual_seed(0))
    segments = torch.arange(64).view(1, 8, 8).div(16, rounding_mode="floor").expand(2, 8, 8)
    masks = binary_to_masks(z, segments)  # 2 × 7 × 8 × 8
    got = masked_scores(model, x, base, t, lambda a, b: masks[:, a:b], 7, per_pass=4)
    with torch.no_grad():
        expected = torch.stack([model(x[i] * masks[i].unsqueeze(1))[:, t[i]] for i in range(2)])
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
