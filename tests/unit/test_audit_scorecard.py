"""Scorecard statistics, verdict, spec validation and run_audits end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from tests.helpers.audit_toys import TinyNet, audit_input, images_for
from xaudit.audit import AUDITS, Cell, run_audits, validate_audit_specs
from xaudit.audit.judge import assess
from xaudit.audit.scorecard import cell_interval, mean_ci, rank_cells, scorecard_rows
from xaudit.audit.verdict_lines import method_lines, verdict
from xaudit.errors import ConfigError
from xaudit.explain import build_explainer
from xaudit.run import RunDir, read_csv


def test_mean_ci_is_a_t_interval_around_the_mean():
    values = np.array([1.0, 2.0, 4.0, 7.0, np.nan])
    mean, lo, hi, n = mean_ci(values)
    assert n == 4 and mean == pytest.approx(3.5)
    half = stats.t.ppf(0.975, 3) * np.std(values[:4], ddof=1) / 2
    assert (lo, hi) == pytest.approx((3.5 - half, 3.5 + half))
    assert lo < mean < hi
    assert math.isnan(mean_ci([5.0])[1]) and mean_ci([])[3] == 0


def test_hit_rates_get_a_wilson_interval():
    # Published values: 8 of 10 -> [0.490, 0.943]; 0 of 10 -> [0, 0.278] (Wilson 1927).
    mean, lo, hi, n = mean_ci([1.0] * 8 + [0.0] * 2, rate=True)
    assert (mean, n) == (0.8, 10) and (lo, hi) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert mean_ci([0.0] * 10, rate=True)[1:3] == pytest.approx((0.0, 0.2775), abs=1e-4)
    # A t-interval would collapse to a point at 10/10; Wilson keeps its width and stays in [0, 1].
    _, lo, hi, _ = mean_ci([1.0] * 10, rate=True)
    assert lo == pytest.approx(0.7225, abs=1e-4) and hi == pytest.approx(1.0)
    # A map identical on every image (similarity 1) is not a hit rate: no width to invent.
    assert mean_ci([1.0] * 10)[1:3] == (1.0, 1.0)
    hits = Cell("m", "localization", "pointing_game", np.array([1.0] * 10), True, True, "r", threshold=0.5)
    same = Cell("m", "model_randomization", "cascade_head_spearman_abs", np.array([1.0] * 10),
                False, False, "r", threshold=0.5)
    assert cell_interval(hits)[1] == pytest.approx(0.7225, abs=1e-4)
    assert cell_interval(same)[1:3] == (1.0, 1.0)


def cell(method, mean, higher=True, passed=None, audit="faithfulness"):
    return Cell(method, audit, "m", np.array([mean - 0.1, mean, mean + 0.1]), higher, passed, "rule")


def test_rows_rank_by_direction():
    lower = [cell("a", 0.2, higher=False), cell("b", 0.5, higher=False)]
    rows = scorecard_rows(lower)
    assert [r["rank"] for r in rows] == [1, 2]
    assert rows[0]["direction"] == "lower" and rows[0]["ci_lo"] < rows[0]["mean"] < rows[0]["ci_hi"]
    higher = [cell("a", 0.2), cell("b", 0.5)]
    ranks = rank_cells(higher)
    assert ranks[id(higher[1])] == 1


def one(method, values, threshold, higher=True, audit="faithfulness", metric="m"):
    """A one-sample ruled cell (values against a stated threshold)."""
    return Cell(method, audit, metric, np.asarray(values, float), higher, None, "rule",
                threshold=threshold, check="superior")


def test_verdict_trusts_only_methods_that_fail_nothing():
    cells = [
        one("good", [0.9, 0.91, 0.92, 0.9], 0.5),
        one("good", [0.1, 0.11, 0.12, 0.1], 0.5, higher=False, audit="model_randomization"),
        one("bad", [0.8, 0.81, 0.82, 0.8], 0.5, higher=False, audit="model_randomization"),
        one("bad", [0.9, 0.91, 0.92, 0.9], 0.5),
        cell("good", 0.5, audit="shortcut"),
    ]
    a = assess(cells, ["good", "bad", "untested"])
    text = verdict(a, {"flagged": True, "classes": ["x"]})
    assert a.trusted == ["good"]
    assert "bad: do not trust" in text and "model_randomization" in text
    assert "untested: no verdict" in text and "shortcut" in text.lower()
    assert text.startswith("Trust good for this model; do not trust bad")


def test_verdict_names_the_closest_undecided_method_when_none_is_trusted():
    wide = [0.2, 0.95, 0.4, 0.9]  # mean above 0.5, interval across it
    cells = [
        one("a", wide, 0.5, audit="model_randomization"),
        one("a", [0.9, 0.91, 0.92, 0.9], 0.5),
        one("a", [0.9, 0.91, 0.92, 0.9], 0.5, audit="localization"),
        one("b", wide, 0.5, audit="model_randomization"),
        one("b", wide, 0.5, audit="localization"),
        one("b", [0.9, 0.91, 0.92, 0.9], 0.5),
        one("c", [0.1, 0.11, 0.12, 0.1], 0.5),
        one("c", [0.9, 0.91, 0.92, 0.9], 0.5, audit="localization"),
    ]
    a = assess(cells, ["a", "b", "c"])
    text = verdict(a, None)
    assert a.trusted == []
    # c passed as many checks as a, but failed one: never "closest to trustworthy"
    assert "Closest to trustworthy: a (2 of 3 checks)." in text and "b (1 of 3" not in text
    assert "c (" not in text and "do not trust c" in text


def test_validate_specs_names_unknown_audits_and_params():
    validate_audit_specs([{"name": "faithfulness", "steps": 10}, {"name": "shortcut"}])
    with pytest.raises(ConfigError, match="unknown audit 'faithfullness'.*Did you mean 'faithfulness'"):
        validate_audit_specs([{"name": "faithfullness"}])
    with pytest.raises(ConfigError, match="no parameter 'stepz'.*Allowed: .*steps"):
        validate_audit_specs([{"name": "faithfulness", "stepz": 3}])
    with pytest.raises(ConfigError, match="steps: expected int"):
        validate_audit_specs([{"name": "faithfulness", "steps": "many"}])
    with pytest.raises(ConfigError, match="listed twice"):
        validate_audit_specs(["shortcut", "shortcut"])
    with pytest.raises(ConfigError, match="n_images must be at least 1"):
        validate_audit_specs([{"name": "shortcut", "n_images": 0}])


@pytest.mark.parametrize("name", AUDITS.names())
def test_every_audit_takes_n_images(name):
    validate_audit_specs([{"name": name, "n_images": 2}])


def test_run_audits_end_to_end(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    images = images_for(model, n=4, size=16)
    explainers = [
        build_explainer({"name": "integrated_gradients", "n_steps": 8}),
        build_explainer("saliency"),
    ]
    inp = audit_input(model, explainers, images, splits={"test": images, "train": images},
                      retrain_shuffled=lambda seed: TinyNet())
    specs = [
        {"name": "convergence", "steps": [4, 8], "n_images": 2},
        {"name": "baseline_sensitivity", "baselines": ["black", "blur"], "n_images": 2},
        {"name": "model_randomization", "max_steps": 2, "independent": False},
        {"name": "smooth_model_randomization", "n_samples": 2},
        {"name": "label_randomization"},
        {"name": "faithfulness", "steps": 4, "road_percentages": [0.5], "infidelity_samples": 2,
         "sensitivity_samples": 0},
        {"name": "localization"},
        {"name": "shortcut"},
        {"name": "correctness"},
        {"name": "complexity"},
        {"name": "robustness", "n_samples": 1},
        {"name": "faithfulness_correlation", "n_runs": 3, "subset_size": 16},
        {"name": "random_logit"},
        {"name": "cam_layers"},  # no CAM method here: its entry says it was skipped, and why
    ]
    run = RunDir(tmp_path / "run").create()
    summary = run_audits(inp, specs, run, n_images=4)
    json.dumps(summary, allow_nan=False)  # strict JSON: NaN became null
    for key in ("verdict", "trusted", "sections", "cost", "shortcut", *AUDITS.names()):
        assert key in summary, key
    assert set(summary["cost"]) >= set(AUDITS.names())
    assert summary["cost"]["faithfulness"]["model_evals"] > 0
    head = summary["faithfulness"]["integrated_gradients"]
    assert set(head) >= {"metric", "score", "ci", "status", "check", "against", "effect", "threshold", "higher_is_better"}
    controls = {"control: random", "control: blurred random", "control: edge", "control: centre",
                "control: constant"}
    assert summary["controls"] and set(summary["controls"]) == controls
    assert set(summary["verdict_lines"]) == {"integrated_gradients", "saliency"} | controls
    # Controls are scored by the method audits only, never by the model-level ones.
    audited = {(c["method"], c["audit"]) for c in summary["scorecard"]}
    assert ("control: edge", "faithfulness") in audited and ("control: edge", "shortcut") not in audited
    statuses = {c["status"] for c in summary["scorecard"]}
    assert len(summary["scorecard"]) == len(rows := read_csv(run.table("scorecard")))
    assert [c["status"] for c in summary["scorecard"]] == [r["status"] for r in rows]
    assert statuses <= {"", "pass", "fail", "inconclusive", "not tested", "not informative"}
    assert statuses - {""}
    assert isinstance(summary["shortcut"]["flagged"], bool)
    rows = read_csv(run.table("scorecard"))
    assert {r["audit"] for r in rows} >= {"faithfulness", "model_randomization", "localization"}
    for name in ("faithfulness", "localization", "model_randomization", "shortcut", "correctness"):
        assert run.table(f"audit_{name}").is_file(), name
    figures = [f for s in summary["sections"] for f in s["figures"]]
    assert figures and all((run.figures / f).is_file() for f in figures)
    assert set(summary["trusted"]) <= {"integrated_gradients", "saliency"}


def test_skipped_audits_state_their_reason(tmp_path):
    model = TinyNet()
    images = images_for(model, n=2, size=16, masks=False)
    inp = audit_input(model, [build_explainer("saliency")], images)
    summary = run_audits(inp, [{"name": "convergence"}, {"name": "localization"},
                               {"name": "label_randomization"}], RunDir(tmp_path).create(), 2)
    for name in ("convergence", "localization", "label_randomization"):
        assert summary[name]["skipped"] is True and summary[name]["reason"]


def ruled(values, threshold, higher=True, metric="m", audit="faithfulness", method="a"):
    return Cell(method, audit, metric, np.asarray(values, dtype=float), higher, None,
                "rule", threshold=threshold, check="superior")


def test_status_is_inconclusive_until_a_test_decides():
    # Mean 0.205 against 0.164 on 4 images with a wide spread: nothing is shown either way.
    wide = ruled([0.0, 0.41, 0.05, 0.36], 0.164, higher=False)
    tight = ruled([0.20, 0.21, 0.205, 0.205], 0.164, higher=False)
    low = ruled([0.1, 0.11, 0.12], 0.164, higher=False)
    single = ruled([0.1], 0.164, higher=False)  # no test at n=1
    a = assess([wide, tight, low, single])
    assert [a.status(c) for c in (wide, tight, low, single)] == [
        "inconclusive", "fail", "pass", "inconclusive"]
    rows = scorecard_rows([wide, tight], assess([wide, tight]))
    assert [r["status"] for r in rows] == ["inconclusive", "fail"]
    assert rows[0]["threshold"] == 0.164 and rows[0]["against"] == "threshold"
    # An unruled cell has no status, whatever its audit set as a point estimate.
    plain = Cell("a", "x", "m", np.array([1.0, 2.0]), True, False, "r")
    assert assess([plain]).status(plain) == ""


def test_intervals_are_clipped_to_the_metrics_range():
    from xaudit.audit.scorecard import cell_interval

    c = ruled([0.0, 0.4, 0.02, 0.3], 0.1, higher=False, metric="infidelity")
    mean, lo, hi, n = cell_interval(c)
    assert mean_ci(c.values)[1] < 0 and lo == 0.0 and hi == mean_ci(c.values)[2]
    corr = ruled([0.99, 1.0, 0.2], 0.5, metric="spearman_vs_finest")
    assert cell_interval(corr)[2] == 1.0


def test_correctness_statistics_get_their_range_and_rate():
    from xaudit.audit.scorecard import metric_interval

    gini = [0.99, 1.0, 0.6]
    assert mean_ci(gini)[2] > 1 and metric_interval(gini, "gini")[2] == 1.0
    share = [0.0, 0.01, 0.5]
    assert metric_interval(share, "on_object_share")[1] == 0.0
    hits = [1.0, 1.0, 1.0]  # the pointing game's hit rate, named as correctness names it
    assert metric_interval(hits, "localization.pointing_game")[1] < 1.0


def test_inconclusive_methods_are_not_trusted_and_get_a_short_line():
    cells = [ruled([0.9, 0.91, 0.92], 0.5, method="sure"),
             ruled([0.1, 0.11, 0.12], 0.5, higher=False, method="sure", audit="model_randomization"),
             ruled([0.2, 0.9, 0.4, 0.8], 0.5, method="unsure"),
             ruled([0.1, 0.11, 0.12], 0.5, higher=False, method="unsure", audit="model_randomization"),
             ruled([0.1, 0.12, 0.11], 0.5, method="bad", audit="localization", metric="auroc")]
    a = assess(cells, ["sure", "unsure", "bad"])
    assert a.trusted == ["sure"] and "unsure: undecided" in verdict(a, None)
    lines = method_lines(cells, a, {})
    assert lines["sure"] == ("sure: trusted — passed all 2 checks (faithfulness, "
                             "model_randomization), each against every negative control")
    assert lines["unsure"].startswith("unsure: undecided — faithfulness: m: too close to 0.5 to say "
                                      "(margin 0.075 [")
    assert lines["unsure"].count("images would decide") == 1
    assert lines["unsure"].endswith("], n=4); about 84 images would decide it")
    assert lines["bad"].startswith("bad: do not trust — localization: map as a lesion detector "
                                   "(AUROC): not above 0.5 (margin -0.39 [")
    assert "nan" not in " ".join(lines.values())


def test_convergence_failure_names_the_step_count_that_fixes_it():
    c = ruled([0.15, 0.16, 0.17], 0.05, higher=False, metric="completeness_rel_delta",
              audit="convergence", method="ig")
    summary = {"convergence": {"methods": {"ig": {"configured": "gausslegendre, n_steps=32",
                                                  "n_steps_needed": {"gausslegendre": 64}}}}}
    line = method_lines([c], assess([c], ["ig"]), summary)["ig"]
    assert line == ("ig: do not trust — convergence: completeness fails at gausslegendre, "
                    "n_steps=32: set n_steps: 64")
