"""Property-based checks of the metric and scaling functions (hypothesis)."""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from xaudit.audit.similarity import hog_pearson, pearson, spearman, ssim
from xaudit.report.figures import scale_map

maps = arrays(np.float64, (12, 12), elements=st.floats(-1e3, 1e3, allow_nan=False, width=32))


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


@settings(max_examples=60, deadline=None)
@given(maps, maps)
def test_similarities_symmetric_and_in_range(a, b):
    for fn in (lambda x, y: spearman(x, y, absolute=True), lambda x, y: spearman(x, y, absolute=False),
               pearson, ssim):
        ab, ba = fn(a, b), fn(b, a)
        assert same(ab, ba)
        assert math.isnan(ab) or -1 - 1e-9 <= ab <= 1 + 1e-9


@settings(max_examples=40, deadline=None)
@given(maps)
def test_identical_maps_score_one_unless_constant(a):
    if np.ptp(a) == 0:
        assert math.isnan(spearman(a, a, absolute=False))
        return
    assert spearman(a, a, absolute=False) == 1.0
    assert math.isclose(ssim(a, a), 1.0, rel_tol=1e-6)


@settings(max_examples=30, deadline=None)
@given(maps, maps)
def test_hog_pearson_in_range(a, b):
    value = hog_pearson(a, b)
    assert math.isnan(value) or -1 - 1e-9 <= value <= 1 + 1e-9


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, (8, 8), elements=st.floats(allow_nan=True, allow_infinity=True, width=32)))
def test_scaled_maps_are_finite_and_bounded(a):
    for mode in ("signed", "absolute"):
        scaled, note = scale_map(a, mode)
        assert np.isfinite(scaled).all()
        assert np.abs(scaled).max() <= 1 + 1e-6
        if not np.isfinite(a).all():
            assert note == "contains NaN/inf"
