"""Convergence of path methods and baseline sensitivity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers.audit_toys import GradientExplainer, TinyNet, audit_input, images_for
from xaudit.audit.convergence import (
    baseline_sensitivity,
    convergence,
    non_monotone,
    relative_delta,
    with_params,
)
from xaudit.explain import build_explainer


class CurvedNet(torch.nn.Module):
    """Smooth and strongly curved along the IG path: logits ±Σ sin(4x) (plus a tiny conv)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1)

    def forward(self, x):
        s = torch.sin(4 * x).flatten(1).sum(1) + 0.1 * self.conv(x).flatten(1).sum(1)
        return torch.stack([s, -s], dim=1)


@pytest.fixture
def smooth_setup():
    torch.manual_seed(0)
    model = CurvedNet().eval()
    images = images_for(model, n=3, size=16)
    ig = build_explainer({"name": "integrated_gradients", "n_steps": 16})
    return model, images, ig


def test_completeness_delta_shrinks_with_n_steps(tmp_path, smooth_setup):
    model, images, ig = smooth_setup
    inp = audit_input(model, [ig], images)
    result = convergence(inp, tmp_path, steps=[2, 4, 8, 32], rules=["gausslegendre", "riemann_middle", "riemann_trapezoid"])
    info = result.summary["methods"]["integrated_gradients"]
    for rule in ("gausslegendre", "riemann_middle"):
        deltas = info["mean_rel_delta"][rule]
        assert deltas[-1] < deltas[0] / 10, (rule, deltas)
        assert info["mean_spearman_vs_finest"]["gausslegendre"][-1] == pytest.approx(1.0)
    assert info["n_steps_needed"]["gausslegendre"] in (2, 4, 8, 32)
    assert info["rules_refused_by_method"] == ["riemann_trapezoid"]  # stated, not silent
    cell = next(c for c in result.cells if c.metric == "completeness_rel_delta")
    assert cell.values.shape == (3,) and cell.model_evals > 0
    assert (tmp_path / result.figures[0]).is_file()
    rows = [r for r in result.rows if r["rule"] == "gausslegendre" and r["n_steps"] == 32]
    assert len(rows) == 3


def test_relative_delta_known_answer():
    attr = torch.ones(2, 1, 2, 2)  # sums to 4
    gap = torch.tensor([4.0, 5.0])
    assert relative_delta(attr, gap, None) == pytest.approx([0.0, 0.2])
    # From Captum's delta (Σattr − gap) alone:
    assert relative_delta(attr, None, torch.tensor([0.0, -1.0])) == pytest.approx([0.0, 0.2])


def test_non_monotone_flag():
    assert not non_monotone([0.5, 0.2, 0.1, 0.05])
    assert non_monotone([0.5, 0.1, 0.3, 0.05])


def test_with_params_copies_and_refuses_unknown():
    ig = build_explainer({"name": "integrated_gradients", "n_steps": 16, "baseline": "blur"})
    copy = with_params(ig, n_steps=64)
    assert copy.n_steps == 64 and copy.baseline == "blur" and ig.n_steps == 16
    assert with_params(GradientExplainer(), n_steps=4) is None


def test_skipped_without_path_methods(tmp_path):
    model = TinyNet()
    inp = audit_input(model, [GradientExplainer()], images_for(model, n=2))
    result = convergence(inp, tmp_path)
    assert result.summary["skipped"] and "path" in result.summary["reason"]


def test_baseline_sensitivity_matrix(tmp_path, smooth_setup):
    model, images, ig = smooth_setup
    inp = audit_input(model, [ig, GradientExplainer()], images)
    result = baseline_sensitivity(inp, tmp_path, baselines=["black", "blur", "mean"])
    matrix = np.array(result.summary["methods"]["integrated_gradients"]["matrix"])
    assert matrix.shape == (3, 3) and np.allclose(np.diag(matrix), 1.0)
    assert np.allclose(matrix, matrix.T)
    assert [c.method for c in result.cells] == ["integrated_gradients"]  # only methods with a baseline
    assert result.cells[0].passed is None


def test_baseline_sensitivity_reads_the_methods_own_baseline_from_the_shared_pool(tmp_path, smooth_setup):
    """The configured baseline's map is the pool's (computed once for every audit); only the
    other baselines cost evaluations here, and the matrix is the same as recomputing it."""
    from xaudit.audit.maps import compute_maps, trained_maps

    model, images, ig = smooth_setup
    assert ig.params()["baseline"] == "black"
    inp = audit_input(model, [ig], images)
    pool = trained_maps(inp, ig, "test", images)
    shared = baseline_sensitivity(inp, tmp_path, baselines=["black", "blur", "mean"])
    fresh = baseline_sensitivity(audit_input(model, [with_params(ig, baseline="noise")], images),
                                 tmp_path, baselines=["black", "blur", "mean"])
    # two of three baselines computed (pass sizes shift IG's baseline forwards by one or two)
    assert shared.model_evals == pytest.approx(fresh.model_evals * 2 / 3, rel=0.03)
    assert shared.model_evals < fresh.model_evals * 0.7
    # and the pool's map is the one this audit would have computed
    own = compute_maps(ig, model, images.x, images.targets, inp.ctx, 2)
    torch.testing.assert_close(pool.attributions, own.attributions, rtol=1e-5, atol=1e-6)
