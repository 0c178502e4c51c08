"""A wrongly predicted explained image gets each method's map of its true class too (stored
beside the predicted class's, shown in the explorer); the map is the gradient of the true
class's score, checked against autograd on the model the run saved."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.standins import tiny_demo
from xaudit import Classifier
from xaudit.pipeline import Pipeline
from xaudit.recipe import load_recipe
from xaudit.report.explorer import explorer_payload, load_maps
from xaudit.run import RunDir

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = tiny_demo(
    3, "explain.select.all=true",
    "audit.enabled=false", "explain.methods=[{name: saliency}]",
)


def test_wrong_predictions_get_the_true_class_map(tmp_path):
    recipe = load_recipe(CONFIGS / "demo.yaml", ["name=truth", f"output_dir={tmp_path}", *TINY])
    pipe = Pipeline(recipe)
    pipe.run_stages()
    run = RunDir(recipe.run_dir)
    rows = pipe.explained_rows()
    wrong = [r for r in rows if not r["correct"]]
    assert wrong and len(wrong) < len(rows)  # an untrained model on 9 images: some of each
    summary = json.loads(run.summary_path.read_text(encoding="utf-8"))
    assert summary["explanations_true_class"] == {"saliency": len(wrong)}
    ids = [r["id"] for r in wrong]
    maps, targets = load_maps(run, "saliency", ids, run.true_class_maps)
    assert targets.tolist() == [r["true_idx"] for r in wrong]

    # Oracle: |d score[true] / d x| summed over channels, on the saved model.
    clf = Classifier.from_run(run.root)
    by_id = {rec.id: rec for rec in pipe.dataset().splits["test"]}
    x = clf.preprocessing.normalize(pipe.store().batch([by_id[i] for i in ids])).requires_grad_()
    scores = clf.module.eval()(x)
    scores[torch.arange(len(ids)), targets.tolist()].sum().backward()
    expected = x.grad.abs().sum(1).numpy()
    assert abs(maps - expected).max() <= 1e-5 * abs(expected).max()
    predicted, _ = load_maps(run, "saliency", ids)
    assert abs(maps - predicted).max() > 1e-3 * abs(expected).max()  # another class's map

    payload = explorer_payload(run, summary, originals=lambda run, summary, ids: {})
    with_truth = {im["id"] for im in payload["images"] if im["tm"]}
    assert with_truth == set(ids)
