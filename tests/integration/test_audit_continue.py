"""An audit left undecided keeps its rounds, and `xaudit audit RUN --set audit.max_rounds=K`
continues from the images already audited rather than starting over."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.standins import tiny_demo
from xaudit.pipeline import Pipeline
from xaudit.recipe import load_recipe
from xaudit.run import RunDir

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = tiny_demo(
    6, "model.weights=IMAGENET1K_V1", "explain.select.per_class=1", "explain.methods=[{name: saliency}]",
    "audit.enabled=true", "audit.n_images=2", "audit.max_rounds=1",
    "audit.audits=[{name: model_randomization, max_steps: 2, independent: false}, "
    "{name: faithfulness, steps: 4, road_percentages: [0.5], infidelity_samples: 0, "
    "sensitivity_samples: 0}]",
)


@pytest.mark.heavy
def test_a_continued_audit_reloads_its_rounds(tmp_path):
    recipe = load_recipe(CONFIGS / "demo.yaml", ["name=cont", f"output_dir={tmp_path}", *TINY])
    Pipeline(recipe).run_stages()
    run = RunDir(recipe.run_dir)
    first = json.loads(run.summary_path.read_text(encoding="utf-8"))["audits"]
    assert first["states"]["saliency"] == "undecided", first["verdict_lines"]["saliency"]
    command = first["undecided"]["saliency"]["command"]
    assert command.startswith(f"xaudit audit {run.root} --set audit.max_rounds=")
    assert (run.root / "audit_state").is_dir()  # kept while the verdict is open

    lines: list[str] = []
    Pipeline.from_run_dir(run.root, ["audit.max_rounds=3"], log=lines.append).run_one("audit")
    kept = [line for line in lines if "already done, kept" in line]
    assert len(kept) == 2, lines  # round 1 of both audits reloaded, not recomputed
    after = json.loads(run.summary_path.read_text(encoding="utf-8"))["audits"]
    assert len(after["rounds"]["looks"]) > 1
    assert after["rounds"]["looks"][0]["ids"] == first["rounds"]["looks"][0]["ids"]
