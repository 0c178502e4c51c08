"""Similarity metrics: known answers and the NaN rule for constant maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xaudit.audit.similarity import (
    all_similarities,
    derangement,
    hog_pearson,
    normalise,
    pearson,
    spearman,
    ssim,
)


@pytest.fixture
def smooth_map() -> np.ndarray:
    yy, xx = np.mgrid[0:32, 0:32]
    return np.exp(-((yy - 12) ** 2 + (xx - 20) ** 2) / 40.0) - 0.3 * np.sin(xx / 3.0)


def test_identical_maps_score_one(smooth_map):
    sims = all_similarities(smooth_map, smooth_map.copy())
    for name, value in sims.items():
        assert value == pytest.approx(1.0, abs=1e-9), name
    assert pearson(smooth_map, smooth_map) == pytest.approx(1.0)


def test_tensor_and_array_inputs_agree(smooth_map):
    t = torch.tensor(smooth_map, dtype=torch.float32)
    assert spearman(t, smooth_map) == pytest.approx(1.0, abs=1e-6)


def test_spearman_is_rank_based_and_signed_differs_from_abs():
    a = np.arange(16, dtype=float).reshape(4, 4)
    assert spearman(a, a**3, absolute=False) == pytest.approx(1.0)  # monotone transform
    assert spearman(a, -a, absolute=False) == pytest.approx(-1.0)
    centred = a - 7.5
    # Signed: perfectly anti-correlated; absolute: identical magnitudes.
    assert spearman(centred, -centred, absolute=False) == pytest.approx(-1.0)
    assert spearman(centred, -centred, absolute=True) == pytest.approx(1.0)


def test_constant_maps_give_nan(smooth_map):
    flat = np.zeros_like(smooth_map)
    for fn in (pearson, ssim, hog_pearson):
        assert math.isnan(fn(smooth_map, flat))
    assert math.isnan(spearman(flat, smooth_map, absolute=True))


def test_ssim_of_unrelated_noise_is_low(smooth_map):
    rng = np.random.default_rng(0)
    assert ssim(smooth_map, rng.random(smooth_map.shape)) < 0.3


def test_ssim_is_scale_invariant_after_normalisation(smooth_map):
    assert ssim(smooth_map, 7.0 * smooth_map) == pytest.approx(1.0)
    assert normalise(smooth_map).max() == pytest.approx(1.0)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        pearson(np.ones((3, 3)) + np.eye(3), np.eye(4))


@pytest.mark.parametrize("n", [2, 3, 7])
def test_derangement_has_no_fixed_point(n):
    partner = derangement(n, torch.Generator().manual_seed(n))
    assert sorted(partner) == list(range(n))
    assert all(partner[i] != i for i in range(n))
