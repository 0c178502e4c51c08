"""The audited images the explain stage did not explain: their maps kept by the audit stage
and read back by the report's explorer, exactly the maps the audits scored."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import torch

from xaudit.audit.types import Maps
from xaudit.explain.engine import MapStore
from xaudit.report.explorer import load_maps
from xaudit.run import RunDir
from xaudit.stages.audit import _keep_audited_maps


def _inp(ids: list[str], cached: list[str], labels=("a", "b")):
    gen = torch.Generator().manual_seed(0)
    cache = {("maps", lab, "test", i): Maps(torch.randn(1, 1, 4, 4, generator=gen), 0.0, 0.0)
             for lab in labels for i in cached}
    test = SimpleNamespace(ids=ids, targets=torch.arange(len(ids)))
    return SimpleNamespace(splits={"test": test}, cache=cache,
                           explainers=[SimpleNamespace(label=lab) for lab in labels])


def test_the_audited_maps_not_explained_are_kept_as_the_audits_had_them(tmp_path):
    run = RunDir(tmp_path)
    ids = ["x0", "x1", "x2", "x3"]
    MapStore(run.maps, "a").write_chunk(["x0"], torch.zeros(1, 4, 4), torch.zeros(1), None)
    inp = _inp(ids, cached=["x0", "x1", "x3"])  # x2: reloaded, no map in this process
    _keep_audited_maps(inp, run, ids)
    assert MapStore(run.audited_maps, "a").done_ids() == {"x1", "x3"}  # x0 is explained
    assert MapStore(run.audited_maps, "b").done_ids() == {"x0", "x1", "x3"}
    maps, targets = load_maps(run, "a", ["x3", "x1"], run.audited_maps)
    want = np.stack([inp.cache[("maps", "a", "test", i)].maps[0].numpy() for i in ("x3", "x1")])
    assert np.array_equal(maps, want) and targets.tolist() == [3, 1]
    # a later audit of other images replaces them, leaving none of the earlier ones
    _keep_audited_maps(_inp(ids, cached=["x2"]), run, ["x2"])
    assert MapStore(run.audited_maps, "a").done_ids() == {"x2"}


def test_the_explorer_says_which_audited_images_it_cannot_show(tmp_path):
    import shutil

    from tests.browser.synthetic_run import AUDITED_ONLY, write_run
    from xaudit.report.explorer import explorer_payload
    from xaudit.report.html import build_context

    root = write_run(tmp_path / "run", n_test=12)
    full = build_context(root)["explorer"]
    assert full["n"] == 12 and full["note"] is None
    # One method without maps of the audited images (decided in an earlier round): the images
    # stay, each with the maps it has, and no map of that method.
    shutil.rmtree(root / "maps_audited" / "saliency")
    summary = json.loads((root / "summary.json").read_text())
    payload = explorer_payload(RunDir(root), summary, originals=lambda *a: {})
    extra = [im for im in payload["images"] if im["audited_only"]]
    assert len(payload["images"]) == 12 and len(extra) == AUDITED_ONLY
    assert all("saliency" not in im["m"] and "integrated_gradients" in im["m"] for im in extra)
    shutil.rmtree(root / "maps_audited")  # no map of them at all: left out, and said so
    short = build_context(root)["explorer"]
    assert short["n"] == 12 - AUDITED_ONLY
    assert short["note"].startswith(f"{AUDITED_ONLY} audited images are not in the explorer")


def test_the_localization_figure_gives_way_to_the_explorer_holding_its_images(tmp_path):
    import json

    from tests.browser.synthetic_run import write_run
    from xaudit.report import figures as F
    from xaudit.report import render_report

    root = write_run(tmp_path / "run", n_test=12)
    F.confusion_matrix(np.eye(3, dtype=int), ["a", "b", "c"], root / "figures/audit_localization.png")
    summary = json.loads((root / "summary.json").read_text())
    summary["audits"]["sections"] = [{"title": "Localization", "figures": ["audit_localization.png"]}]
    (root / "summary.json").write_text(json.dumps(summary))
    html = render_report(root).read_text(encoding="utf-8")
    assert "<h3>Localization</h3>" in html and 'alt="audit_localization.png"' not in html
