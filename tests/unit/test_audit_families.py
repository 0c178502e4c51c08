"""Complexity, robustness, correlation and random-logit audits: Quantus 0.6 as the oracle,
known answers on linear models, and each audit on a tiny input.

Quantus draws its randomness from numpy's global RNG; to compare value for value, its draws
are replaced by ours (a replaying perturb function, or a patched np.random call).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from tests.helpers.audit_toys import SIZE, LinearNet, audit_input, gradient
from xaudit.audit.complexity import complexity, complexity_audit, sparseness
from xaudit.audit.correlation import (
    faithfulness_correlation,
    faithfulness_correlation_audit,
    monotonicity_correlation,
)
from xaudit.audit.random_logit import other_classes, random_logit, random_logit_audit
from xaudit.audit.robustness import avg_sensitivity, local_lipschitz, robustness
from xaudit.errors import ConfigError

quantus = pytest.importorskip("quantus")


def quantus_explain(fn, log=None):
    """Quantus's explain_func interface around one of ours (numpy in, numpy out)."""

    def explain(model, inputs, targets, **kwargs):
        t = torch.as_tensor(np.asarray(targets)).long()
        if log is not None:
            log.append(t.clone())
        return fn(torch.as_tensor(np.asarray(inputs)).float(), t).detach().numpy()

    return explain


def recording(fn):
    """``fn`` that also keeps every input it was called with (the perturbed images)."""
    seen = []

    def wrapped(x, t):
        seen.append(x.detach().clone())
        return fn(x, t)

    return wrapped, seen


def replaying(seen):
    """A Quantus perturb_func that returns our perturbed images, in our order."""
    calls = iter(seen)

    def perturb(arr, indices=None, **kwargs):
        return next(calls).numpy().reshape(arr.shape).astype(arr.dtype)

    return perturb


def run_quantus(metric, model, x, y, a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a,
                                 device="cpu", batch_size=len(x), **kw), dtype=np.float64)


# --------------------------------------------------------------------------- complexity


def test_sparseness_and_complexity_match_quantus(cnn):
    model, x, y = cnn
    grad = gradient(model)(x, y).sum(1, keepdim=True)
    maps = grad / grad.abs().amax(dim=(1, 2, 3), keepdim=True)  # O(1): Quantus's +1e-7 is negligible
    a = maps.numpy().astype(np.float64)
    q_gini = run_quantus(quantus.Sparseness(abs=True, normalise=False, disable_warnings=True),
                         model, x, y, a.copy())
    q_entropy = run_quantus(quantus.Complexity(abs=True, normalise=False, disable_warnings=True),
                            model, x, y, a.copy())
    assert sparseness(maps) == pytest.approx(q_gini, abs=1e-5)
    assert complexity(maps) == pytest.approx(q_entropy, abs=1e-6)


def test_one_hot_and_uniform_maps_are_the_extremes():
    n = SIZE * SIZE
    one_hot = torch.zeros(2, SIZE, SIZE)
    one_hot[:, 3, 5] = -2.0  # the sign does not matter: |map|
    uniform = torch.full((2, SIZE, SIZE), 0.7)
    assert sparseness(one_hot) == pytest.approx([(n - 1) / n] * 2)
    assert complexity(one_hot) == pytest.approx([0.0, 0.0], abs=1e-12)
    assert sparseness(uniform) == pytest.approx([0.0, 0.0], abs=1e-12)
    assert complexity(uniform) == pytest.approx([np.log(n)] * 2)
    assert np.isnan(sparseness(torch.zeros(1, 4, 4))).all() and np.isnan(complexity(torch.zeros(1, 4, 4))).all()


# --------------------------------------------------------------------------- robustness


