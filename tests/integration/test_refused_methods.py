"""A method that refuses the model (guided backprop on MobileNetV2's ReLU6) is left out of
the explain stage with its reason; the other methods' maps, the audits and the report go on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.standins import tiny_demo
from xaudit.errors import XauditError
from xaudit.pipeline import Pipeline
from xaudit.recipe import load_recipe

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = tiny_demo(
    2, "explain.select.per_class=1",
    "audit.audits=[{name: complexity}]", "audit.n_images=3", "audit.controls=false",
)


def test_a_refused_method_is_left_out_and_the_run_goes_on(tmp_path):
    recipe = load_recipe(CONFIGS / "demo.yaml", [
        "name=refused", f"output_dir={tmp_path}", *TINY,
        "explain.methods=[{name: saliency}, {name: guided_backprop}]"])
    Pipeline(recipe).run_stages()
    run = recipe.run_dir
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert list(summary["explanations"]) == ["saliency"]
    assert "ReLU6" in summary["explanations_refused"]["guided_backprop"]
    cells = {(c["method"], c["status"]) for c in summary["audits"]["scorecard"]}
    assert ("guided_backprop", "not tested") in cells
    assert not list(run.glob("figures/*guided_backprop*"))
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "Not explained" in html and "guided_backprop</code>: guided_backprop guides" in html


def test_every_method_refused_is_one_error(tmp_path):
    recipe = load_recipe(CONFIGS / "demo.yaml", [
        "name=all-refused", f"output_dir={tmp_path}", *TINY, "audit.enabled=false",
        "explain.methods=[{name: guided_backprop}, {name: deconvolution}]"])
    with pytest.raises(XauditError, match="every method refused this model: guided_backprop guides"):
        Pipeline(recipe).run_stages()
