"""The highest-loss test images get one method's map of the predicted class: maps of images
the explain stage already has are reused, the others computed and stored; every map is
checked against autograd on the model the run saved, and the report shows the figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.standins import tiny_demo
from xaudit import Classifier
from xaudit.errors import XauditError
from xaudit.pipeline import Pipeline
from xaudit.recipe import load_recipe
from xaudit.report.explorer import load_maps
from xaudit.run import RunDir, read_csv

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = tiny_demo(
    3, "audit.enabled=false",
    "explain.select.per_class=1", "explain.select.correct=any", "evaluate.top_losses=4",
    "explain.methods=[{name: saliency}, {name: input_x_gradient}]",
)


def _saliency(clf: Classifier, pipe: Pipeline, ids: list[str], targets: list[int]):
    by_id = {rec.id: rec for rec in pipe.dataset().splits["test"]}
    x = clf.preprocessing.normalize(pipe.store().batch([by_id[i] for i in ids])).requires_grad_()
    clf.module.eval()(x)[torch.arange(len(ids)), targets].sum().backward()
    return x.grad.abs().sum(1).numpy()


def test_top_losses_get_maps_of_the_predicted_class(tmp_path):
    recipe = load_recipe(CONFIGS / "demo.yaml", ["name=worst", f"output_dir={tmp_path}", *TINY])
    pipe = Pipeline(recipe)
    pipe.run_stages()
    run = RunDir(recipe.run_dir)
    worst = read_csv(run.table("top_losses"))
    explained = {r["id"] for r in pipe.explained_rows()}
    ids = [r["id"] for r in worst]
    rest = [i for i in ids if i not in explained]
    assert len(ids) == 4 and rest and len(rest) < 4  # some reused, some computed
    summary = json.loads(run.summary_path.read_text(encoding="utf-8"))
    # No grad_cam in the recipe: the first method
    assert summary["explanations_top_losses"] == {"method": "saliency", "n_images": 4,
                                                  "reused": 4 - len(rest)}
    clf = Classifier.from_run(run.root)
    classes = clf.classes
    pred = {r["id"]: classes.index(r["pred"]) for r in worst}
    computed, targets = load_maps(run, "saliency", rest, run.top_losses_maps)
    assert targets.tolist() == [pred[i] for i in rest]
    expected = _saliency(clf, pipe, rest, [pred[i] for i in rest])
    assert abs(computed - expected).max() <= 1e-5 * abs(expected).max()
    assert run.figure("top_losses_maps").is_file()
    assert "top_losses_maps.png" in run.report_path.read_text(encoding="utf-8")


def test_an_unknown_top_losses_method_fails_before_any_work(tmp_path):
    recipe = load_recipe(CONFIGS / "demo.yaml", ["name=bad", f"output_dir={tmp_path}", *TINY,
                                                 "explain.top_losses_method=grad_cam"])
    pipe = Pipeline(recipe)
    with pytest.raises(XauditError, match="top_losses_method: 'grad_cam' is not one of the recipe's "
                                          "methods. Allowed: saliency, input_x_gradient"):
        pipe.run_stages()
    assert not RunDir(recipe.run_dir).maps.exists() or not any(RunDir(recipe.run_dir).maps.iterdir())