def test_avg_sensitivity_matches_quantus(cnn):
    model, x, y = cnn
    explain, seen = recording(gradient(model))
    ref = gradient(model)(x, y)
    ours = avg_sensitivity(explain, x, y, ref, 3, 0.05, torch.Generator().manual_seed(2))
    metric = quantus.AvgSensitivity(nr_samples=3, lower_bound=0.05, abs=False, normalise=False,
                                    perturb_func=replaying(seen), disable_warnings=True)
    theirs = run_quantus(metric, model, x, y, ref.numpy(), explain_func=quantus_explain(gradient(model)))
    assert len(seen) == 3 and all((s - x).abs().max() <= 0.05 + 1e-6 for s in seen)
    assert ours == pytest.approx(theirs, rel=1e-5)
    assert np.all(ours > 0)


@pytest.mark.parametrize("normalise", [False, True])
def test_local_lipschitz_matches_quantus(cnn, normalise):
    model, x, y = cnn
    explain, seen = recording(gradient(model))
    ref = gradient(model)(x, y)
    ours = local_lipschitz(explain, x, y, ref, 3, 0.1, torch.Generator().manual_seed(3), normalise)
    # Quantus's normalise_by_max divides by one max over the whole batch by default; ours is
    # per image, which Quantus gives with normalise_axes over C, H, W.
    metric = quantus.LocalLipschitzEstimate(
        nr_samples=3, perturb_std=0.1, abs=False, normalise=normalise,
        normalise_func_kwargs={"normalise_axes": [1, 2, 3]}, perturb_func=replaying(seen),
        disable_warnings=True)
    theirs = run_quantus(metric, model, x, y, ref.numpy(), explain_func=quantus_explain(gradient(model)))
    assert ours == pytest.approx(theirs, rel=1e-4)
    assert np.all(ours > 0)


def test_constant_map_is_steady_and_the_identity_map_has_lipschitz_one():
    x = torch.rand(2, 3, 8, 8) + 1.0
    t = torch.zeros(2, dtype=torch.long)
    const = lambda xx, tt: torch.ones(len(xx), 1, 8, 8)  # noqa: E731
    ident = lambda xx, tt: xx.clone()  # noqa: E731
    g = torch.Generator().manual_seed(0)
    assert avg_sensitivity(const, x, t, const(x, t), 3, 0.02, g) == pytest.approx([0, 0])
    assert local_lipschitz(const, x, t, const(x, t), 3, 0.1, g) == pytest.approx([0, 0])
    assert local_lipschitz(ident, x, t, x, 3, 0.1, g, normalise=False) == pytest.approx([1, 1], rel=1e-5)
    # Uniform noise of radius r moves x by at most r per element: relative change ≤ r·√F / ‖x‖.
    moved = avg_sensitivity(ident, x, t, x, 3, 0.02, g)
    bound = 0.02 * np.sqrt(x[0].numel()) / x.flatten(1).norm(dim=1).numpy()
    assert np.all(moved > 0) and np.all(moved <= bound)


# --------------------------------------------------------------------------- correlation


@pytest.mark.parametrize("channels", [1, 3])
def test_faithfulness_correlation_matches_quantus(cnn, monkeypatch, channels):
    model, x, y = cnn
    attr = gradient(model)(x, y) * x
    attr = attr.sum(1, keepdim=True) if channels == 1 else attr
    runs, k, n_features = 6, 64, x[0].numel()
    rng = np.random.default_rng(0)
    subsets = np.stack([[rng.choice(n_features, k, replace=False) for _ in range(runs)] for _ in x])
    ours = faithfulness_correlation(model, x, attr, y, torch.zeros_like(x), torch.as_tensor(subsets))
    draws = iter(subsets[i, r] for r in range(runs) for i in range(len(x)))  # Quantus: run by run
    monkeypatch.setattr(np.random, "choice", lambda *a, **kw: next(draws))
    metric = quantus.FaithfulnessCorrelation(nr_runs=runs, subset_size=k, perturb_baseline=0.0, abs=False,
                                             normalise=False, return_aggregate=False, disable_warnings=True)
    theirs = run_quantus(metric, model, x, y, attr.numpy(), softmax=False)
    assert ours == pytest.approx(theirs, abs=1e-5)


