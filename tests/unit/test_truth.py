"""The known-truth suite: its truths on known answers, and its small run end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import xaudit
from xaudit.audit.controls import KINDS, control_label
from xaudit.data.leaf_edit import lesion_components, render_leaf_without
from xaudit.data.leaf_render import render_leaf
from xaudit.truth import lesions, patch_model, sanity
from xaudit.truth.cells import CaseResult, Cell, case_cells
from xaudit.truth.fit import as_classifier, to_input
from xaudit.truth.suite import SuiteResult, one_thread, run_suite, table_lines

# ---------------------------------------------------------------- case 1: exactness


@pytest.fixture(scope="module")
def patch_setup():
    pixels, labels, temp = patch_model.patch_images(4, 64, 8, seed=0)
    net = patch_model.PatchSum(temp)
    clf = as_classifier(net, patch_model.CLASSES, 64, cam_layer="patch")
    maps = xaudit.explain(clf, pixels, [
        {"name": "occlusion", "window": 8, "stride": 8, "baseline": "black"},
        {"name": "integrated_gradients", "baseline": "black"}], target="true",
        labels=labels.tolist())
    x, black = to_input(pixels), to_input(torch.zeros_like(pixels))
    return net, x, black, labels, maps, patch_model.true_contributions(net, x, black, labels)


def test_patch_contributions_add_up_to_the_logit_difference(patch_setup):
    net, x, black, labels, _, truth = patch_setup
    with torch.no_grad():
        diff = (net(x) - net(black))[torch.arange(len(x)), labels]
    torch.testing.assert_close(truth.sum((1, 2)), diff, atol=1e-4, rtol=1e-5)
    assert truth.shape == (4, 8, 8)


def test_occlusion_on_the_patch_grid_equals_each_patch_contribution(patch_setup):
    *_, maps, truth = patch_setup
    occ = maps["occlusion_w8"].maps  # the drop on each of 3 channels, summed: 3 × contribution
    per_pixel = truth.repeat_interleave(8, 1).repeat_interleave(8, 2)
    torch.testing.assert_close(occ, 3 * per_pixel, atol=1e-3, rtol=1e-4)


def test_integrated_gradients_is_complete_patch_by_patch(patch_setup):
    *_, maps, truth = patch_setup
    sums = patch_model.patch_sums(maps["integrated_gradients"].maps, 8)
    torch.testing.assert_close(sums, truth, atol=1e-4, rtol=1e-4)
    assert patch_model.rank_agreement(maps["integrated_gradients"].maps, truth, 8) == pytest.approx(1.0)


def test_patch_classes_are_learnable_from_a_few_patches(patch_setup):
    net, x, _, labels, _, _ = patch_setup
    with torch.no_grad():
        assert (net(x).argmax(1) == labels).all()


def test_patch_images_refuse_a_size_off_the_grid():
    with pytest.raises(ValueError, match="multiple of the patch"):
        patch_model.patch_images(2, 60, 8, seed=0)


# ---------------------------------------------------------------- case 3: interventions


def test_removing_every_lesion_draws_the_healthy_leaf_byte_for_byte():
    for seed, label in ((0, 1), (3, 2)):
        leaf = render_leaf(seed, label, 64)
        _, n = lesion_components(leaf.lesion_mask)
        gone = render_leaf_without(seed, label, list(range(1, n + 1)), 64)
        assert np.array_equal(gone.image, render_leaf(seed, 0, 64).image)
        assert not gone.lesion_mask.any()
        assert np.array_equal(render_leaf_without(seed, label, [], 64).image, leaf.image)


def test_removing_one_lesion_changes_only_its_pixels():
    leaf = render_leaf(0, 2, 64)
    regions, n = lesion_components(leaf.lesion_mask)
    assert n >= 3
    gone = render_leaf_without(0, 2, 2, 64)
    changed = (gone.image != leaf.image).any(-1)
    assert changed.any() and not changed[regions != 2].any()
    with pytest.raises(ValueError, match=rf"numbered 1..{n}"):
        render_leaf_without(0, 2, n + 1, 64)


class ChangedPixels(torch.nn.Module):
    """Class score = the number of pixels that differ from the healthy leaf: removing a
    lesion drops it by exactly that lesion's changed pixels."""

    def __init__(self, healthy: np.ndarray):
        super().__init__()
        self.healthy = torch.from_numpy(healthy).permute(2, 0, 1)

    def forward(self, pixels):
        return (pixels != self.healthy).any(1).sum((1, 2)).double().unsqueeze(1)


