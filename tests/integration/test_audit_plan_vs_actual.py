"""The audit plan against what the audits then spend, on a folder run whose model makes wrong
predictions and whose explain stage already stored the audited images' maps (the case where a
reused map used to price its method at nothing)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.cli_runs import image_folder
from xaudit.pipeline import Pipeline
from xaudit.recipe import load_recipe
from xaudit.run import read_csv

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_each_audits_planned_evaluations_are_within_2x_of_what_it_spends(tmp_path):
    data = image_folder(tmp_path / "photos", classes=("a", "b"), n=15)
    recipe = load_recipe(CONFIGS / "demo.yaml", [
        "name=plan", f"output_dir={tmp_path / 'runs'}", "data.source=folder", f"data.path={data}",
        "data.splits={train: 0.4, val: 0.2, test: 0.4}", "model.weights=none",
        "model.image_size=32", "model.resize_size=32", "train.epochs=1", "train.batch_size=8",
        "explain.methods=[{name: saliency}, {name: integrated_gradients, n_steps: 8}]",
        "explain.select.per_class=6", "explain.select.correct=any",
        "audit.audits=[{name: model_randomization, max_steps: 2}, {name: faithfulness, steps: 8}, "
        "{name: complexity}]",
        "audit.n_images=4", "audit.max_rounds=1", "audit.controls=false"])
    Pipeline(recipe).run_stages()
    run = recipe.run_dir
    predictions = read_csv(run / "tables" / "predictions.csv")
    assert any(row["correct"] in ("False", "0", "false") for row in predictions)  # wrong ones too
    audits = json.loads((run / "summary.json").read_text(encoding="utf-8"))["audits"]
    assert audits["reused_maps"]  # the audited images' maps came from the explain stage
    plan, spent = audits["plan"]["audits"], audits["cost"]
    for name in ("model_randomization", "faithfulness"):
        planned, actual = plan[name]["model_evals"], spent[name]["model_evals"]
        assert actual > 0 and actual / 2 <= planned <= 2 * actual, (name, planned, actual)
    assert plan["complexity"]["model_evals"] == spent["complexity"]["model_evals"] == 0