def test_exact_linear_contribution_has_faithfulness_correlation_one():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(2, 3, 8, 8, generator=g)
    model = LinearNet(8, weight).eval()
    x = torch.rand(3, 3, 8, 8, generator=g)
    t = torch.tensor([0, 1, 0])
    exact = weight[t] * x  # logit drop when S is set to 0 = Σ_S w ⊙ x
    subsets = torch.stack([torch.stack([torch.randperm(192, generator=g)[:20] for _ in range(8)])
                           for _ in range(3)])
    base = torch.zeros_like(x)
    assert faithfulness_correlation(model, x, exact, t, base, subsets) == pytest.approx([1.0] * 3)
    assert faithfulness_correlation(model, x, -exact, t, base, subsets) == pytest.approx([-1.0] * 3)


def test_monotonicity_correlation_matches_quantus(cnn, monkeypatch):
    model, x, y = cnn
    attr = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))  # no ties
    groups, samples = 12, 3  # 256 per group: Quantus wants it to divide H·W as well
    fills = torch.rand(len(x), groups, samples, generator=torch.Generator().manual_seed(5))
    probs = lambda xx: model(xx).softmax(1)  # noqa: E731
    ours = monotonicity_correlation(probs, x, attr, y, groups, fills, torch.zeros(3), torch.ones(3))
    draws = iter(fills[:, g, s].double().numpy() for g in range(groups) for s in range(samples))
    monkeypatch.setattr(np.random, "uniform", lambda *a, **kw: next(draws))
    metric = quantus.MonotonicityCorrelation(nr_samples=samples, features_in_step=x[0].numel() // groups,
                                             abs=True, normalise=False, disable_warnings=True)
    theirs = run_quantus(metric, model, x, y, attr.numpy(), softmax=True)
    assert ours == pytest.approx(theirs, abs=1e-6)


def test_monotonicity_of_the_weights_on_a_linear_model_is_one_and_of_their_inverse_minus_one():
    g = torch.Generator().manual_seed(0)
    weight = torch.rand(1, 3, 8, 8, generator=g) + 0.1
    model = LinearNet(8, weight).eval()
    x = torch.zeros(2, 3, 8, 8)
    t = torch.zeros(2, dtype=torch.long)
    fills = torch.full((2, 6, 2), 0.5)  # the change of a group is then 0.5 · Σ_group w
    args = (model, x)
    exact = monotonicity_correlation(*args, weight.expand_as(x), t, 6, fills, torch.zeros(3), torch.ones(3))
    inverse = monotonicity_correlation(*args, 1 / weight.expand_as(x), t, 6, fills, torch.zeros(3),
                                       torch.ones(3))
    assert exact == pytest.approx([1.0, 1.0]) and inverse == pytest.approx([-1.0, -1.0])


# --------------------------------------------------------------------------- random logit


def test_random_logit_matches_quantus_spearman(cnn):
    model, x, y = cnn
    summed = lambda xx, tt: gradient(model)(xx, tt).sum(1, keepdim=True)  # noqa: E731
    asked = []
    metric = quantus.RandomLogit(num_classes=3, similarity_func=quantus.similarity_func.correlation_spearman,
                                 abs=False, normalise=False, disable_warnings=True)
    theirs = run_quantus(metric, model, x, y, summed(x, y).numpy(), explain_func=quantus_explain(summed, asked))
    others = asked[-1]
    assert torch.all(others != y)
    ours = random_logit(summed, x, y, others)
    assert ours["spearman_signed"] == pytest.approx(theirs, abs=1e-6)


def test_random_logit_known_answers():
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(3, 8, 8, generator=g)
    model = LinearNet(8, torch.stack([w0, -w0])).eval()  # a two-class model: w₁ = −w₀
    x = torch.rand(3, 3, 8, 8, generator=g)
    t = torch.zeros(3, dtype=torch.long)
    others = other_classes(t, 2, g)
    assert others.tolist() == [1, 1, 1]
    sims = random_logit(gradient(model), x, t, others)
    # The other class's gradient is the negated map: changed (signed −1), |map| identical.
    assert sims["spearman_signed"] == pytest.approx([-1.0] * 3)
    assert sims["spearman_abs"] == pytest.approx([1.0] * 3)
    blind = random_logit(lambda xx, tt: xx.clone(), x, t, others)  # ignores the class
    assert blind["spearman_signed"] == pytest.approx([1.0] * 3)
    many = other_classes(torch.zeros(600, dtype=torch.long), 4, g)
    assert set(many.tolist()) == {1, 2, 3}


