"""The audit metrics against Quantus 0.6, computed on the same maps, masks and models.

Quantus is a test oracle only (a dev dependency). Where its defaults differ from ours the
comparison is made at matched settings and the difference is pinned by a test of its own.
Quantus' metric classes are called through ``evaluate_batch`` (the arithmetic, on arrays we
hand over) where ``__call__`` would first normalise the maps or ask for an explainer.
"""

from __future__ import annotations

import numpy as np
import pytest
import quantus
import torch
from quantus.functions.perturb_func import noisy_linear_imputation
from quantus.functions.similarity_func import correlation_spearman
from quantus.helpers.model.pytorch_model import PyTorchModel
from torch import nn

import xaudit.audit.faithfulness as faith
from tests.helpers.audit_toys import FunctionExplainer, LinearNet, plain_ctx
from xaudit.audit.convergence import output_gap, relative_delta
from xaudit.audit.correctness import gini
from xaudit.audit.draws import image_generators
from xaudit.audit.faithfulness import (
    _explain_fn,
    auc,
    noisy_linear_impute,
    relevance_ranks,
    reveal_curve,
    road_curves,
    sensitivity_scores,
)
from xaudit.audit.localization import auroc, pointing_game, relevance_mass, relevance_rank
from xaudit.audit.similarity import spearman

N, SIZE = 6, 32


@pytest.fixture
def maps_and_masks():
    """Seeded random maps (no ties) and rectangular masks; half the maps peak inside."""
    rng = np.random.default_rng(0)
    maps = rng.random((N, SIZE, SIZE))
    masks = np.zeros((N, SIZE, SIZE), bool)
    for i in range(N):
        y, x = rng.integers(0, SIZE - 10, 2)
        h, w = rng.integers(4, 10, 2)
        masks[i, y : y + h, x : x + w] = True
        if i % 2 == 0:
            maps[i, y + 1, x + 1] = 1.5
    return maps, masks


def _q(metric_cls, **kwargs):
    return metric_cls(disable_warnings=True, **kwargs)


# --------------------------------------------------------------------------- localisation


def test_pointing_game_matches_at_matched_settings(maps_and_masks):
    """Quantus has no tolerance and no blur: compare at tolerance 0, smooth 0."""
    maps, masks = maps_and_masks
    theirs = _q(quantus.PointingGame).evaluate_batch(a_batch=maps[:, None], s_batch=masks[:, None])
    ours = [pointing_game(maps[i], masks[i], tolerance=0, smooth=0.0) for i in range(N)]
    assert ours == [float(v) for v in theirs]
    assert 0 < sum(ours) < N  # both hits and misses are compared


def test_relevance_mass_matches_on_non_negative_maps(maps_and_masks):
    maps, masks = maps_and_masks
    theirs = _q(quantus.RelevanceMassAccuracy).evaluate_batch(a_batch=maps[:, None], s_batch=masks[:, None])
    ours = [relevance_mass(maps[i], masks[i]) for i in range(N)]
    assert ours == pytest.approx(theirs, abs=1e-12)


def test_relevance_mass_on_signed_maps_counts_positive_relevance_only(maps_and_masks):
    """Quantus divides by the signed total; we keep the positive relevance (Arras et al.)."""
    maps, masks = maps_and_masks
    signed = maps - 0.5
    theirs_signed = _q(quantus.RelevanceMassAccuracy).evaluate_batch(
        a_batch=signed[:, None].copy(), s_batch=masks[:, None])
    theirs_clipped = _q(quantus.RelevanceMassAccuracy).evaluate_batch(
        a_batch=np.clip(signed, 0, None)[:, None], s_batch=masks[:, None])
    ours = [relevance_mass(signed[i], masks[i]) for i in range(N)]
    assert ours == pytest.approx(theirs_clipped, abs=1e-12)
    assert not np.allclose(ours, theirs_signed)


def test_relevance_rank_matches(maps_and_masks):
    maps, masks = maps_and_masks
    theirs = _q(quantus.RelevanceRankAccuracy).evaluate_batch(a_batch=maps[:, None], s_batch=masks[:, None])
    ours = [relevance_rank(maps[i], masks[i]) for i in range(N)]
    assert ours == pytest.approx(theirs, abs=1e-12)


@pytest.mark.parametrize("levels", [None, 4])
def test_localisation_auc_matches_with_and_without_ties(maps_and_masks, levels):
    maps, masks = maps_and_masks
    if levels is not None:  # quantised maps: many ties, which both count half
        maps = np.floor(maps * levels) / levels
    theirs = _q(quantus.AUC).evaluate_batch(a_batch=maps[:, None], s_batch=masks[:, None])
    ours = [auroc(maps[i], masks[i]) for i in range(N)]
    assert ours == pytest.approx(theirs, abs=1e-12)


# --------------------------------------------------------------------------- complexity, similarity


