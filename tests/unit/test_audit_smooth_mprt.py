"""Smooth model randomization (sMPRT): Quantus 0.6's SmoothMPRT as the oracle on the same
noise draws, known answers for maps that ignore the model, costs and parameter checks."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from tests.helpers.audit_toys import (
    FunctionExplainer,
    GradientExplainer,
    TwiceGradient,
    audit_input,
    gradient,
)
from xaudit.audit.controls import ControlMap
from xaudit.audit.registry import INFO
from xaudit.audit.scorecard import NOT_TESTED
from xaudit.audit.smooth_randomization import (
    draw_noise,
    smooth_model_randomization,
    smooth_similarity,
    smoothed_maps,
)
from xaudit.errors import ConfigError

quantus = pytest.importorskip("quantus")


def quantus_random_model(model, seed=42):
    """The fully randomized model Quantus's bottom-up generator ends on."""
    clone = copy.deepcopy(model)
    for _, module in clone.named_modules():
        if hasattr(module, "reset_parameters"):
            torch.manual_seed(seed + 1)
            module.reset_parameters()
    return clone.eval()


def quantus_noise(x, n_samples, magnitude, sets):
    """Quantus's draws, in its order: ``sets`` times n_samples − 1 arrays of x's shape."""
    span = (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))).numpy().reshape(-1, 1, 1, 1)
    return [torch.from_numpy(np.stack([np.random.randn(*x.shape) * magnitude * span
                                       for _ in range(n_samples - 1)])).float()
            for _ in range(sets)]


def test_smooth_mprt_matches_quantus(cnn):
    model, x, y = cnn
    metric = quantus.SmoothMPRT(nr_samples=4, noise_magnitude=0.1, layer_order="bottom_up",
                                seed=42, skip_layers=True, return_last_correlation=True,
                                abs=True, normalise=False, disable_warnings=True)
    np.random.seed(7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = np.asarray(metric(model=copy.deepcopy(model), x_batch=x.numpy(), y_batch=y.numpy(),
                                   a_batch=None, explain_func=quantus.explain,
                                   # Quantus's "Gradient" is the signed gradient ("Saliency": its abs)
                                   explain_func_kwargs={"method": "Gradient"}, device="cpu",
                                   batch_size=len(x)))
    np.random.seed(7)
    # Quantus smooths the trained maps twice (the second pass is its own sanity check) and then
    # the random model's: the first and the third draws are the ones it compares.
    first, _, third = quantus_noise(x, 4, 0.1, 3)
    ref = smoothed_maps(gradient(model), x, y, first)
    rnd = smoothed_maps(gradient(quantus_random_model(model)), x, y, third)
    ours = smooth_similarity(ref, rnd)
    assert np.all(np.abs(ours) < 0.99)  # the maps did change: the comparison is not trivial
    assert ours == pytest.approx(theirs, abs=1e-5)


def test_smoothing_averages_the_noisy_maps_and_the_plain_one():
    x = torch.rand(2, 3, 4, 4)
    noise = draw_noise(x, 3, 0.1, torch.Generator().manual_seed(0))
    assert noise.shape == (2, 2, 3, 4, 4)
    span = (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3)))
    assert noise[:, 1].std() / noise[:, 0].std() == pytest.approx(float(span[1] / span[0]), rel=0.5)
    # The identity "explanation": the average of the three inputs, summed over channels.
    got = smoothed_maps(lambda xx, tt: xx, x, torch.zeros(2, dtype=torch.long), noise)
    want = ((x + noise[0]) + (x + noise[1]) + x).sum(1) / 3
    assert torch.allclose(got, want, atol=1e-6)


def test_maps_that_ignore_the_model_fail_and_the_edge_control_with_them(tmp_path, tiny):
    model, images, _ = tiny
    blind = FunctionExplainer(lambda xx, t: xx.mean(1), label="blind")
    methods = [GradientExplainer(), blind, ControlMap("edge"), ControlMap("random")]
    result = smooth_model_randomization(audit_input(model, methods, images), tmp_path, n_samples=3)
    cell = {c.method: c for c in result.cells}
    # The same noisy inputs reach both models: a map of the image alone is unchanged, so its
    # excess is 1 minus its random-pair level, on every image.
    levels = {r["method"]: [] for r in result.rows}
    for r in result.rows:
        levels[r["method"]].append(r["random_pair_spearman_abs"])
    for label in ("blind", "control: edge"):
        assert cell[label].values == pytest.approx(1.0 - np.array(levels[label]))
        assert np.all(cell[label].values > 0.2) and cell[label].passed is False
    gradient_cell = cell["toy_gradient"]
    assert (gradient_cell.check, gradient_cell.threshold) == ("noninferior", 0.0)
    assert np.nanmean(gradient_cell.values) < 1.0 - np.mean(levels["toy_gradient"]) - 0.1
    # Binder et al.: noise redrawn for new weights "passes" randomization; the verdict guards.
    assert cell["control: random"].passed is True
    assert {r["method"] for r in result.rows} == {m.label for m in methods}


def test_costs_match_the_plan_and_costly_methods_are_not_tested(tmp_path, tiny):
    model, images, _ = tiny
    methods = [GradientExplainer(), TwiceGradient()]
    result = smooth_model_randomization(audit_input(model, methods, images), tmp_path,
                                        n_samples=3, max_method_evals=1)
    # Gradient: 1 evaluation per map; 2 noisy copies on the trained model, 3 on the random one.
    assert result.model_evals == 4 * (2 + 3)
    plan = INFO["smooth_model_randomization"].cost(
        {"n": 4, "n_samples": 3, "max_method_evals": 1}, {"toy_gradient": 1.0, "twice_gradient": 2.0},
        methods)
    assert plan == result.model_evals
    left_out = next(c for c in result.cells if c.method == "twice_gradient")
    assert left_out.forced == NOT_TESTED and "max_method_evals" in left_out.note
    assert set(result.summary["skipped_methods"]) == {"twice_gradient"}


@pytest.mark.parametrize("params", [{"n_samples": 1}, {"noise": 0.0}, {"noise": 2.0},
                                    {"max_method_evals": 0}])
def test_bad_parameters_are_refused(tmp_path, tiny, params):
    model, images, methods = tiny
    with pytest.raises(ConfigError, match=next(iter(params))):
        smooth_model_randomization(audit_input(model, methods[:1], images), tmp_path, **params)
