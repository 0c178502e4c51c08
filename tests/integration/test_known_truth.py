"""Known truth end to end: a tiny demo run scores its stored maps against the lesions'
measured importance, writes the table and the summary entry, and the report shows them."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from tests.standins import tiny_demo
from xaudit.explain.engine import MapStore
from xaudit.pipeline import Pipeline
from xaudit.recipe import load_recipe
from xaudit.run import RunDir, read_csv
from xaudit.stages import truth as truth_stage

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# A 64-px demo with the packaged ImageNet weights: an untrained network's logits do not move
# when a lesion is removed, and every drop would tie.
TINY = [*tiny_demo(3, "audit.enabled=false", "evaluate.top_losses=0",
                   "explain.methods=[{name: saliency}, {name: grad_cam}]"),
        "data.synthetic.image_size=64", "model.image_size=64", "model.resize_size=64",
        "model.weights=IMAGENET1K_V1", "data.synthetic.n_train=8"]


def _run(folder: Path, name: str) -> RunDir:
    recipe = load_recipe(CONFIGS / "demo.yaml", [f"name={name}", f"output_dir={folder}", *TINY])
    Pipeline(recipe).run_stages()
    return RunDir(recipe.run_dir)


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> RunDir:
    return _run(tmp_path_factory.mktemp("runs"), "scored")


def _numbers(summary: dict) -> dict:
    """The summary without what differs between two identical runs (clock, memory)."""
    def strip(v):
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k != "seconds"}
        return [strip(x) for x in v] if isinstance(v, list) else v

    return strip({k: v for k, v in summary.items()
                  if k not in ("created", "name", "timing", "memory", "known_truth")})


def test_a_synthetic_run_scores_its_maps_against_the_known_truth(scored):
    run = scored
    summary = json.loads(run.summary_path.read_text(encoding="utf-8"))
    truth = summary["known_truth"]
    assert truth["images"] >= 3 and len(truth["image_ids"]) == truth["images"]
    assert set(truth["methods"]) == {"saliency", "grad_cam"} and len(truth["controls"]) == 5
    saliency = truth["methods"]["saliency"]
    assert saliency["n"] == truth["images"] and -1 <= saliency["score"] <= 1
    assert all(math.isfinite(v) for v in saliency["ci"])
    assert saliency["beats_best_control"] in ("yes", "no", "undecided")
    assert truth["best_control"] in truth["controls"]
    rows = {r["method"]: r for r in read_csv(run.table("known_truth"))}
    assert float(rows["saliency"]["truth_score"]) == pytest.approx(saliency["score"])
    assert rows[truth["best_control"]]["kind"] == "control"
    html = run.report_path.read_text(encoding="utf-8")
    start = html.index('<section id="known-truth">')
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html[start:html.index("</section>", start)]))
    assert "Known truth (synthetic data)" in text
    assert f"saliency {saliency['score']:.3f} [" in text and "(best control)" in text


def test_the_known_truth_changes_no_other_number_of_the_run(scored, tmp_path, monkeypatch):
    monkeypatch.setattr(truth_stage, "truth_stage", lambda *a, **k: None)
    plain = _run(tmp_path, "plain")
    a, b = (json.loads(r.summary_path.read_text(encoding="utf-8")) for r in (scored, plain))
    assert "known_truth" in a and "known_truth" not in b
    assert _numbers(a) == _numbers(b)
    for table in ("predictions", "explained_images"):
        assert read_csv(scored.table(table)) == read_csv(plain.table(table))
    for method in ("saliency", "grad_cam"):
        torch.testing.assert_close(MapStore(scored.maps, method).load()["maps"],
                                   MapStore(plain.maps, method).load()["maps"], rtol=0, atol=0)