def test_lesion_drops_on_a_model_that_counts_lesion_pixels():
    seed, label = 3, 2
    leaf, healthy = render_leaf(seed, label, 64), render_leaf(seed, 0, 64).image
    masks, drops = lesions.lesion_drops(ChangedPixels(healthy), seed, label, 64, target=0,
                                        max_lesions=5)
    changed = torch.from_numpy((leaf.image != healthy).any(-1))
    expected = torch.stack([(changed & m).sum() for m in masks]).double()
    assert len(drops) == 5 and expected.min() > 0
    torch.testing.assert_close(drops, expected)
    areas = masks.sum((1, 2))
    assert (areas[:-1] >= areas[1:]).all()  # the largest lesions, largest first


def _lesion_masks() -> torch.Tensor:
    """Four disjoint square lesions of areas 4, 9, 16, 25 on a 16×16 image."""
    masks = torch.zeros(4, 16, 16, dtype=torch.bool)
    for i, side in enumerate((2, 3, 4, 5)):
        masks[i, 4 * i:4 * i + side, :side] = True
    return masks


def test_truth_score_known_answers():
    masks = _lesion_masks()
    drops = torch.tensor([3.0, 1.0, 4.0, 2.0], dtype=torch.float64)
    density = (drops.view(4, 1, 1) / masks.sum((1, 2)).view(4, 1, 1)) * masks
    exact = density.sum(0).float()  # each lesion's mass is its drop
    assert lesions.truth_score([exact], [masks], [drops]) == (1.0, 1)
    assert lesions.truth_score([-exact], [masks], [drops]) == (-1.0, 1)
    # A constant map ranks lesions by area: perfect when the drops follow the area, which
    # is why a method must beat the controls, not a fixed number.
    by_area = masks.sum((1, 2)).double()
    assert lesions.truth_score([torch.ones(16, 16)], [masks], [by_area]) == (1.0, 1)
    # Fewer than three lesions, or a constant side: no rank correlation, skipped.
    score, n = lesions.truth_score([exact, exact], [masks[:2], masks], [drops[:2], torch.ones(4)])
    assert n == 0 and np.isnan(score)


# ---------------------------------------------------------------- cells and musts


def test_cells_agreement_and_musts_known_answers():
    states = {"a": "trusted", "b": "do not trust", "c": "undecided",
              control_label("random"): "trusted"}
    cells = case_cells("toy", states, {"a": "faithful", "b": "faithful", "c": "unfaithful",
                                       "d": "unknown"})
    by = {c.method: c for c in cells}
    assert [by["a"].agrees, by["b"].agrees, by["c"].agrees, by["d"].agrees] == [True, False, True, None]
    assert not by["b"].holds and by["c"].holds and by["d"].holds
    assert by["d"].state == "no verdict"  # absent from the report
    assert not by[control_label("random")].holds and by[control_label("edge")].holds
    result = CaseResult("toy", cells)
    assert result.agreement == (2 + len(KINDS) - 1, 3 + len(KINDS))
    assert {c.method for c in result.broken} == {"b", control_label("random")}
    with pytest.raises(ValueError, match="expected one of faithful"):
        case_cells("toy", {}, {"a": "right"})


def test_randomization_agreement_known_answers():
    statuses = {"guided_backprop": {"a": "fail", "b": "pass"}, "saliency": {"a": "pass"},
                "grad_cam": {"a": "inconclusive"}}
    assert sanity.randomization_agrees(statuses) == {
        "guided_backprop": True, "saliency": True, "grad_cam": False}


def test_open_cells_name_what_kept_a_method_from_trust():
    from xaudit.truth.cells import open_cells

    rows = [{"method": "a", "audit": "faithfulness", "metric": "infidelity", "status": "inconclusive"},
            {"method": "a", "audit": "faithfulness", "metric": "deletion_auc", "status": "pass"},
            {"method": "a", "audit": "faithfulness", "metric": "max_sensitivity", "status": ""},
            {"method": "b", "audit": "model_randomization", "metric": "x", "status": "fail"}]
    assert open_cells(rows, ["a"]) == {"a": {"faithfulness/infidelity": "inconclusive"}}


def test_one_thread_restores_the_callers_setting():
    before = torch.get_num_threads()
    with one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


# ---------------------------------------------------------------- the small run, end to end


