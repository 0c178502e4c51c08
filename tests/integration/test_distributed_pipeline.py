"""`xaudit run` under torchrun (2 gloo processes on CPU) gives the results of one process."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from tests.helpers.cli_runs import env, needs_offline, torchrun
from tests.helpers.synthetic_runs import AUDIT_RUN, cli_args, comparable, table_without_timing
from xaudit.explain.engine import MapStore

METHODS = ["explain.methods=[{name: saliency}, {name: integrated_gradients, n_steps: 8}, "
           "{name: occlusion, window: 16, stride: 16}]", "explain.select.per_class=2"]


@pytest.mark.heavy
@needs_offline
def test_torchrun_two_ranks_match_one_process(tmp_path: Path):
    one = subprocess.run(cli_args(tmp_path, "one", [*AUDIT_RUN, *METHODS]), env=env(),
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(torchrun(cli_args(tmp_path, "two", [*AUDIT_RUN, *METHODS])), env=env(),
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "(2 processes)" in two.stderr
    a_run, b_run = tmp_path / "one", tmp_path / "two"
    a, b = (json.loads((r / "summary.json").read_text()) for r in (a_run, b_run))

    # explain: each rank wrote its own chunks; the merged maps are those of one process
    ids = [row["id"] for row in _rows(a_run / "tables" / "explained_images.csv")]
    assert len(ids) >= 6
    for label in ("saliency", "integrated_gradients", "occlusion_w16"):
        files = {c["file"] for c in MapStore(b_run / "maps", label).index()["chunks"]}
        assert any("rank0" in f for f in files) and any("rank1" in f for f in files), files
        ma, mb = MapStore(a_run / "maps", label).load(ids), MapStore(b_run / "maps", label).load(ids)
        torch.testing.assert_close(ma["maps"], mb["maps"], rtol=1e-5, atol=1e-6)
        assert torch.equal(ma["targets"], mb["targets"])
        ea, eb = a["explanations"][label], b["explanations"][label]
        # Evaluations add up over the ranks. The two shards make one batch more than the single
        # process: IG's shared baseline costs 1 per batch; occlusion's check of the incremental
        # path 12 per batch, and its trace of the model's stages 1 per process.
        assert eb["ranks"] == 2 and ea["model_evals"] > 0
        extra = {"saliency": 0, "integrated_gradients": 1, "occlusion_w16": 12 + 1}[label]
        assert eb["model_evals"] - ea["model_evals"] == extra

    # audit: the ranks shared the audits out; tables, scorecard and verdict are the same
    claimed = [line for line in two.stderr.splitlines() if "already done, kept" in line and "audit " in line]
    assert claimed, "rank 0 reloaded no audit: the other rank ran none"
    tables = sorted(p.name for p in (a_run / "tables").glob("audit_*.csv"))
    assert len(tables) == 7 and tables == sorted(p.name for p in (b_run / "tables").glob("audit_*.csv"))
    for name in [*tables, "scorecard.csv"]:
        assert table_without_timing(a_run / "tables" / name) == table_without_timing(b_run / "tables" / name), name
    assert comparable(a["audits"], a_run) == comparable(b["audits"], b_run)
    # round results are kept only while a verdict is open (a later run continues from them)
    assert (b_run / "audit_state").exists() == bool(b["audits"].get("undecided"))
    assert (b_run / "report.html").is_file()


def _rows(path: Path) -> list[dict]:
    import csv

    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
