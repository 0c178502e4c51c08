"""The audits judge the maps the report shows: the explain stage's stored maps are reused for
the images both stages see, and every other map goes through the explain engine with the
recipe's execution settings (here bf16)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from xaudit.audit.complexity import sparseness
from xaudit.data.base import Record
from xaudit.explain import build_explainer
from xaudit.explain.base import context_for
from xaudit.explain.engine import MapStore, explain_records
from xaudit.explain.fastpath import FastPath
from xaudit.pipeline import Pipeline
from xaudit.recipe import load_recipe

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = [
    "data.synthetic.n_train=6", "data.synthetic.n_val=2", "data.synthetic.n_test=6",
    "data.synthetic.image_size=64", "model.image_size=64", "model.resize_size=64",
    "model.weights=none", "train.epochs=1", "train.batch_size=8", "explain.select.per_class=1",
    "explain.methods=[{name: saliency}, {name: gradient_shap, n_samples: 4}]",
    "explain.precision=bf16", "audit.audits=[{name: complexity}]", "audit.n_images=4",
    "audit.controls=false",
]


def rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_audits_reuse_the_stored_maps_and_compute_the_rest_with_the_recipes_precision(tmp_path):
    recipe = load_recipe(CONFIGS / "demo.yaml", ["name=engine", f"output_dir={tmp_path}", *TINY])
    pipe = Pipeline(recipe)
    pipe.run_stages()
    run = recipe.run_dir
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    explained = {r["id"] for r in rows(run / "tables" / "explained_images.csv")}
    audited = rows(run / "tables" / "audit_complexity.csv")
    pool = {r["id"] for r in audited}
    shared, fresh = sorted(pool & explained), sorted(pool - explained)
    assert shared and fresh  # the wrong predictions are in both; the pool has others too
    assert summary["audits"]["reused_maps"] == 2 * len(shared)

    # reused: the audit's value is the stored map's, to the last bit
    for label in ("saliency", "gradient_shap"):
        stored = MapStore(run / "maps", label).load(shared)["maps"]
        got = {r["id"]: float(r["sparseness"]) for r in audited if r["method"] == label}
        for i, image_id in enumerate(shared):
            assert got[image_id] == float(sparseness(stored[i][None])[0])

    # computed: through the engine in bf16, as the explain stage would have; not the fp32 map
    clf, store = pipe.classifier(), pipe.store()
    by_id = {rec.id: rec for rec in pipe.dataset().splits["test"]}
    records: list[Record] = [by_id[i] for i in fresh]
    preds = {r["id"]: int(r["pred_idx"]) for r in rows(run / "tables" / "predictions.csv")}
    got = {r["id"]: float(r["sparseness"]) for r in audited if r["method"] == "saliency"}
    for precision in ("bf16", "fp32"):
        maps = MapStore(tmp_path / precision, "saliency")
        explain_records(clf.module, build_explainer("saliency"), records, [preds[i] for i in fresh],
                        lambda rs: clf.preprocessing.normalize(store.batch(rs)),
                        context_for(clf, torch.Generator().manual_seed(recipe.seed + 1)), maps, 4,
                        4, torch.device("cpu"), fast=FastPath(precision=precision))
        values = sparseness(maps.load(fresh)["maps"])
        want = np.array([got[i] for i in fresh])
        if precision == "bf16":
            np.testing.assert_allclose(want, values, rtol=1e-5)
        else:
            assert np.abs(want - values).max() > 1e-4
