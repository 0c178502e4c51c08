"""Tiny synthetic runs through the real CLI, and their results compared without timings:
shared by the resume and the multi-process tests."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from tests.helpers.cli_runs import ROOT

TINY = [
    "data.synthetic.n_train=6", "data.synthetic.n_val=2", "data.synthetic.n_test=8",
    "data.synthetic.image_size=64", "model.image_size=64", "model.resize_size=64",
    "train.epochs=2", "audit.enabled=false", "explain.select.all=true", "explain.chunk_size=2",
    "explain.batch_size=2",
    "explain.methods=[{name: integrated_gradients, n_steps: 24}, {name: occlusion, window: 8, stride: 4}]",
]


def cli_args(out: Path, name: str, extra: list[str] = ()) -> list[str]:
    args = [sys.executable, "-m", "xaudit.cli", "run", str(ROOT / "configs" / "demo.yaml"),
            "--set", f"output_dir={out}", "--set", f"name={name}"]
    for s in [*TINY, *extra]:
        args += ["--set", s]
    return args


AUDITS = ("[{name: convergence, steps: [4, 8]}, {name: model_randomization, max_steps: 2}, "
          "{name: label_randomization}, {name: faithfulness, steps: 4, road_percentages: [0.5], "
          "infidelity_samples: 2, sensitivity_samples: 0}, {name: localization}, {name: shortcut}, "
          "{name: correctness}]")


AUDIT_RUN = [
    "data.synthetic.n_test=4", "explain.select.all=false", "explain.select.per_class=1",
    "explain.methods=[{name: saliency}, {name: integrated_gradients, n_steps: 8}]",
    "audit.enabled=true", "audit.n_images=3", f"audit.audits={AUDITS}",
]


def comparable(audits: dict, run: Path) -> dict:
    """A summary's audits without timings and without the cost plan (an estimate priced from
    measured costs: the explain stage's evaluations differ between one process and two ranks
    by construction), the run folder's path (in the commands that would continue an open
    verdict) written as RUN."""
    audits = {k: v for k, v in audits.items() if k != "plan"}
    return json.loads(json.dumps(_without_seconds(audits)).replace(str(run), "RUN"))


def _without_seconds(obj):
    if isinstance(obj, dict):
        return {k: _without_seconds(v) for k, v in obj.items() if "seconds" not in k}
    if isinstance(obj, list):
        return [_without_seconds(v) for v in obj]
    return obj


def table_without_timing(path: Path) -> tuple[list[str], list[list[str]]]:
    """Columns and rows without timing columns (seconds): everything else is compared exactly."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    columns = [c for c in (rows[0] if rows else {}) if "seconds" not in c]
    return columns, [[r[c] for c in columns] for r in rows]
