"""Expected Gradients: Captum's GradientShap (stdevs 0) over training images equals the
estimator written out by hand with the same draws; exact on a linear model; batches equal
single images; its draws follow the seed; it says what is missing without references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import xaudit
from xaudit.errors import ConfigError
from xaudit.explain import ExplainContext, build_explainer
from xaudit.explain.gradient import sample_seeds

MEAN, STD = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])


class SmoothNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).mean(dim=(2, 3)))


def context(references: torch.Tensor | None, seed: int = 0) -> ExplainContext:
    return ExplainContext(mean=MEAN, std=STD, generator=torch.Generator().manual_seed(seed),
                          references=references)


def pixels(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 8, 8), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


def inputs(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def eg(x, t, ctx, model=None, **params):
    e = build_explainer({"name": "expected_gradients", **params})
    return e.attribute_with_delta(model or SmoothNet(), x, t, ctx)


def test_equals_the_estimator_written_out_with_the_same_draws():
    # E_{x'~D, α~U}[(x − x') ⊙ ∇f(x' + α(x − x'))], each sample's x' and α drawn as Captum
    # draws them (np.random.choice over the references, then np.random.uniform)
    model, refs = SmoothNet(), pixels(10, 2)
    ctx, x, t, n = context(refs), inputs(), torch.tensor([0, 2, 1]), 6
    got, delta = eg(x, t, ctx, model, n_samples=n)
    base = ctx.pixel_to_input(refs.float() / 255)
    for i, seed in enumerate(sample_seeds(x, ctx)):
        rng = np.random.RandomState(seed & 0xFFFFFFFF)
        idx, alpha = rng.choice(len(refs), n), rng.uniform(0.0, 1.0, n)
        total = torch.zeros_like(x[i])
        for k, a in zip(idx, alpha, strict=True):
            point = (base[k] + float(a) * (x[i] - base[k])).requires_grad_(True)
            (grad,) = torch.autograd.grad(model(point[None])[0, t[i]], point)
            total += (x[i] - base[k]) * grad / n
        torch.testing.assert_close(got[i], total, rtol=1e-5, atol=1e-6)
        with torch.no_grad():
            gap = model(x[i : i + 1])[0, t[i]] - model(base[idx])[:, t[i]].mean()
        torch.testing.assert_close(delta[i], got[i].sum() - gap, rtol=1e-4, atol=1e-5)


def test_a_linear_model_gets_weight_times_distance_to_the_one_reference():
    # ∇f = w everywhere: EG = w ⊙ (x − x') whatever α, and completeness holds exactly
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    refs = pixels(1, 3)
    x, t = inputs(2), torch.tensor([1, 2])
    got, delta = eg(x, t, context(refs), lin, n_samples=5)
    base = context(refs).pixel_to_input(refs.float() / 255)
    w = lin[1].weight.detach()[t].view(2, 3, 8, 8)
    torch.testing.assert_close(got, w * (x - base), rtol=1e-5, atol=1e-6)
    assert delta.abs().max() < 1e-4


def test_batches_equal_single_images_and_draws_follow_the_seed():
    refs, x, t = pixels(12, 4), inputs(), torch.tensor([0, 1, 2])
    batched, _ = eg(x, t, context(refs), n_samples=4)
    singles = torch.cat([eg(x[i : i + 1], t[i : i + 1], context(refs), n_samples=4)[0]
                         for i in range(3)])
    torch.testing.assert_close(batched, singles, rtol=1e-5, atol=1e-6)
    assert torch.equal(eg(x, t, context(refs), n_samples=4)[0], batched)
    assert not torch.allclose(eg(x, t, context(refs, seed=1), n_samples=4)[0], batched)
    # a fixed seed parameter ignores the run's seed
    fixed = [eg(x, t, context(refs, seed=s), n_samples=4, seed=7)[0] for s in (0, 1)]
    assert torch.equal(fixed[0], fixed[1]) and not torch.allclose(fixed[0], batched)


def test_without_references_it_says_where_they_come_from():
    with pytest.raises(ConfigError, match="train split; xaudit.explain and xaudit.audit take references="):
        eg(inputs(1), torch.tensor([0]), context(None))
    with pytest.raises(ConfigError, match=r"reference images of shape \(3, 4, 4\)"):
        eg(inputs(1), torch.tensor([0]), context(torch.rand(2, 3, 4, 4)))
    with pytest.raises(ConfigError, match="n_samples must be an integer >= 1"):
        build_explainer({"name": "expected_gradients", "n_samples": 0})


def test_the_library_takes_references_and_stores_the_delta(tmp_path):
    clf = xaudit.Classifier.from_module(SmoothNet(), ["a", "b", "c"], image_size=8)
    images, refs = torch.rand(2, 3, 8, 8), torch.rand(5, 3, 8, 8)
    out = xaudit.explain(clf, images, [{"name": "expected_gradients", "n_samples": 4}],
                         references=refs)
    maps = out.methods["expected_gradients"]
    assert maps.maps.shape == (2, 8, 8) and maps.delta is not None and maps.delta.shape == (2,)
    with pytest.raises(ConfigError, match="references="):
        xaudit.explain(clf, images, ["expected_gradients"])
