"""The randomization checks' paired excess similarity: the all-pairs random-pair level against
scipy, the not-informative guard, the negative controls on every randomization-style check,
eMPRT, the layer order and the replaced recipe parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from tests.helpers.audit_toys import GradientExplainer, TinyNet, audit_input, images_for
from tests.helpers.decisions import noninferior, superior
from xaudit.audit.complexity import complexity_rise
from xaudit.audit.controls import ControlMap
from xaudit.audit.excess import (
    excess,
    excess_over_midpoint,
    pair_levels,
    spearman_matrix,
    uninformative,
)
from xaudit.audit.random_logit import random_logit_audit
from xaudit.audit.randomization import label_randomization, model_randomization
from xaudit.audit.registry import validate_audit_specs
from xaudit.audit.scorecard import NOT_INFORMATIVE
from xaudit.audit.smooth_randomization import smooth_model_randomization
from xaudit.errors import ConfigError

RULED = ("cascade_head_spearman_abs", "cascade_final_spearman_abs")


def test_pair_levels_average_scipy_spearman_over_every_other_image():
    gen = torch.Generator().manual_seed(0)
    maps = torch.randn(5, 6, 7, generator=gen)
    maps[1] = maps[0] * 2 + 0.1 * torch.randn(6, 7, generator=gen)  # a near copy of map 0
    for absolute in (True, False):
        a = maps.abs() if absolute else maps
        want = [np.mean([spearmanr(a[i].ravel(), a[j].ravel())[0] for j in range(5) if j != i])
                for i in range(5)]
        assert pair_levels(maps, absolute) == pytest.approx(want, abs=1e-12)
    assert spearman_matrix(maps)[0, 0] == pytest.approx(1.0)


def test_a_constant_map_has_no_level_and_is_left_out_of_the_others():
    maps = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(1))
    maps[2] = 0.5
    levels = pair_levels(maps)
    assert np.isnan(levels[2])
    assert levels[0] == pytest.approx(spearmanr(maps[0].ravel(), maps[1].ravel())[0])


def test_excess_and_the_half_way_point_by_hand():
    assert excess(np.array([0.3, 1.0]), np.array([0.1, 0.2])) == pytest.approx([0.2, 0.8])
    # Half-way between the level 0.2 and 1 is 0.6: 0.35 is 0.25 below it, 1.0 is 0.4 above.
    assert excess_over_midpoint(np.array([0.35, 1.0]), np.array([0.2, 0.2])) == pytest.approx(
        [-0.25, 0.4])


def test_the_guard_names_why_a_check_is_not_informative():
    assert uninformative(np.array([0.1, 0.2]), np.array([0.0, 0.1])) == (None, "")
    forced, note = uninformative(np.array([0.95, 0.97]), np.array([0.9, 0.9]))
    assert forced == NOT_INFORMATIVE and "already agree at 0.96" in note
    # Against the half-way point the room is halved: a level of 0.85 leaves 0.075 < DELTA.
    assert uninformative(np.array([0.85]), np.array([0.9]))[0] is None
    assert uninformative(np.array([0.85]), np.array([0.9]), room=0.5)[0] == NOT_INFORMATIVE
    forced, note = uninformative(np.array([np.nan, np.nan]), np.array([np.nan, np.nan]))
    assert forced == NOT_INFORMATIVE and "constant" in note


def test_complexity_rise_by_hand():
    half = torch.zeros(1, 4, 4)
    half[0, :2] = 1.0  # entropy log 8: half the pixels carry all the mass
    uniform = torch.full((1, 4, 4), 3.0)  # entropy log 16
    assert complexity_rise(half, uniform) == pytest.approx([np.log(np.log(16) / np.log(8))])
    assert complexity_rise(uniform, half)[0] < 0
    assert np.isnan(complexity_rise(torch.zeros(1, 4, 4), uniform)[0])  # no distribution


@pytest.fixture
def controls_run(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    images = images_for(model, n=8, size=24)
    methods = [GradientExplainer(), *(ControlMap(k) for k in ("centre", "constant", "random",
                                                              "edge"))]
    inp = audit_input(model, methods, images)
    result = model_randomization(inp, tmp_path, independent=False)
    return {(c.method, c.metric): c for c in result.cells}, result


def test_controls_on_model_randomization(controls_run):
    cells, result = controls_run
    for kind in ("centre", "constant"):  # maps that do not depend on the image
        for metric in RULED:
            cell = cells[(f"control: {kind}", metric)]
            assert cell.forced == NOT_INFORMATIVE and cell.note, (kind, metric)
    assert "already agree at 1.00" in cells[("control: centre", RULED[1])].note
    assert "constant" in cells[("control: constant", RULED[1])].note
    # Noise redrawn with the weights: its excess is about 0 and the paired test passes it
    # (Binder et al. 2023: the verdict's guard against a passing control does the rest).
    rnd = cells[("control: random", "cascade_final_spearman_abs")].values
    assert abs(np.mean(rnd)) < 0.05 and noninferior(rnd) == "pass"
    # The edge map never changes: excess 1 − level at the end, (1 − level)/2 at the head.
    edge = cells[("control: edge", "cascade_final_spearman_abs")]
    level = result.summary["control: edge"]["random_pair"]["spearman_abs"]
    assert np.mean(edge.values) == pytest.approx(1 - level, abs=1e-6)
    assert noninferior(edge.values) == "fail" and edge.passed is False
    head = cells[("control: edge", "cascade_head_spearman_abs")]
    assert np.mean(head.values) == pytest.approx((1 - level) / 2, abs=1e-6)
    assert noninferior(head.values) == "fail"


def test_emprt_every_control_would_fail_or_is_not_informative(controls_run):
    cells, _ = controls_run
    for kind in ("centre", "constant", "random", "edge"):
        cell = cells[(f"control: {kind}", "emprt_complexity_rise")]
        assert (cell.check, cell.threshold, cell.higher_is_better) == ("", 0.0, True)  # reported
        assert cell.forced == NOT_INFORMATIVE or superior(cell.values) == "fail", kind
    # Maps of the image alone: exactly no rise. The constant map cannot rise at all.
    for kind in ("centre", "edge"):
        assert cells[(f"control: {kind}", "emprt_complexity_rise")].values == pytest.approx(
            np.zeros(8), abs=1e-12)
    assert cells[("control: constant", "emprt_complexity_rise")].forced == NOT_INFORMATIVE


def _images_and_controls():
    torch.manual_seed(0)
    model = TinyNet()
    images = images_for(model, n=6, size=16)
    return model, images, [GradientExplainer(), ControlMap("centre"), ControlMap("constant")]


def _forced(cells, metric):
    return {c.method: c.forced for c in cells if c.metric == metric}


def test_image_independent_controls_are_not_informative_on_every_randomization_check(tmp_path):
    model, images, methods = _images_and_controls()

    def retrain(seed):
        torch.manual_seed(seed)
        return TinyNet()

    runs = {
        "spearman_abs_vs_shuffled": label_randomization(
            audit_input(model, methods, images, retrain_shuffled=retrain), tmp_path),
        "random_logit_spearman": random_logit_audit(audit_input(model, methods, images), tmp_path),
        "smooth_final_spearman_abs": smooth_model_randomization(
            audit_input(model, methods, images), tmp_path, n_samples=2),
    }
    for metric, result in runs.items():
        forced = _forced(result.cells, metric)
        assert forced["control: centre"] == NOT_INFORMATIVE, metric
        assert forced["control: constant"] == NOT_INFORMATIVE, metric
        assert forced["toy_gradient"] is None, metric
        cell = next(c for c in result.cells if c.metric == metric)
        assert (cell.check, cell.threshold, cell.ids) == ("noninferior", 0.0, images.ids)


def test_bottom_up_order_shares_full_randomization_and_has_no_decisive_steps(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    images = images_for(model, n=4, size=16)
    runs = {order: model_randomization(audit_input(model, [GradientExplainer()], images),
                                       tmp_path, order=order) for order in ("top_down", "bottom_up")}
    assert runs["top_down"].summary["cascade_steps"] == ["..fc", "..conv2", "..conv1"]
    assert runs["bottom_up"].summary["cascade_steps"] == ["conv1..", "conv2..", "fc.."]
    metrics = {o: {c.metric for c in r.cells if c.check} for o, r in runs.items()}
    assert "cascade_head_spearman_abs" in metrics["top_down"]
    assert metrics["bottom_up"] == {"cascade_final_spearman_abs"}  # eMPRT is reported, not ruled
    # Every block re-initialised with the same seeds: one model, one answer, in either order.
    final = {o: next(c for c in r.cells if c.metric == "cascade_final_spearman_abs").values
             for o, r in runs.items()}
    assert final["top_down"] == pytest.approx(final["bottom_up"])
    assert "bottom-up" in runs["bottom_up"].text and "top-down, the default" in runs["top_down"].text
    with pytest.raises(ConfigError, match="order must be one of top_down, bottom_up"):
        model_randomization(audit_input(model, [GradientExplainer()], images), tmp_path,
                            order="sideways")


@pytest.mark.parametrize("audit, key, replacement", [
    ("model_randomization", "margin", "paired per-image test"),
    ("model_randomization", "survival", "decisive steps"),
    ("model_randomization", "max_random_pair", "not informative"),
    ("smooth_model_randomization", "max_random_pair", "not informative"),
    ("label_randomization", "margin", "paired per-image test"),
    ("random_logit", "margin", "paired per-image test"),
])
def test_an_old_recipe_is_told_what_replaced_a_parameter(audit, key, replacement):
    with pytest.raises(ConfigError, match=f"{audit}.{key} was removed: replaced by .*{replacement}"):
        validate_audit_specs([{"name": audit, key: 0.1}])
    with pytest.raises(ConfigError, match="has no parameter"):  # an unknown key is still unknown
        validate_audit_specs([{"name": audit, "survivl": 0.1}])
