"""Adaptive deletion / insertion curves against curves known at every pixel count."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.helpers.audit_toys import audit_input
from xaudit.audit.curves import (
    AUTO_SHARE,
    adaptive_reveal,
    auc,
    coarse_steps,
    interval_tolerance,
    relevance_ranks,
    reveal_curve,
)
from xaudit.errors import ConfigError

SIDE = 32  # 1,024 pixels: the exact curve has 1,025 points


class RemovedShare(nn.Module):
    """Two-class logits whose class-1 score is ``curve(share of pixels equal to 0)``: the
    deletion curve from an all-ones image to black is ``curve`` itself, at every pixel count."""

    def __init__(self, curve):
        super().__init__()
        self.curve = curve

    def forward(self, x):
        share = (x[:, 0] == 0).flatten(1).float().mean(1)
        p = self.curve(share).clamp(1e-9, 1 - 1e-9)
        return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))], 1)


def sharp(share):  # falls from 0.95 to 0.05 within the first ~4% of the pixels
    return 0.05 + 0.9 * torch.exp(-share / 0.015)


def deletion(model, n=3, steps=64, tolerance=0.002, seed=0):
    x = torch.ones(n, 3, SIDE, SIDE)
    ranks = relevance_ranks(torch.rand(n, SIDE, SIDE, generator=torch.Generator().manual_seed(seed)),
                            torch.Generator().manual_seed(seed))
    targets = torch.ones(n, dtype=torch.long)
    return adaptive_reveal(model, torch.zeros_like(x), x, ranks, targets, steps, tolerance), (x, ranks, targets)


def exact_area(curve):
    xs = np.arange(SIDE * SIDE + 1) / (SIDE * SIDE)
    return float(auc(curve(torch.as_tensor(xs)).numpy()[None], xs)[0])


@pytest.mark.parametrize("steps, coarse", [(64, 8), (256, 8), (50, 25), (24, 12), (6, 6), (7, 7)])
def test_coarse_grid_nests_in_every_finer_one(steps, coarse):
    assert coarse_steps(steps) == coarse


def test_tolerance_zero_is_the_uniform_grid():
    model = RemovedShare(sharp)
    curves, (x, ranks, targets) = deletion(model, tolerance=0)
    fractions = np.linspace(0, 1, 65)
    uniform = reveal_curve(model, torch.zeros_like(x), x, ranks, targets, fractions)
    assert curves.evals == 3 * 65
    np.testing.assert_allclose(curves.on(fractions), uniform, atol=1e-6)
    np.testing.assert_allclose(curves.auc, auc(uniform, fractions), atol=1e-6)


def test_sharp_curve_area_within_its_estimate_and_tolerance_for_fewer_points():
    model = RemovedShare(sharp)
    exact = exact_area(sharp)
    curves, _ = deletion(model, steps=256, tolerance=0.002)
    errors = np.abs(curves.auc - exact)
    assert np.all(errors <= curves.error + 1e-6)  # the estimate bounds the true error here
    assert np.all(curves.error <= 0.002)
    assert curves.evals / 3 < 0.3 * 257  # far fewer points than the uniform grid of 256
    uniform_50 = np.linspace(0, 1, 51)
    coarse_error = abs(auc(sharp(torch.as_tensor(uniform_50)).numpy()[None], uniform_50)[0] - exact)
    assert errors.max() < coarse_error / 3  # beats 50 equal steps with fewer evaluations
    # The points went where the curve bends: most in the first eighth.
    assert np.mean(curves.fractions[0] < 1 / 8) > 0.5


def test_a_straight_curve_stays_on_the_first_two_levels():
    line = lambda share: 0.9 - 0.8 * share  # noqa: E731  (the trapezoid is exact on a line)
    curves, _ = deletion(RemovedShare(line), steps=256, tolerance=1e-4)
    assert curves.evals == 3 * 17
    np.testing.assert_allclose(curves.auc, exact_area(line), atol=2e-3)  # pixel rounding of shares


def test_callable_tolerance_sees_the_first_areas_and_sets_the_refinement():
    seen = []

    def strict(areas):
        seen.append(areas.copy())
        return 0.0

    model = RemovedShare(sharp)
    loose, _ = deletion(model, steps=64, tolerance=lambda a: 1.0)
    tight, _ = deletion(model, steps=64, tolerance=strict)
    assert len(seen) == 1 and seen[0].shape == (3,)
    assert loose.evals == 3 * 17 and tight.evals == 3 * 65
    assert (loose.tolerance, tight.tolerance) == (1.0, 0.0)  # the value, not the callable


def test_given_ends_are_used_and_not_scored_again():
    model = RemovedShare(sharp)
    plain, (x, ranks, targets) = deletion(model, steps=16, tolerance=0.0)
    first = [v[0] for v in plain.values]
    last = [v[-1] for v in plain.values]
    shared = adaptive_reveal(model, torch.zeros_like(x), x, ranks, targets, 16, 0.0,
                             ends=(np.array(first), np.array(last)))
    assert shared.evals == plain.evals - 2 * len(x)
    np.testing.assert_array_equal(shared.auc, plain.auc)
    # the given scores are the ones used: a wrong end moves the area by its trapezoid share
    moved = adaptive_reveal(model, torch.zeros_like(x), x, ranks, targets, 16, 0.0,
                            ends=(np.array(first) + 1.0, np.array(last)))
    np.testing.assert_allclose(moved.auc - plain.auc, 0.5 / 16)


def test_interval_tolerance_is_a_share_of_the_half_width():
    areas = np.array([0.2, 0.4, 0.6])
    half = 2.0 * 0.2 / np.sqrt(3) * 4.302652729911275 / 2  # t(0.975, 2) · s/√n
    assert interval_tolerance(areas) == pytest.approx(AUTO_SHARE * half, rel=1e-6)
    assert interval_tolerance(np.array([0.3])) == interval_tolerance(np.array([0.3, 0.3])) > 0


def test_audit_reports_the_discretisation_against_the_interval(tmp_path):
    from tests.helpers.audit_toys import GradientExplainer, LinearNet, images_for
    from xaudit.audit.faithfulness import faithfulness

    g = torch.Generator().manual_seed(0)
    weight = torch.stack([torch.rand(3, 12, 12, generator=g), -torch.rand(3, 12, 12, generator=g)])
    model = LinearNet(12, weight).eval()
    inp = audit_input(model, [GradientExplainer()], images_for(model, n=4, size=12))
    result = faithfulness(inp, tmp_path, steps=64, road_percentages=[0.5], infidelity_samples=0,
                          sensitivity_samples=0)
    disc = result.summary["discretisation"]
    assert disc["tolerance"] == "auto" and disc["steps"] == 64 and disc["model_evals"] > 0
    # The linear model is saturated: its blurred images keep probability 1, so no image
    # informs insertion and its error is a mean over no image.
    assert result.summary["uninformative_images"]["insertion"]["n"] == 4
    for entry in disc["maps"].values():
        errors = [(entry["deletion"]["error"], entry["deletion"]["half_width"])]
        assert errors[0][0] >= 0 and entry["insertion"]["error"] is None
        assert all(entry[c]["tolerance"] > 0 for c in ("deletion", "insertion"))  # auto, resolved
        assert entry["above_interval"] == any(h and e >= h for e, h in errors)  # no interval: no flag
    assert {"deletion_auc_error", "insertion_auc_error"} <= set(result.rows[0])
    # Too coarse a finest grid leaves an error the size of the interval: said, not hidden.
    coarse = faithfulness(inp, tmp_path, steps=16, road_percentages=[0.5], infidelity_samples=0,
                          sensitivity_samples=0)
    flagged = [k for k, v in coarse.summary["discretisation"]["maps"].items() if v["above_interval"]]
    assert flagged and "raise faithfulness.steps" in coarse.text
    # 16 steps = 8 intervals and their midpoints, nothing finer: 17 points per curve, of
    # which both ends (image, deletion baseline, blurred image) are scored once for all maps
    maps = coarse.summary["discretisation"]["maps"]
    assert coarse.summary["discretisation"]["model_evals"] == 4 * 3 + len(maps) * 4 * 2 * 15
    fixed = faithfulness(inp, tmp_path, steps=16, tolerance=0.003, road_percentages=[0.5],
                         infidelity_samples=0, sensitivity_samples=0)
    assert {v[c]["tolerance"] for v in fixed.summary["discretisation"]["maps"].values()
            for c in ("deletion", "insertion")} == {0.003}
    with pytest.raises(ConfigError, match="tolerance"):
        faithfulness(inp, tmp_path, tolerance="fine")
