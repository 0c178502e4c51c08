"""The audits' rules on the cases the literature knows: Adebayo et al.'s cascade, negative
controls (Binder et al.), refused methods, uninformative checks, presets."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

from tests.helpers.audit_toys import (
    FunctionExplainer,
    GradientExplainer,
    TinyNet,
    audit_input,
    images_for,
)
from tests.helpers.decisions import superior
from xaudit.audit import AUDITS, AuditImages, AuditInput, Cell, resolve_specs, run_audits
from xaudit.audit.controls import control_explainers, is_control
from xaudit.audit.faithfulness import faithfulness, uninformative
from xaudit.audit.judge import assess
from xaudit.audit.randomization import model_randomization, pick_steps, ruled_steps
from xaudit.audit.references import sobel_map
from xaudit.audit.registry import audit_params
from xaudit.audit.scorecard import cell_status
from xaudit.audit.verdict_lines import verdict
from xaudit.errors import ConfigError
from xaudit.explain import build_explainer
from xaudit.explain.base import context_for
from xaudit.run import RunDir


def _relu_mobilenet() -> nn.Module:
    """torchvision's ImageNet MobileNetV2 with ReLU6 replaced by ReLU, so that guided
    backprop (which guides nn.ReLU only) applies: a trained network, offline."""
    from xaudit.models.weights import build_torchvision

    model, _ = build_torchvision("mobilenet_v2", None, "IMAGENET1K_V1")
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU6):
                setattr(module, name, nn.ReLU())
    return model.eval()


def _photo_crops(size: int) -> torch.Tensor:
    """12 crops of scikit-image's photos, the object in a different place in each, so that
    maps of different images do not agree by the centre alone."""
    from skimage import data, transform

    crops = []
    for photo in (data.astronaut(), data.chelsea(), data.coffee(), data.rocket()):
        h, w = photo.shape[:2]
        ch, cw = int(0.7 * h), int(0.7 * w)
        for fy, fx in ((0, 0), (1, 1), (0, 1)):
            c = photo[fy * (h - ch): fy * (h - ch) + ch, fx * (w - cw): fx * (w - cw) + cw]
            c = transform.resize(c, (size, size), anti_aliasing=True)
            crops.append(torch.tensor(c, dtype=torch.float32).permute(2, 0, 1))
    return torch.stack(crops)


def test_adebayo_guided_backprop_fails_model_randomization_saliency_and_grad_cam_pass(tmp_path):
    """Adebayo et al. (2018), Fig. 2: guided backprop's map survives the re-initialisation of
    the logits and the top block; saliency's and Grad-CAM's do not."""
    import xaudit

    model = _relu_mobilenet()
    clf = xaudit.Classifier.from_module(model, classes=[str(i) for i in range(1000)])
    pixels = _photo_crops(224)
    x = clf.preprocessing.normalize(pixels)
    with torch.no_grad():
        preds = model(x).argmax(1)
    images = AuditImages(x=x, pixels=pixels, labels=preds, preds=preds, targets=preds,
                         ids=[f"crop{i}" for i in range(len(x))])
    inp = AuditInput(model=model, explainers=[build_explainer(n) for n in
                                               ("guided_backprop", "saliency", "grad_cam")],
                     ctx=context_for(clf, torch.Generator().manual_seed(0)),
                     classes=clf.classes, splits={"test": images},
                     generator=torch.Generator().manual_seed(5),
                     blocks=clf.anatomy.randomization_blocks)
    result = model_randomization(inp, tmp_path, max_steps=3, independent=False)
    # The verdict's own tests (noninferiority on the per-image excess, Holm within a method).
    judged = assess(result.cells)
    status = {(c.method, c.metric): judged.status(c) for c in result.cells
              if c.check == "noninferior"}
    for step in ("cascade_head_spearman_abs", "cascade_top_block_spearman_abs"):
        assert status[("guided_backprop", step)] == "fail", step
        assert status[("saliency", step)] == "pass", step
        assert status[("grad_cam", step)] == "pass", step
    for method in ("saliency", "grad_cam"):
        assert status[(method, "cascade_final_spearman_abs")] == "pass"
    # What an end-point-only rule misses: guided backprop does decorrelate at the end.
    assert status[("guided_backprop", "cascade_final_spearman_abs")] != "fail"
    assert result.summary["guided_backprop"]["cascade"]["spearman_abs"][0] > 0.99
    # Saliency's map of a random network is noisier than the trained one's (eMPRT).
    emprt = next(c for c in result.cells if c.method == "saliency"
                 and c.metric == "emprt_complexity_rise")
    assert superior(emprt.values) == "pass"


def test_decisive_steps_and_their_yardsticks():
    assert pick_steps(20, 4) == [0, 1, 10, 19]  # the head, the top block, then evenly down
    assert pick_steps(3, 4) == [0, 1, 2]
    blocks = [(f"b{i}", [f"b{i}"]) for i in range(20)]
    # Top-down: the head and the top block against the half-way point, the end against the level.
    assert ruled_steps(blocks, [0, 1, 10, 19]) == [
        ("cascade_head_spearman_abs", 0, "b0", "midpoint"),
        ("cascade_top_block_spearman_abs", 1, "b1", "midpoint"),
        ("cascade_final_spearman_abs", 3, "all blocks", "level")]
    assert ruled_steps(blocks, [0, 1, 10, 19], "bottom_up") == [
        ("cascade_final_spearman_abs", 3, "all blocks", "level")]


def test_a_map_that_ignores_the_model_fails_at_the_head_step(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    images = images_for(model, n=6, size=16)
    edge = FunctionExplainer(lambda x, t: sobel_map(x) + 1e-3 * x.mean(1), "edge map")
    grad = build_explainer("saliency")
    result = model_randomization(audit_input(model, [edge, grad], images), tmp_path,
                                 independent=False)
    status = {(c.method, c.metric): cell_status(c) for c in result.cells}
    assert status[("edge map", "cascade_head_spearman_abs")] == "fail"
    assert status[("edge map", "cascade_final_spearman_abs")] == "fail"


def test_randomization_is_not_informative_when_unrelated_maps_already_agree(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    images = images_for(model, n=5, size=16)
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    blob = torch.exp(-((yy - 7.5) ** 2 + (xx - 7.5) ** 2) / 20)

    def centred(x, t):  # the same blob for every image, scaled by the model's output
        with torch.no_grad():
            scale = model(x).gather(1, t.view(-1, 1)).view(-1, 1, 1).abs() + 1
        return blob.expand(len(x), 16, 16) * scale + 1e-4 * torch.rand(len(x), 16, 16)

    result = model_randomization(audit_input(model, [FunctionExplainer(centred, "blob")], images),
                                 tmp_path, independent=False)
    ruled = [c for c in result.cells if c.check == "noninferior"]
    assert ruled and all(cell_status(c) == "not informative" for c in ruled)
    assert "already agree" in ruled[0].note
    # eMPRT's yardstick is the map's own complexity, not other images: the blob's does not rise.
    emprt = next(c for c in result.cells if c.metric == "emprt_complexity_rise")
    assert emprt.forced is None and abs(np.mean(emprt.values)) < 1e-3


def test_controls_are_scored_and_never_trusted(tmp_path):
    torch.manual_seed(0)
    model = TinyNet(smooth=True)
    images = images_for(model, n=6, size=16)
    explainers = [build_explainer({"name": "integrated_gradients", "n_steps": 16}),
                  build_explainer("saliency")]
    inp = audit_input(model, explainers, images, splits={"test": images, "train": images})
    specs = [{"name": "model_randomization", "independent": False},
             {"name": "faithfulness", "steps": 10, "road_percentages": [0.5],
              "infidelity_samples": 2, "sensitivity_samples": 0},
             {"name": "localization"}, {"name": "shortcut"}]
    summary = run_audits(inp, specs, RunDir(tmp_path).create(), n_images=6)
    assert len(summary["controls"]) == 5
    assert not any(is_control(m) for m in summary["trusted"])
    for label in summary["controls"]:
        assert "trusted —" not in summary["verdict_lines"][label], summary["verdict_lines"][label]
    # The random control passes model randomization (it is redrawn with the weights), as
    # Binder et al. found for noise: the verdict still rejects it.
    random_cells = [c for c in summary["scorecard"] if c["method"] == "control: random"
                    and c["audit"] == "model_randomization" and c["status"]]
    assert random_cells and {c["status"] for c in random_cells} <= {"pass", "inconclusive"}
    edge = [c for c in summary["scorecard"] if c["method"] == "control: edge"
            and c["metric"] == "cascade_head_spearman_abs"]
    assert edge[0]["status"] == "fail"  # an edge map does not change with the weights


def _one(method, audit, passed=True, higher=True):
    """A one-sample cell that passes (or fails) its threshold clearly on three images."""
    return Cell(method, audit, "m", np.array([0.9, 0.91, 0.92]), higher, None, "rule",
                threshold=(0.5 if passed else 0.95) if higher else (0.95 if passed else 0.5),
                check="superior")


def test_the_verdict_trusts_nobody_when_a_control_passes_everything():
    cells = [_one(m, a) for m in ("saliency", "control: edge")
             for a in ("model_randomization", "faithfulness")]
    a = assess(cells, ["saliency", "control: edge"])
    assert a.trusted == [] and "negative control (control: edge)" in verdict(a, None)


def test_a_method_must_pass_both_randomization_and_faithfulness():
    cells = [_one("a", "faithfulness"), _one("b", "faithfulness"),
             _one("b", "model_randomization", higher=False)]
    a = assess(cells, ["a", "b"])
    assert a.trusted == ["b"] and "a: undecided — passed no randomization check" in verdict(a, None)


def test_a_check_not_tested_never_counts_in_favour():
    cells = [_one("occlusion", "faithfulness"),
             Cell("occlusion", "model_randomization", "m", np.array([]), False, None, "r",
                  forced="not tested", note="too costly"),
             _one("saliency", "faithfulness"), _one("saliency", "model_randomization"),
             Cell("saliency", "localization", "m", np.array([0.2, 0.9, 0.4, 0.8]), True, None,
                  "r", threshold=0.5, check="superior")]
    a = assess(cells, ["occlusion", "saliency"])
    text = verdict(a, None)
    assert a.trusted == []
    assert "occlusion: undecided" in text and "too costly" in text
    # 1 of 2 for occlusion (the untested check counts as not passed), 2 of 3 for saliency.
    assert "Closest to trustworthy: saliency (2 of 3 checks)." in text


class ReLU6Net(TinyNet):
    def __init__(self):
        super().__init__()
        self.act1 = nn.ReLU6()


def test_a_refused_method_is_not_tested_and_the_others_are_audited(tmp_path):
    torch.manual_seed(0)
    model = ReLU6Net()
    images = images_for(model, n=4, size=16)
    inp = audit_input(model, [build_explainer("guided_backprop"), build_explainer("saliency")],
                      images)
    specs = [{"name": "model_randomization", "independent": False},
             {"name": "faithfulness", "steps": 4, "road_percentages": [0.5],
              "infidelity_samples": 0, "sensitivity_samples": 0}]
    summary = run_audits(inp, specs, RunDir(tmp_path).create(), n_images=4, controls=False)
    assert "ReLU6" in summary["not_tested"]["guided_backprop"]
    gbp = [c for c in summary["scorecard"] if c["method"] == "guided_backprop"]
    assert {c["audit"] for c in gbp} == {"model_randomization", "faithfulness"}
    assert {c["status"] for c in gbp} == {"not tested"} and "ReLU6" in gbp[0]["note"]
    assert any(c["method"] == "saliency" and c["status"] in ("pass", "fail", "inconclusive")
               for c in summary["scorecard"])
    assert "guided_backprop: undecided" in summary["verdict"]


class FirstBlackPixelNet(nn.Module):
    """Confident while every pixel is lit; any black pixel sends the score down at once (a
    defect whose signature is black: every deletion order scores alike)."""

    def forward(self, x):
        darkest = x.amin(dim=(1, 2, 3))
        return torch.stack([10 * darkest, torch.zeros_like(darkest)], dim=1)


def test_faithfulness_is_not_informative_when_any_deletion_collapses_the_score(tmp_path):
    model = FirstBlackPixelNet()
    g = torch.Generator().manual_seed(0)
    pixels = 0.5 + 0.5 * torch.rand(4, 3, 16, 16, generator=g)
    targets = torch.zeros(4, dtype=torch.long)
    images = AuditImages(x=pixels.clone(), pixels=pixels, labels=targets, preds=targets,
                         targets=targets, ids=[f"i{k}" for k in range(4)])
    inp = audit_input(model, [build_explainer("saliency")], images)
    result = faithfulness(inp, tmp_path, steps=20, road_percentages=[0.5], infidelity_samples=0,
                          sensitivity_samples=0)
    status = {c.metric: cell_status(c) for c in result.cells if c.method == "saliency"}
    assert status["deletion_auc"] == "not informative"
    assert "any ordering scores alike" in result.summary["not_informative"]["deletion_auc"]


def test_uninformative_known_answers():
    xs = np.linspace(0, 1, 21)
    assert uninformative(1 - xs, xs, 0.8) == ""  # linear decline: 5% does 5% of the change
    assert "scores alike" in uninformative(np.r_[1.0, np.full(20, 0.5)], xs, 0.8)
    assert "moves by" in uninformative(np.full(21, 0.7), xs, 0.8)


def test_deletion_baseline_is_configurable_and_checked(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    images = images_for(model, n=3, size=16)
    inp = audit_input(model, [build_explainer("saliency")], images)
    kw = {"steps": 4, "road_percentages": [0.5], "infidelity_samples": 0, "sensitivity_samples": 0}
    blur = faithfulness(inp, tmp_path, deletion_baseline="blur", **kw)
    black = faithfulness(inp, tmp_path, **kw)
    assert blur.summary["deletion_baseline"] == "blur" and "pixels by blur" in blur.text
    d_blur = [r["deletion_auc"] for r in blur.rows if r["method"] == "saliency"]
    d_black = [r["deletion_auc"] for r in black.rows if r["method"] == "saliency"]
    assert d_blur != d_black
    with pytest.raises(ConfigError, match="deletion_baseline: expected one of black, blur, mean"):
        faithfulness(inp, tmp_path, deletion_baseline="white", **kw)


def test_presets_and_their_audits():
    quick = [s["name"] for s in resolve_specs(None, "quick")]
    full = [s["name"] for s in resolve_specs(None, "full")]
    assert set(quick) < set(full) and "model_randomization" in quick and "faithfulness" in quick
    assert "convergence" not in quick and full.index("correctness") == len(full) - 1
    assert [s["name"] for s in resolve_specs([{"name": "convergence"}], "quick")] == ["convergence"]
    with pytest.raises(ConfigError, match="audit.preset: expected one of full, quick"):
        resolve_specs(None, "fast")


def test_control_maps_are_reproducible_and_the_random_ones_follow_the_weights():
    model = TinyNet()
    x = torch.rand(2, 3, 16, 16)
    ctx = audit_input(model, [], images_for(model, n=2)).ctx
    random, edge = control_explainers()[0], control_explainers()[2]
    a = random.attribute(model, x, torch.zeros(2, dtype=torch.long), ctx)
    assert torch.equal(a, random.attribute(model, x, torch.zeros(2, dtype=torch.long), ctx))
    other = TinyNet()
    b = random.attribute(other, x, torch.zeros(2, dtype=torch.long), ctx)
    assert not torch.equal(a, b)
    assert torch.equal(edge.attribute(model, x, None, ctx), edge.attribute(other, x, None, ctx))


def test_the_head_step_is_computed_once_for_cascading_and_independent(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    images = images_for(model, n=3, size=16)
    inp = audit_input(model, [build_explainer("saliency"), build_explainer("input_x_gradient")],
                      images)
    both = model_randomization(inp, tmp_path, independent=True)
    alone = model_randomization(audit_input(model, inp.explainers, images), tmp_path,
                                independent=False)
    head = {(r["method"], r["mode"], r["id"]): r["spearman_abs"] for r in both.rows if r["depth"] == 0}
    for method in ("saliency", "input_x_gradient"):
        for image_id in images.ids:
            assert head[(method, "cascading", image_id)] == head[(method, "independent", image_id)]
    # the shared copy is counted once: independent adds the other depths only
    steps = len(both.summary["cascade_steps"])
    assert both.model_evals == alone.model_evals * (2 * steps - 1) // steps


class _Slow(GradientExplainer):
    """A gradient whose every evaluation takes 50 ms: the costly method of the plan test."""

    name = "slow_gradient"

    def attribute(self, model, x, target, ctx):
        time.sleep(0.05 * len(x))
        return super().attribute(model, x, target, ctx)


class _ManyCheap(GradientExplainer):
    """100 quick forwards per image: many evaluations, each cheap."""

    name = "many_cheap"
    kind = "perturbation"

    def attribute(self, model, x, target, ctx):
        with torch.no_grad():
            for _ in range(100):
                model(x)
        return super().attribute(model, x, target, ctx)


def test_the_plan_prices_each_methods_evaluations_at_its_own_rate():
    """Model randomization leaves the 100-evaluation method out (max_method_evals), so its time
    is the slow method's: one global rate, dominated by the cheap evaluations, would put it
    at ~1/50 of that."""
    from xaudit.audit.plan import cost_plan
    from xaudit.audit.runner import refused_methods, resolve_specs

    torch.manual_seed(0)
    model = TinyNet()
    images = images_for(model, n=4, size=16)
    inp = audit_input(model, [_Slow(), _ManyCheap()], images)
    assert refused_methods(inp) == {}  # the one-image try that measures each method
    specs = resolve_specs([{"name": "model_randomization", "max_method_evals": 64}])
    plan = cost_plan(inp, specs, 4, [])
    entry = plan["audits"]["model_randomization"]
    steps = audit_params("model_randomization")["max_steps"] + 1
    assert entry["model_evals"] == 4 * steps  # the slow gradient only: one evaluation a map
    # at least the sleeps it will take (a lower bound: sleeping never takes less)
    assert entry["seconds"] >= 0.95 * 4 * steps * 0.05


def test_the_plan_prices_road_solves_which_are_no_model_evaluations(monkeypatch):
    """Faithfulness's ROAD fills cost time but no evaluation: the plan adds their timing, per
    image, scored map (the methods and its two own references), order and percentage set."""
    from xaudit.audit import faithfulness as faith
    from xaudit.audit.plan import cost_plan
    from xaudit.audit.runner import refused_methods, resolve_specs

    torch.manual_seed(0)
    model = TinyNet()
    images = images_for(model, n=4, size=16)
    inp = audit_input(model, [GradientExplainer()], images)
    assert refused_methods(inp) == {}
    specs = resolve_specs([{"name": "faithfulness", "road_percentages": [0.2, 0.5]}])
    timed = []

    from xaudit.audit import plan

    # the forward timing is measured per plan; fixed here so the two plans differ by ROAD only
    monkeypatch.setattr(plan, "_forward_seconds", lambda inp: 0.001)

    def plan_with_solves_of(seconds):
        monkeypatch.setattr(faith, "solve_seconds", lambda px, ps: timed.append(ps) or seconds)
        return cost_plan(inp, specs, 4, [])["audits"]["faithfulness"]["seconds"]

    free, priced = plan_with_solves_of(0.0), plan_with_solves_of(0.5)
    assert timed == [[0.2, 0.5]] * 2
    # 4 images × (1 method + the random and edge references) × 2 orders × 0.5 s = 12 s.
    assert priced - free == pytest.approx(12.0, abs=0.15)



def test_the_plan_counts_the_training_maps_the_shortcut_screen_reads(tmp_path):
    """The shortcut screen explains training images too: the plan's shared maps count the
    training pool that it then computes."""
    from xaudit.audit.plan import cost_plan
    from xaudit.audit.runner import refused_methods, resolve_specs

    torch.manual_seed(0)
    model = TinyNet()
    test, train = images_for(model, n=4, size=16), images_for(model, n=6, size=16, seed=1)
    inp = audit_input(model, [_ManyCheap()], test, splits={"test": test, "train": train})
    assert refused_methods(inp) == {}  # the try: one test map
    per_map = next(v for k, v in inp.cache.items() if isinstance(k, tuple) and k[0] == "maps").model_evals
    plan = cost_plan(inp, resolve_specs([{"name": "shortcut"}]), 3, [])
    # the test pool less the try's map, and the training pool (maps are made a pool at a time)
    assert plan["maps"]["model_evals"] == per_map * (4 - 1 + 6)
    only_test = cost_plan(inp, resolve_specs([{"name": "complexity"}]), 3, [])
    assert only_test["maps"]["model_evals"] == per_map * (4 - 1)
    AUDITS.get("shortcut")(inp, tmp_path, n_images=3)
    made = [k for k in inp.cache if isinstance(k, tuple) and k[0] == "maps"]
    assert sorted({k[2] for k in made}) == ["test", "train"]
    assert sum(k[2] == "train" for k in made) == 6


def test_each_audit_says_its_planned_cost_when_it_starts_and_what_it_took(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    images = images_for(model, n=4, size=16)
    lines = []
    summary = run_audits(audit_input(model, [GradientExplainer()], images),
                         [{"name": "model_randomization", "max_steps": 2}, {"name": "complexity"}],
                         RunDir(tmp_path / "run").create(), n_images=4, log=lines.append,
                         controls=False)
    planned = summary["plan"]["audits"]["model_randomization"]["model_evals"]
    start = next(ln for ln in lines if ln.startswith("audit 1/2 model_randomization"))
    assert start.startswith(f"audit 1/2 model_randomization — ~{planned:,} model evaluations, ~")
    assert "audit 2/2 complexity" in lines  # no estimate beyond the shared maps: no suffix
    spent = summary["cost"]["model_randomization"]["model_evals"]
    assert any(ln.startswith("audit model_randomization: ") and ln.endswith(f", {spent:,} model evaluations")
               for ln in lines)