@pytest.fixture(scope="module")
def small():
    return run_suite("small", seed=0, log=lambda m: None)


def test_small_suite_no_control_is_ever_trusted(small):
    controls = [c for case in small.cases for c in case.cells if c.truth == "control"]
    assert len(controls) == len(KINDS) * len(small.cases)
    assert [c for c in controls if c.state == "trusted"] == []


def test_small_suite_exact_maps_are_never_called_do_not_trust(small):
    patch = next(c for c in small.cases if c.name == patch_model.NAME)
    exact = {c.method: c.state for c in patch.cells if c.truth == "faithful"}
    assert set(exact) == {"occlusion_w8", "integrated_gradients"}
    assert "do not trust" not in exact.values(), exact
    assert patch.numbers["spearman_with_truth"] == {"occlusion_w8": 1.0, "integrated_gradients": 1.0}  # rounded to 3 places


def test_small_suite_guided_backprop_is_never_trusted_and_fails_randomization(small):
    case = next(c for c in small.cases if c.name == sanity.NAME)
    gbp = next(c for c in case.cells if c.method == "guided_backprop")
    assert gbp.state != "trusted"
    assert case.numbers["randomization_as_expected"]["guided_backprop"]
    assert case.numbers["accuracy"] == 1.0


@pytest.mark.xfail(strict=True, reason=(
    "measured 2026-12-07 (small, 6 images): Spearman(|map|) after the head's re-initialisation "
    "saliency 0.997 and Grad-CAM 0.978 against thresholds 0.537 and 0.575: both fail the head "
    "step, where Adebayo et al. have them pass randomization (2-class head, global pooling)"))
def test_small_suite_saliency_and_grad_cam_pass_randomization_as_in_the_paper(small):
    case = next(c for c in small.cases if c.name == sanity.NAME)
    expected = case.numbers["randomization_as_expected"]
    assert expected["saliency"] and expected["grad_cam"], case.numbers["randomization"]


def test_small_suite_trusts_no_method_no_better_than_the_controls(small):
    case = next(c for c in small.cases if c.name == lesions.NAME)
    scores = case.numbers["truth_score"]
    best = max(scores[control_label(k)] for k in KINDS)
    for cell in case.cells:
        if not cell.method.startswith("control: ") and not scores[cell.method] > best:
            assert cell.truth == "unfaithful" and cell.state != "trusted"
    assert small.musts_hold
    assert small.seconds < 120  # ~40 s measured; the budget is a minute on two busy cores


def test_validate_command_prints_the_table_writes_json_and_exits_on_the_musts(small, tmp_path,
                                                                               monkeypatch):
    from xaudit import truth
    from xaudit.cli import app

    monkeypatch.setattr(truth, "run_suite", lambda size, seed, log: small)
    result = CliRunner().invoke(app, ["validate", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    agree, total = small.agreement
    assert f"agreement {agree}/{total}" in result.output
    saved = json.loads((tmp_path / "validate.json").read_text(), parse_constant=pytest.fail)
    assert (saved["agree"], saved["cells"], saved["musts_hold"]) == (agree, total, True)
    assert [c["case"] for c in saved["cases"]] == [c.name for c in small.cases]

    broken = CaseResult("toy", [Cell("toy", control_label("edge"), "control", "trusted")])
    monkeypatch.setattr(truth, "run_suite", lambda size, seed, log: SuiteResult("small", 0, [broken], 1.0))
    result = CliRunner().invoke(app, ["validate", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "BROKEN (trusted)" in result.output
    assert "BROKEN" in "\n".join(table_lines(SuiteResult("small", 0, [broken], 1.0)))

    result = CliRunner().invoke(app, ["validate", "--size", "huge", "--out", str(tmp_path)])
    assert result.exit_code != 0


def test_no_control_is_trusted_when_only_randomization_is_audited():
    pixels, labels, temp = patch_model.patch_images(6, 64, 8, seed=0)
    clf = as_classifier(patch_model.PatchSum(temp), patch_model.CLASSES, 64, cam_layer="patch")
    with one_thread():
        report = xaudit.audit(clf, pixels, labels.tolist(), methods=["integrated_gradients"],
                              audits=["model_randomization"], n_images=6, seed=0)
    # noise passes randomization by construction: without a faithfulness check nothing,
    # control or method, can be trusted
    assert report.trusted == []
    assert [m for m, s in report.states.items() if m.startswith("control: ") and s == "trusted"] == []
