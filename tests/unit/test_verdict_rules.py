"""The verdict's rules on cases whose right answer is known: the tests against statsmodels and
scipy, their error rates by simulation, pairing with the controls, Holm, and the lines."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from xaudit.audit import Cell
from xaudit.audit.judge import assess
from xaudit.audit.scorecard import scorecard_rows, scorecard_summary
from xaudit.audit.stats import holm, one_sided, paired
from xaudit.audit.verdict_lines import method_lines, verdict


def test_pass_side_is_students_one_sided_t_test():
    a = np.array([0.3, -0.1, 0.5, 0.2, 0.4, 0.1])
    t = one_sided(a, "controls", 0.05)
    assert t.p_pass == pytest.approx(stats.ttest_1samp(a, 0.0, alternative="greater").pvalue)
    nonin = one_sided(a, "noninferior", 0.05)
    assert nonin.p_fail == pytest.approx(stats.ttest_1samp(a, 0.0, alternative="less").pvalue)


def test_fail_side_is_the_noncentral_t_test_of_a_standardised_effect():
    # At the boundary mu = 0.5 sigma the fail test's p-value is uniform: it rejects about 5 %
    # of samples at level 0.05, and more often the farther mu lies below the boundary.
    rng = np.random.default_rng(0)
    rates = []
    for mu in (0.5, 0.0):
        p = [one_sided(rng.normal(mu, 1.0, 12), "controls", 0.05).p_fail for _ in range(3000)]
        rates.append(np.mean(np.array(p) <= 0.05))
    assert rates[0] == pytest.approx(0.05, abs=0.012)
    assert rates[1] > 0.4
    # and the pass side's error rate at mu = 0 is alpha too
    p = [one_sided(rng.normal(0.0, 1.0, 12), "controls", 0.05).p_pass for _ in range(3000)]
    assert np.mean(np.array(p) <= 0.05) == pytest.approx(0.05, abs=0.012)


def test_every_effect_is_decided_once_enough_images_are_in():
    rng = np.random.default_rng(1)
    for mu, expected in ((0.0, "fail"), (0.25, None), (1.0, "pass"), (-0.5, "fail")):
        t = one_sided(rng.normal(mu, 1.0, 400), "controls", 0.05)
        decision = t.decision()
        assert decision != "open", mu
        if expected:
            assert decision == expected, mu
    # non-inferiority: no worse than 0 (pass) or shown worse (fail)
    assert one_sided(rng.normal(0.0, 1.0, 400), "noninferior", 0.05).decision() == "pass"
    assert one_sided(rng.normal(-1.0, 1.0, 400), "noninferior", 0.05).decision() == "fail"


def test_images_to_decide_shrinks_with_the_effect():
    rng = np.random.default_rng(2)
    base = rng.normal(0, 1, 6)
    near = one_sided(base + 0.3, "controls", 0.05).images_to_decide()
    far = one_sided(base + 3.0, "controls", 0.05).images_to_decide()
    assert far < near


def test_holm_matches_statsmodels():
    rng = np.random.default_rng(3)
    for _ in range(200):
        p = list(rng.uniform(0, 0.1, rng.integers(1, 9)))
        assert holm(p, 0.05) == list(multipletests(p, 0.05, method="holm")[0])


def test_pairing_follows_the_image_ids():
    mine = np.array([0.9, 0.5, 0.1])
    theirs = np.array([0.1, 0.5, 0.9])
    by_id = paired(mine, theirs, True, 0.05, mine_ids=["a", "b", "c"], their_ids=["c", "b", "a"])
    assert by_id.mean == pytest.approx(0.0) and by_id.n == 3
    assert paired(mine, theirs[::-1], True, 0.05).mean == pytest.approx(0.0)
    # a missing value drops that image from the pair only
    gap = paired(np.array([1.0, np.nan, 2.0]), np.array([0.0, 0.0, 0.0]), True, 0.05)
    assert gap.n == 2 and gap.mean == pytest.approx(1.5)


def _cell(method, values, audit="faithfulness", metric="deletion_auc", higher=False,
          check="controls", threshold=None):
    ids = [f"img{i}" for i in range(len(values))]
    return Cell(method, audit, metric, np.asarray(values, float), higher, None, "rule",
                threshold=threshold, check=check, ids=ids)


def _world(method_shift, n=12, seed=0):
    """Deletion AUCs (lower is better) of a method and three controls on the same images:
    images differ a lot, maps little (the correlation the paired test exploits)."""
    rng = np.random.default_rng(seed)
    image = rng.uniform(0.2, 0.8, n)
    noise = lambda: rng.normal(0, 0.01, n)  # noqa: E731
    return {
        "m": image - method_shift + noise(),
        "control: random": image + noise(),
        "control: edge": image - 0.01 + noise(),
        "control: centre": image + 0.005 + noise(),
    }


def _cells(world, randomization=None):
    cells = [_cell(k, v) for k, v in world.items()]
    for k, d in (randomization or {}).items():
        cells.append(_cell(k, d, audit="model_randomization", metric="excess", check="noninferior",
                           threshold=0.0))
    return cells


def test_a_method_that_beats_every_control_is_trusted_and_the_controls_are_not():
    world = _world(method_shift=0.1)
    rand = {k: np.random.default_rng(4).normal(0.0, 0.05, 12) for k in world}
    rand["control: edge"] = np.full(12, 0.4) + np.random.default_rng(5).normal(0, 0.05, 12)
    cells = _cells(world, rand)
    a = assess(cells, list(world))
    assert a.trusted == ["m"]
    assert a.state_word("m") == "trusted"
    # the edge control beats the other controls on deletion but fails randomization; the
    # others pass randomization but lose to the edge control on deletion
    assert a.state_word("control: edge") == "do not trust"
    assert all(a.state_word(c) != "trusted" for c in world if c != "m")
    statuses = {c.method: a.status(c) for c in cells if c.audit == "faithfulness"}
    assert statuses["m"] == "pass" and statuses["control: random"] == "fail"


def test_a_method_no_better_than_a_control_fails_against_that_control():
    world = _world(method_shift=0.0, n=40)
    cells = _cells(world)
    a = assess(cells, list(world))
    assert a.state_word("m") == "do not trust"
    row = {r["method"]: r for r in scorecard_rows(cells, a)}["m"]
    assert row["status"] == "fail" and row["against"].startswith("control: ")
    line = method_lines(cells, a, {})["m"]
    # in words: what the metric measures, the control by what it is, the paired difference
    assert line.startswith("m: do not trust — faithfulness: class score as its top pixels are "
                           "deleted: no better than ")
    assert "by a difference that matters (difference " in line
    assert line.endswith("], n=40)") and "control:" not in line


def test_unpaired_noise_would_hide_what_pairing_shows():
    # Per-image spread (0.2–0.8) dwarfs the method's 0.03 advantage: an unpaired comparison of
    # means on 8 images cannot see it; the paired test can.
    world = _world(method_shift=0.03, n=8, seed=7)
    cells = _cells(world)
    a = assess(cells, list(world))
    assert {c.method: a.status(c) for c in cells}["m"] == "pass"
    unpaired = stats.ttest_ind(world["m"], world["control: random"], alternative="less").pvalue
    assert unpaired > 0.05


def test_a_run_without_controls_is_judged_against_the_audits_references():
    world = _world(method_shift=0.1)
    cells = [_cell("m", world["m"]),
             _cell("edge (reference)", world["control: edge"], check="")]
    a = assess(cells, ["m"])
    assert a.status(cells[0]) == "pass"
    alone = [_cell("m", world["m"])]
    assert assess(alone, ["m"]).status(alone[0]) == "not tested"


def test_undecided_methods_get_an_estimate_and_never_the_closest_label_when_denied():
    world = _world(method_shift=0.004, n=4, seed=3)
    world["bad"] = world["control: random"] + 0.2
    cells = _cells(world, {"m": np.full(4, -0.3) + np.arange(4) * 0.01})
    a = assess(cells, list(world))
    assert a.state_word("m") == "undecided" and a.state_word("bad") == "do not trust"
    line = method_lines(cells, a, {})["m"]
    assert "images would decide it" in line
    text = verdict(a, None)
    assert "do not trust bad" in text and "Closest to trustworthy: bad" not in text
    summary = {(e["method"], e["audit"]): e for e in scorecard_summary(cells, a)}
    assert summary[("m", "faithfulness")]["images_to_decide"] > 4


def test_holm_keeps_a_method_at_the_boundary_from_false_do_not_trust():
    # A method exactly delta better than every control on each of six checks: it must not be
    # called "do not trust" in much more than alpha of the runs (without Holm, about 1 - 0.95^18).
    rng = np.random.default_rng(11)
    false_fail = 0
    runs = 300
    for _ in range(runs):
        cells = []
        for k in range(6):
            base = rng.normal(0, 1, 10)
            for c in ("control: a", "control: b", "control: c"):
                cells.append(_cell(c, base + rng.normal(0, 1, 10), metric=f"m{k}", higher=True))
            cells.append(_cell("m", base + rng.normal(0.5 * np.sqrt(2), 1, 10), metric=f"m{k}",
                               higher=True))
        false_fail += assess(cells, ["m"]).state_word("m") == "do not trust"
    assert false_fail / runs <= 0.08
