"""Nothing lost, nothing redone, nothing different: kill -9 and resume, determinism, escaping."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import class_image, write_png
from tests.helpers.cli_runs import ROOT, env, needs_offline
from tests.helpers.synthetic_runs import AUDIT_RUN, cli_args, comparable, table_without_timing


def chunk_bytes(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted((run / "maps").rglob("*.safetensors"))}


@pytest.mark.heavy
@needs_offline
def test_kill_9_during_explain_then_resume_matches_uninterrupted_run(tmp_path):
    ref = subprocess.run(cli_args(tmp_path, "ref"), env=env(), capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr
    proc = subprocess.Popen(cli_args(tmp_path, "killed"), env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    index = tmp_path / "killed" / "maps" / "integrated_gradients" / "index.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if index.is_file() and len(json.loads(index.read_text())["chunks"]) >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {c["file"]: (index.parent / c["file"]).stat().st_mtime_ns
                   for c in json.loads(index.read_text())["chunks"]}
    assert 1 <= len(done_before) < 4
    res = subprocess.run(cli_args(tmp_path, "killed"), env=env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "train: already done, kept" in res.stderr
    for name, mtime in done_before.items():  # finished chunks were not redone
        assert (index.parent / name).stat().st_mtime_ns == mtime
    ref_maps = _maps_by_id(tmp_path / "ref")
    new_maps = _maps_by_id(tmp_path / "killed")
    assert ref_maps.keys() == new_maps.keys()
    for key in ref_maps:
        assert np.array_equal(ref_maps[key], new_maps[key]), key
    a = json.loads((tmp_path / "ref" / "summary.json").read_text())
    b = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert a["test"] == b["test"]


def _maps_by_id(run: Path) -> dict[tuple[str, str], np.ndarray]:
    from xaudit.explain.engine import MapStore

    out = {}
    for label in ("integrated_gradients", "occlusion_w8"):
        data = MapStore(run / "maps", label).load()
        for i, rid in enumerate(data["ids"]):
            out[(label, rid)] = data["maps"][i].numpy()
    return out


@pytest.mark.heavy
@needs_offline
def test_two_runs_are_byte_identical(tmp_path):
    for name in ("a", "b"):
        res = subprocess.run(cli_args(tmp_path, name), env=env(), capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr
    a, b = tmp_path / "a", tmp_path / "b"
    for rel in ("model/model.safetensors", "tables/predictions.csv", "tables/explained_images.csv",
                "tables/confusion_matrix.csv", "tables/metrics_per_class.csv"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    # the training history differs only in its wall-clock column
    strip = lambda p: [line.rsplit(",", 1)[0] for line in p.read_text().splitlines()]  # noqa: E731
    assert strip(a / "tables/history.csv") == strip(b / "tables/history.csv")
    assert chunk_bytes(a) == chunk_bytes(b)
    summary = json.loads((a / "summary.json").read_text())
    assert summary["seed"] == 0 and {"python", "torch", "torchvision", "captum"} <= set(summary["versions"])


def test_class_name_with_html_is_escaped_in_the_report(tmp_path):
    rng = np.random.default_rng(0)
    evil = "<img src=x onerror=alert(1)>"
    root = tmp_path / "imgs"
    for label, cls in enumerate([evil, "plain"]):
        for i in range(6):
            write_png(root / cls / f"{i}.png", class_image(label, rng, 16))
    args = [sys.executable, "-m", "xaudit.cli", "run", str(ROOT / "configs" / "demo.yaml"),
            "--set", f"output_dir={tmp_path}", "--set", "name=x", "--set", "data.source=folder",
            "--set", f"data.path={root}", "--set", "model.weights=none", "--set", "model.image_size=32",
            "--set", "model.resize_size=32", "--set", "train.epochs=1", "--set", "audit.enabled=false",
            "--set", "explain.methods=[{name: saliency}]"]
    res = subprocess.run(args, env=env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    html = (tmp_path / "x" / "report.html").read_text()
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert evil not in html
    figures = [p.name for p in (tmp_path / "x" / "figures").iterdir()]
    assert all("<" not in f and ">" not in f and "/" not in f for f in figures)


def audit_args(out: Path, name: str) -> list[str]:
    # one round: the kill lands in a round's audits; later rounds would rewrite merged tables
    return cli_args(out, name, [*AUDIT_RUN, "audit.max_rounds=1"])


@pytest.mark.heavy
@needs_offline
def test_kill_9_during_audit_then_resume_keeps_finished_audits_and_matches(tmp_path):
    ref = subprocess.run(audit_args(tmp_path, "ref"), env=env(), capture_output=True,
                         text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "killed"
    state = run / "audit_state"
    proc = subprocess.Popen(audit_args(tmp_path, "killed"), env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if state.is_dir() and any(state.glob("*.json")):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(p.stem for p in state.glob("*.json"))
    assert 1 <= len(done) < 7, done
    assert "audits" not in json.loads((run / "summary.json").read_text())  # the stage had not finished
    kept = {}
    for name in done:
        saved = json.loads((state / f"{name}.json").read_text())
        figures = [run / "figures" / f for f in saved["result"]["figures"]]
        paths = [run / "tables" / f"audit_{name}.csv", *figures]
        kept.update({p: p.stat().st_mtime_ns for p in paths if p.is_file()})
    assert kept

    res = subprocess.run(audit_args(tmp_path, "killed"), env=env(), capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    for stage in ("train", "evaluate", "explain"):
        assert f"{stage}: already done, kept" in res.stderr
    for name in done:  # finished audits were reloaded, not recomputed
        assert f"audit {name}: already done, kept" in res.stderr
    for path, mtime in kept.items():
        assert path.stat().st_mtime_ns == mtime, path
    summary = json.loads((run / "summary.json").read_text())
    # saved results are removed once the stage has finished, unless a verdict is still open
    assert state.exists() == bool(summary["audits"]["undecided"])

    # The same results as the uninterrupted run: every table byte for byte except timing
    # columns (seconds).
    ref_tables = sorted(p.name for p in (tmp_path / "ref" / "tables").glob("audit_*.csv"))
    assert ref_tables == sorted(p.name for p in (run / "tables").glob("audit_*.csv"))
    assert len(ref_tables) == 7
    for name in [*ref_tables, "scorecard.csv"]:
        a, b = tmp_path / "ref" / "tables" / name, run / "tables" / name
        if a.read_bytes() != b.read_bytes():
            assert table_without_timing(a) == table_without_timing(b), name
    a = json.loads((tmp_path / "ref" / "summary.json").read_text())["audits"]
    b = json.loads((run / "summary.json").read_text())["audits"]
    assert comparable(a, tmp_path / "ref") == comparable(b, run)
    assert a["cost"]["maps"]["model_evals"] == b["cost"]["maps"]["model_evals"] > 0


def test_saved_audit_results_round_trip_exactly():
    from xaudit.audit import AuditResult, Cell
    from xaudit.audit.checkpoint import _decode, _encode

    cell = Cell("ig", "faithfulness", "auc", np.array([0.1, np.nan, np.inf], np.float32), True,
                np.bool_(True), "rule", 1.5, 7)
    result = AuditResult(
        "faithfulness", "T", "text", [{"id": "a", "v": np.float32(0.1), "w": 0.1, "n": 3, "x": None}],
        [cell], ["f.png"], {"per_image": {("ig", 2): [float("nan"), -float("inf")]}, "ok": False}, 2.0, 9,
    )
    encoded = json.loads(json.dumps(_encode(result.__dict__), allow_nan=False))
    back = _decode(encoded)
    assert back["rows"] == result.rows and type(back["rows"][0]["v"]) is np.float32
    c = back["cells"][0]
    assert c.values.dtype == np.float32 and np.array_equal(c.values, cell.values, equal_nan=True)
    assert type(c.passed) is np.bool_ and (c.seconds, c.model_evals) == (1.5, 7)
    assert list(back["summary"]["per_image"]) == [("ig", 2)]
    nan, neg_inf = back["summary"]["per_image"][("ig", 2)]
    assert np.isnan(nan) and neg_inf == -np.inf


def _tiny_folder_args(tmp_path: Path) -> list[str]:
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for label, cls in enumerate(["a", "b"]):
        for i in range(6):
            write_png(root / cls / f"{i}.png", class_image(label, rng, 16))
    args = ["xaudit", "run", str(ROOT / "configs" / "demo.yaml")]
    for s in (f"output_dir={tmp_path}", "name=full", "data.source=folder", f"data.path={root}",
              "model.weights=none", "model.image_size=32", "model.resize_size=32", "train.epochs=1",
              "audit.enabled=false", "explain.methods=[{name: saliency}]"):
        args += ["--set", s]
    return args


def _run_main(monkeypatch, capsys, argv: list[str]) -> tuple[int, str]:
    from xaudit import cli

    monkeypatch.setattr(sys, "argv", argv)
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def test_full_disk_is_one_line_and_leaves_finished_work_intact(tmp_path, monkeypatch, capsys):
    import errno

    from xaudit import run as run_module

    real_write = run_module._write_file
    fail_on = {"name": ""}

    def full_disk(path: Path, data: bytes) -> None:
        if Path(path).name.startswith(f".{fail_on['name']}."):
            with open(path, "wb") as fh:  # part of the data got out, then the disk was full
                fh.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(path, data)

    monkeypatch.setattr(run_module, "_write_file", full_disk)
    args = _tiny_folder_args(tmp_path)
    run = tmp_path / "full"

    # 1. The disk fills up in the explain stage, on a new file.
    fail_on["name"] = "explained_images.csv"
    code, err = _run_main(monkeypatch, capsys, args)
    assert code == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    target = run / "tables" / "explained_images.csv"
    assert errors == [f"error: cannot write {target}: no space left on the device"], err
    assert "hint: free some space" in err
    assert not target.exists()  # no half-written file under the real name
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]  # nor a temporary one
    manifest = json.loads((run / "manifest.json").read_text())
    assert set(manifest["stages"]) == {"train", "evaluate"}  # finished stages are intact
    assert json.loads((run / "summary.json").read_text())["test"]["n"] > 0
    model_bytes = (run / "model" / "model.safetensors").read_bytes()
    predictions = (run / "tables" / "predictions.csv").read_bytes()

    # 2. Full again, now while replacing a file that exists: the old version stays whole.
    fail_on["name"] = "summary.json"
    before = (run / "summary.json").read_bytes()
    code, err = _run_main(monkeypatch, capsys, args)
    assert code == 2 and f"error: cannot write {run / 'summary.json'}: no space left" in err
    assert (run / "summary.json").read_bytes() == before
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]

    # 3. Space freed: the same command finishes, keeping what was done.
    fail_on["name"] = "no file has this name"
    code, err = _run_main(monkeypatch, capsys, args)
    assert code == 0, err
    assert "train: already done, kept" in err and "evaluate: already done, kept" in err
    assert (run / "model" / "model.safetensors").read_bytes() == model_bytes
    assert (run / "tables" / "predictions.csv").read_bytes() == predictions
    assert target.is_file() and (run / "report.html").is_file()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_output_folder_is_one_line(tmp_path, monkeypatch, capsys):
    args = _tiny_folder_args(tmp_path)
    (tmp_path / "full").mkdir()
    (tmp_path / "full").chmod(0o555)
    try:
        code, err = _run_main(monkeypatch, capsys, args)
    finally:
        (tmp_path / "full").chmod(0o755)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "is not writable" in errors[0], err