# --------------------------------------------------------------------------- the audits


def test_complexity_audit_ranks_every_method(tmp_path, tiny):
    model, images, methods = tiny
    result = complexity_audit(audit_input(model, methods, images), tmp_path)
    assert {(c.method, c.metric) for c in result.cells} == {
        (m.label, k) for m in methods for k in ("sparseness", "complexity")}
    assert all(c.passed is None and c.values.shape == (4,) for c in result.cells)
    assert len(result.rows) == 3 * 4 and result.model_evals == 0


def test_robustness_audit_counts_evaluations_and_skips_costly_methods(tmp_path, tiny):
    model, images, methods = tiny
    result = robustness(audit_input(model, methods, images), tmp_path, n_samples=2, max_method_evals=1)
    assert set(result.summary["skipped_methods"]) == {"twice_gradient"}
    # Gradient: 1 evaluation per image, 2 samples for each of the 2 metrics, 4 images.
    assert result.model_evals == 16
    cell = next(c for c in result.cells if c.method == "blind" and c.metric == "avg_sensitivity")
    assert cell.passed is None and np.all(cell.values > 0) and not cell.higher_is_better


def test_faithfulness_correlation_audit_rules_and_costs(tmp_path, tiny):
    model, images, methods = tiny
    inp = audit_input(model, methods[:2], images)
    result = faithfulness_correlation_audit(inp, tmp_path, subset_size=32, n_runs=5, n_groups=4,
                                            monotonicity_samples=2)
    fc = [c for c in result.cells if c.metric == "faithfulness_correlation"]
    assert all(c.threshold == 0.0 and c.passed == (np.nanmean(c.values) > 0) for c in fc)
    assert all(c.passed is None for c in result.cells if c.metric == "monotonicity_correlation")
    # Per method: 4 + 4·5 (faithfulness correlation) and 4 + 4·4·2 (monotonicity), 768 / 4 = 192.
    assert result.model_evals == 2 * (4 + 20 + 4 + 32)
    assert result.summary["n_groups"] == 4 and len(result.rows) == 2 * 4


def test_random_logit_audit_flags_a_class_blind_method(tmp_path, tiny):
    model, images, methods = tiny
    result = random_logit_audit(audit_input(model, methods[:2], images), tmp_path)
    blind = next(c for c in result.cells if c.method == "blind" and c.metric == "random_logit_spearman")
    # The same map for either class: similarity 1, so the excess is 1 minus the image's level.
    levels = np.array([r["random_pair_spearman_signed"] for r in result.rows if r["method"] == "blind"])
    assert blind.values == pytest.approx(1.0 - levels) and blind.passed is False
    assert (blind.check, blind.threshold) == ("noninferior", 0.0) and np.all(levels < 0.9)
    assert result.model_evals == 4  # the gradient for the other class; the blind method costs none
    assert {r["other"] for r in result.rows} <= {"a", "b"}


@pytest.mark.parametrize("audit, params", [
    (robustness, {"n_samples": 0}),
    (robustness, {"radius": -0.1}),
    (faithfulness_correlation_audit, {"score": "softmax"}),
    (faithfulness_correlation_audit, {"n_runs": 2}),
    (faithfulness_correlation_audit, {"subset_size": 10**6}),
])
def test_bad_parameters_are_refused(tmp_path, tiny, audit, params):
    model, images, methods = tiny
    with pytest.raises(ConfigError, match=next(iter(params))):
        audit(audit_input(model, methods[:1], images), tmp_path, **params)
