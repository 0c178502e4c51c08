"""Localization metrics: known answers on mask-shaped maps, and the audit with its baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.helpers.audit_toys import (
    FunctionExplainer,
    GradientExplainer,
    TinyNet,
    audit_input,
    images_for,
)
from xaudit.audit.faithfulness import centre_map
from xaudit.audit.localization import (
    CENTRE,
    auroc,
    localization,
    pointing_game,
    relevance_mass,
    relevance_rank,
)
from xaudit.errors import ConfigError


@pytest.fixture
def mask() -> np.ndarray:
    m = np.zeros((16, 16), bool)
    m[4:9, 6:12] = True
    return m


def test_mask_shaped_map_is_perfect(mask):
    saliency = mask.astype(float)
    assert relevance_mass(saliency, mask) == 1.0
    assert relevance_rank(saliency, mask) == 1.0
    assert auroc(saliency, mask) == 1.0
    assert pointing_game(saliency, mask) == 1.0


def test_inverted_map_is_worst(mask):
    saliency = (~mask).astype(float)
    assert auroc(saliency, mask) == 0.0
    assert relevance_mass(saliency, mask) == 0.0
    assert relevance_rank(saliency, mask) == 0.0


def test_pointing_game_miss_and_tolerance(mask):
    saliency = mask.astype(float) * 0.5
    saliency[12, 2] = 1.0  # the maximum is outside the mask
    assert pointing_game(saliency, mask) == 0.0
    near = np.zeros((16, 16))
    near[9, 8] = 1.0  # one pixel below the mask
    assert pointing_game(near, mask) == 0.0
    assert pointing_game(near, mask, tolerance=1) == 0.0  # distance 1 is not < 1
    assert pointing_game(near, mask, tolerance=2) == 1.0


@pytest.mark.parametrize(
    ("offset", "tolerance", "hit"),
    [
        ((10, 10), 15, 1.0),  # Euclidean 14.1 < 15 (city-block 20: a diamond would miss it)
        ((11, 11), 15, 0.0),  # Euclidean 15.6
        ((0, 15), 15, 0.0),  # exactly 15: TorchRay's bound is strict
        ((0, 15), 16, 1.0),
        ((0, 14), 15, 1.0),
    ],
)
def test_pointing_tolerance_is_euclidean_and_strict(offset, tolerance, hit):
    mask = np.zeros((80, 80), bool)
    mask[50, 50] = True
    saliency = np.zeros((80, 80))
    saliency[50 + offset[0], 50 + offset[1]] = 1.0
    assert pointing_game(saliency, mask, tolerance=tolerance) == hit


def test_pointing_tolerance_must_be_a_distance(mask):
    with pytest.raises(ConfigError, match="tolerance"):
        pointing_game(mask.astype(float), mask, tolerance=-1)


def test_relevance_mass_uses_positive_relevance_only(mask):
    saliency = np.where(mask, 1.0, -5.0)
    saliency[0, 0] = 1.0  # one positive pixel outside
    n_in = mask.sum()
    assert relevance_mass(saliency, mask) == pytest.approx(n_in / (n_in + 1))


def test_auroc_half_for_constant_map_and_nan_for_empty_mask(mask):
    assert auroc(np.ones((16, 16)), mask) == pytest.approx(0.5)
    empty = np.zeros((16, 16), bool)
    assert math.isnan(auroc(np.random.rand(16, 16), empty))
    assert math.isnan(relevance_mass(np.random.rand(16, 16), empty))


def test_centre_baseline_peaks_in_the_centre():
    m = centre_map(2, 15, 15)
    assert m.shape == (2, 15, 15)
    assert m[0].argmax().item() == 7 * 15 + 7
    assert m[0, 0, 0] < 0.05


def test_smoothing_points_at_dense_evidence_not_a_lone_spike():
    mask = np.zeros((50, 50), bool)
    mask[10:20, 10:20] = True
    saliency = np.zeros((50, 50))
    saliency[10:20, 10:20] = 0.6  # dense evidence in the mask
    saliency[40, 40] = 1.0  # one noisy pixel elsewhere
    assert pointing_game(saliency, mask) == 0.0
    assert pointing_game(saliency, mask, smooth=0.02) == 1.0  # σ = 1 px


def test_audit_scores_correctly_classified_images_only(tmp_path):
    model = TinyNet()
    images = images_for(model, n=6, size=16)
    images.labels = images.preds.clone()
    images.labels[:2] = 1 - images.preds[:2]  # two mistakes
    images.targets = images.preds.clone()
    inp = audit_input(model, [GradientExplainer()], images)
    result = localization(inp, tmp_path)
    assert result.summary["n_images"] == 4
    assert {r["id"] for r in result.rows} == {f"img{i}" for i in range(2, 6)}
    images.labels = 1 - images.preds
    assert localization(audit_input(model, [GradientExplainer()], images), tmp_path).summary["skipped"]


def test_audit_scores_mask_explainer_above_centre_baseline(tmp_path):
    model = TinyNet()
    images = images_for(model, n=4, size=16)
    images.labels = images.preds.clone()
    oracle = FunctionExplainer(lambda x, t: images.masks.float()[: len(x)], label="oracle")
    inp = audit_input(model, [oracle, GradientExplainer()], images)
    result = localization(inp, tmp_path)
    by = {(c.method, c.metric): c for c in result.cells}
    assert by[("oracle", "relevance_mass")].values == pytest.approx(np.ones(4))
    assert by[("oracle", "relevance_mass")].passed is True
    centre = by[(CENTRE, "relevance_mass")].values
    assert np.all((centre > 0.2) & (centre < 1.0))  # computed, not a placeholder
    assert by[(CENTRE, "relevance_mass")].passed is None
    assert result.summary["centre_baseline"]["relevance_mass"] == pytest.approx(centre.mean())
    assert result.figures == ["audit_localization.png"]


def test_audit_refuses_a_negative_tolerance(tmp_path):
    model = TinyNet()
    images = images_for(model, n=2, size=16)
    with pytest.raises(ConfigError, match="localization tolerance"):
        localization(audit_input(model, [GradientExplainer()], images), tmp_path, tolerance=-3)


def test_audit_is_skipped_without_masks(tmp_path):
    model = TinyNet()
    inp = audit_input(model, [GradientExplainer()], images_for(model, masks=False))
    result = localization(inp, tmp_path)
    assert result.summary["skipped"] and "mask" in result.summary["reason"]