def test_gini_matches_quantus_sparseness(maps_and_masks):
    """Quantus adds 1e-7 to every value before its Gini; that moves the score by < 1e-6 here."""
    maps, _ = maps_and_masks
    sparse = maps**4  # a spread of concentrations
    x = np.zeros((N, 1, SIZE, SIZE))
    theirs = _q(quantus.Sparseness).evaluate_batch(x_batch=x, a_batch=sparse[:, None].copy())
    ours = [gini(sparse[i]) for i in range(N)]
    assert ours == pytest.approx(theirs, abs=1e-6)


@pytest.mark.parametrize("levels", [None, 3])
def test_spearman_of_abs_maps_matches_quantus_similarity(maps_and_masks, levels):
    """The MPRT similarity: Spearman of |maps| (average ranks for ties in both)."""
    maps, _ = maps_and_masks
    signed = maps - 0.5
    other = np.roll(signed, 1, axis=0) + 0.3 * signed
    if levels is not None:
        signed, other = np.round(signed * levels), np.round(other * levels)
    for a, b in zip(signed, other, strict=True):
        theirs = correlation_spearman(np.abs(a).ravel(), np.abs(b).ravel())
        assert spearman(a, b, absolute=True) == pytest.approx(theirs, abs=1e-12)


# --------------------------------------------------------------------------- model metrics


class SpatialNet(nn.Module):
    """Convolution, tanh and a linear head on every position: its scores move as pixels go
    (a globally pooled toy net barely does), so the curves below compare something.
    """

    def __init__(self, size: int = SIZE, scale: float = 10.0):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * size * size, 2)
        with torch.no_grad():
            self.fc.weight.mul_(scale)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


@pytest.fixture
def tiny():
    torch.manual_seed(2)
    model = SpatialNet().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, SIZE, SIZE, generator=g)
    maps = torch.rand(4, SIZE, SIZE, generator=g)
    with torch.no_grad():
        targets = model(x).argmax(1)
    return model, x, maps, targets


