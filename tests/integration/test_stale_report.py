"""A report says when its stages are stale against the run folder's recipe.yaml, and a stage
re-run with --set values records them there, so that it is not undone by the next `xaudit run`
(which re-runs what the new values made stale)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.standins import tiny_demo
from xaudit.pipeline import Pipeline
from xaudit.recipe import load_recipe
from xaudit.report import render_report
from xaudit.report.notices import notices
from xaudit.run import RunDir

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = tiny_demo(
    2, "explain.select.per_class=1",
    "explain.methods=[{name: saliency}]", "audit.enabled=false",
)


def warnings_of(run: RunDir) -> list[str]:
    return notices(run, json.loads(run.summary_path.read_text(encoding="utf-8")))


@pytest.mark.heavy
def test_stale_stages_are_named_and_a_set_rerun_is_recorded_in_the_recipe(tmp_path):
    recipe = load_recipe(CONFIGS / "demo.yaml", ["name=stale", f"output_dir={tmp_path}", *TINY])
    Pipeline(recipe).run_stages()
    run = RunDir(recipe.run_dir)
    assert warnings_of(run) == []

    # `xaudit explain RUN --set ...`: the folder's recipe now says what made its maps
    Pipeline.from_run_dir(run.root, ["explain.methods=[{name: grad_cam}]"]).run_one("explain")
    saved = yaml.safe_load(run.recipe_path.read_text(encoding="utf-8"))
    assert [m["name"] for m in saved["explain"]["methods"]] == ["grad_cam"]
    # ... and the audit, which judged the methods recipe.yaml named before, is stale
    assert [w[:40] for w in warnings_of(run)] == ["Stale: the audit stage was run with othe"]
    finished = run.manifest()["stages"]["explain"]["finished"]
    Pipeline.from_run_dir(run.root).run_stages()  # a later `xaudit run`: grad_cam's maps are kept
    assert run.manifest()["stages"]["explain"]["finished"] == finished
    assert warnings_of(run) == []

    # recipe.yaml edited by hand: the stages it changes are stale until they re-run
    saved["explain"]["methods"] = [{"name": "saliency"}]
    saved["evaluate"]["top_losses"] = 3
    run.recipe_path.write_text(yaml.safe_dump(saved, sort_keys=False), encoding="utf-8")
    stale = [w for w in warnings_of(run) if w.startswith("Stale")]
    assert len(stale) == 1 and stale[0].startswith("Stale: the evaluate, explain, audit stages were run")
    render_report(run.root)
    assert "Stale: the evaluate, explain, audit stages" in run.report_path.read_text(encoding="utf-8")

    run.recipe_path.write_text("explain: [unclosed\n", encoding="utf-8")
    assert any(w.startswith("Not checked against its recipe: recipe.yaml does not load")
               for w in warnings_of(run))
