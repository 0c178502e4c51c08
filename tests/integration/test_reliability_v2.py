"""Hostile and careless use through the real CLI: concurrent runs, bad recipes, interrupts."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from tests.conftest import class_image, write_png

ROOT = Path(__file__).resolve().parents[2]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def image_folder(root: Path, classes=("a", "b"), n: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for label, cls in enumerate(classes):
        for i in range(n):
            write_png(root / cls / f"{i}.png", class_image(label, rng, 16))
    return root


def run_args(out: Path, data: Path, name: str = "r", *extra: str) -> list[str]:
    args = [sys.executable, "-m", "xaudit.cli", "run", str(ROOT / "configs" / "demo.yaml"),
            "--set", f"output_dir={out}", "--set", f"name={name}"]
    for s in ("data.source=folder", f"data.path={data}", "model.weights=none", "model.image_size=32",
              "model.resize_size=32", "train.epochs=2", "audit.enabled=false",
              "explain.methods=[{name: saliency}]", "explain.select.per_class=1", *extra):
        args += ["--set", s]
    return args


def xaudit(args: list[str], cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)


def one_error(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, res.stderr
    return errors[0]


def table(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------- one run per folder


def test_second_run_on_the_same_folder_fails_at_once_and_the_first_completes(tmp_path):
    data = image_folder(tmp_path / "imgs")
    first = subprocess.Popen(run_args(tmp_path, data), env=env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "r" / "xaudit.lock"
    deadline = time.time() + 120
    while time.time() < deadline and first.poll() is None:
        if lock.is_file() and lock.read_text().strip():
            break
        time.sleep(0.02)
    assert first.poll() is None, "the first run ended before it took its lock"
    os.kill(first.pid, signal.SIGSTOP)  # hold it mid-run, lock taken, so the timing is not a race
    try:
        t0 = time.perf_counter()
        second = xaudit(run_args(tmp_path, data, "r", "seed=7"), timeout=120)
        took = time.perf_counter() - t0
    finally:
        os.kill(first.pid, signal.SIGCONT)
    line = one_error(second)
    assert line.startswith(f"error: run folder {tmp_path / 'r'} is in use by another xaudit run (pid {first.pid} on ")
    assert took < 30  # start-up (imports) and the refusal; nothing is loaded or decoded
    assert first.wait(timeout=300) == 0, first.stderr.read()
    run = tmp_path / "r"
    assert not lock.exists()
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert recipe["seed"] == 0 and summary["seed"] == 0  # the second run's seed=7 left no trace
    assert set(json.loads((run / "manifest.json").read_text())["stages"]) == {
        "train", "evaluate", "explain", "audit", "report"}
    ids = json.loads((run / "maps" / "saliency" / "index.json").read_text())
    stored = [i for c in ids["chunks"] for i in c["ids"]]
    explained = [r["id"] for r in table(run / "tables" / "explained_images.csv")]
    assert len(stored) == len(set(stored)) and sorted(stored) == sorted(explained)