def test_deletion_curve_matches_pixel_flipping(tiny):
    """Same ordering, same baseline (0 = our black in pixel space), softmax scores.

    Quantus flips C·H·W features; the map is broadcast over the channels, so a step of
    3·64 features removes 64 whole pixels. Its AUC is ``np.trapz`` of the curve after each
    step with dx = 1 (no 0-point, not normalised), which we pin against ours.
    """
    model, x, maps, targets = tiny
    steps = 16
    pf = _q(quantus.PixelFlipping, features_in_step=3 * SIZE * SIZE // steps, perturb_baseline=0.0)
    qmodel = PyTorchModel(model, channel_first=True, softmax=True, device="cpu")
    theirs = np.array(pf.evaluate_batch(model=qmodel, x_batch=x.numpy(), y_batch=targets.numpy(),
                                        a_batch=maps[:, None].numpy()))
    fractions = np.linspace(0, 1, steps + 1)
    ranks = relevance_ranks(maps, torch.Generator().manual_seed(0))
    ours = reveal_curve(model, torch.zeros_like(x), x, ranks, targets, fractions, score="prob")
    assert ours[:, 1:] == pytest.approx(theirs, abs=1e-6)
    assert np.all(np.ptp(ours, axis=1) > 0.2)  # the curves fall: a real comparison
    # np.trapz left numpy 2.4; Quantus' AUC helper still calls it.
    trapz = getattr(np, "trapz", np.trapezoid)
    q_auc = np.array([trapz(c, dx=1) for c in theirs])
    assert auc(ours, fractions) * steps == pytest.approx(q_auc + (ours[:, 0] + ours[:, 1]) / 2, abs=1e-5)


def _road_masks(maps: torch.Tensor, fractions) -> torch.Tensor:
    ranks = relevance_ranks(maps, torch.Generator().manual_seed(0))
    hw = maps[0].numel()
    return torch.stack([(ranks[0] < round(p * hw)).view(maps.shape[1:]) for p in fractions])


def test_road_imputation_matches_quantus_noisy_linear_imputation(tiny):
    _, x, maps, _ = tiny
    fractions = (0.2, 0.4, 0.6, 0.8)
    removed = _road_masks(maps, fractions)
    removed[-1, :6, :] = True  # a hole along the border: out-of-image neighbours drop out
    image = x[:1].expand(len(fractions), -1, -1, -1)
    ours = noisy_linear_impute(image, removed, torch.Generator(), noise=0.0)
    for k in range(len(fractions)):
        idx = np.flatnonzero(removed[k].numpy().ravel())
        theirs = noisy_linear_imputation(x[0].double().numpy(), idx, noise=0.0)
        assert np.abs(ours[k].double().numpy() - theirs).max() < 1e-4


class _Grey(nn.Module):
    """A one-channel input repeated into a three-channel net."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x.expand(-1, 3, -1, -1))


def test_road_curve_matches_quantus_road_on_grey_images(tiny, monkeypatch):
    """Quantus' ROAD records whether the class is still predicted; with two classes that is
    our probability > 0.5. Its index arithmetic assumes one channel (RGB maps broadcast over
    C·H·W indices run past the H·W image), so both run on grey images.
    """
    model, x, maps, targets = tiny
    grey = x.mean(dim=1, keepdim=True)
    net = _Grey(model).eval()
    with torch.no_grad():
        targets = net(grey).argmax(1)
    percentages = [25, 50, 75]  # whole pixel counts at 32×32 under both roundings
    road = _q(quantus.ROAD, percentages=percentages, perturb_func_kwargs={"noise": 0.0})
    road.a_size = SIZE * SIZE
    qmodel = PyTorchModel(net, channel_first=True, softmax=True, device="cpu")
    theirs = road.evaluate_batch(model=qmodel, x_batch=grey.numpy(), y_batch=targets.numpy(),
                                 a_batch=maps[:, None].numpy())[0]
    ranks = relevance_ranks(maps, torch.Generator().manual_seed(0))
    # Noise off on our side too: Quantus' curve above ran with noise 0.
    monkeypatch.setattr(faith, "noisy_linear_impute",
                        lambda pixels, removed, generator: noisy_linear_impute(pixels, removed, generator, 0.0))
    ours = road_curves(net, grey, ranks, targets, [p / 100 for p in percentages], plain_ctx(),
                       torch.Generator(), True)
    assert np.all(np.abs(ours - 0.5) > 1e-3)  # no coin-flip cases
    assert (ours > 0.5).astype(int).tolist() == np.asarray(theirs).tolist()
    assert 0 < np.asarray(theirs).sum() < np.asarray(theirs).size  # flips and keeps both occur


def test_max_sensitivity_matches_with_the_same_noise(tiny):
    """Same explainer, same uniform L∞ noise draws, Frobenius norms, no normalisation."""
    model, x, _, targets = tiny
    radius, seed = 0.05, 7
    explainer = FunctionExplainer(lambda xx, t: (xx**2).sum(1, keepdim=True) * (1 + t.view(-1, 1, 1, 1)))
    fn = _explain_fn(explainer, model, plain_ctx())
    ours = sensitivity_scores(fn, x, targets, torch.Generator().manual_seed(seed), 1, radius)
    # Our perturbation draws each image's uniform tensor from its own seed: replay those draws.
    gens = image_generators(torch.Generator().manual_seed(seed), len(x))
    noise = torch.cat([(2 * torch.rand(x[:1].shape, generator=g) - 1) * radius for g in gens])

    def perturb(arr, indices, **kwargs):
        return arr + noise.reshape(len(x), -1).numpy()

    def explain(model, inputs, targets, **kwargs):
        t = torch.as_tensor(targets)
        return explainer.attribute(model, torch.as_tensor(inputs), t, plain_ctx()).numpy()

    ms = _q(quantus.MaxSensitivity, nr_samples=1, perturb_func=perturb, normalise=False, abs=False,
            return_nan_when_prediction_changes=False)
    ms.explain_func, ms.explain_func_kwargs = explain, {}
    a = explain(model, x.numpy(), targets.numpy())
    theirs = ms.evaluate_batch(model=PyTorchModel(model, softmax=False, device="cpu"),
                               x_batch=x.numpy(), y_batch=targets.numpy(), a_batch=a)
    assert ours == pytest.approx(np.asarray(theirs, dtype=float), rel=1e-5)
    assert np.all(ours > 0)


def test_completeness_same_gap_but_quantus_asks_for_exact_equality():
    """Quantus' Completeness is ``Σ a == f(x) − f(b)`` (a boolean, float-exact); we report
    the relative error, so rounding does not fail an exact attribution.
    """
    g = torch.Generator().manual_seed(0)
    size = 8
    weight = torch.randn(2, 3, size, size, generator=g)
    model = LinearNet(size, weight).eval()
    x = torch.rand(3, 3, size, size, generator=g)
    targets = torch.tensor([0, 1, 0])
    exact = weight[targets] * x  # w ⊙ (x − 0)
    gaps = []

    def record(d):
        gaps.append(np.asarray(d))
        return d

    comp = _q(quantus.Completeness, perturb_baseline=0.0, output_func=record)
    qmodel = PyTorchModel(model, softmax=False, device="cpu")
    for attr in (exact, 1.1 * exact):
        verdict = comp.evaluate_batch(model=qmodel, x_batch=x.numpy(), y_batch=targets.numpy(),
                                      a_batch=attr.numpy())
        with torch.no_grad():
            ours_gap = output_gap(model, x, torch.zeros_like(x), targets)
        assert gaps[-1] == pytest.approx(ours_gap.numpy(), abs=1e-5)
        err = relative_delta(attr, ours_gap, None)
        if attr is exact:
            assert np.all(err < 1e-5)
        else:
            assert err == pytest.approx(np.full(3, 0.1), abs=1e-5)
            assert not np.any(verdict)
