"""The CLI shows its work: in a terminal (a pty) and in a log (a pipe), a tiny real run prints
epochs and audit progress as they happen and ends with accuracy, verdict and report path."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_cli import needs_offline

ROOT = Path(__file__).resolve().parents[2]
AUDITS = ("[{name: convergence, steps: [2, 4]}, {name: localization}, {name: faithfulness, "
          "steps: 4, road_percentages: [0.5], infidelity_samples: 2, sensitivity_samples: 0}]")
TINY = [
    "data.synthetic.n_train=4", "data.synthetic.n_val=2", "data.synthetic.n_test=2",
    "data.synthetic.image_size=32", "model.image_size=32", "model.resize_size=32",
    "train.epochs=2", "train.batch_size=8", "explain.select.per_class=1",
    "explain.methods=[{name: saliency}, {name: integrated_gradients, n_steps: 4}]",
    "audit.enabled=true", "audit.n_images=3", f"audit.audits={AUDITS}",
]


def _args(out: Path, name: str) -> list[str]:
    args = [sys.executable, "-m", "xaudit.cli", "run", str(ROOT / "configs" / "demo.yaml"),
            "--set", f"name={name}", "--set", f"output_dir={out}"]
    for s in TINY:
        args += ["--set", s]
    return args


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TERM": "xterm", "COLUMNS": "120"}
    env.pop("CI", None)  # a terminal here, whatever the caller's environment
    return env


def _run_in_pty(args: list[str], cwd: Path, timeout: float = 600) -> tuple[int, list[tuple[float, str]]]:
    """Run ``args`` with a pty as its terminal; (exit code, [(seconds, text chunk)])."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(args, stdin=follower, stdout=follower, stderr=follower, cwd=cwd,
                            env=_env(), close_fds=True)
    os.close(follower)
    t0, chunks = time.monotonic(), []
    while time.monotonic() - t0 < timeout:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append((time.monotonic() - t0, data.decode("utf-8", "replace")))
        elif proc.poll() is not None:
            break
    os.close(leader)
    return proc.wait(timeout=60), chunks


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).replace("\r", "\n")


@needs_offline
def test_terminal_run_shows_audit_progress_and_a_closing_block(tmp_path):
    code, chunks = _run_in_pty(_args(tmp_path, "tty"), tmp_path)
    text = _plain("".join(c for _, c in chunks))
    assert code == 0, text[-2000:]
    started = next(t for t, c in chunks if "auditing 2 methods" in _plain(c))
    first_audit = next(t for t, c in chunks if "audit 1/3 convergence" in _plain(c))
    assert first_audit - started <= 5.0
    # While audits run, the terminal keeps changing (bars tick) at least every 5 s.
    finished = next(t for t, c in chunks if "done in" in _plain(c))
    during = [t for t, _ in chunks if started <= t <= finished]
    gaps = [b - a for a, b in zip(during, during[1:], strict=False)]
    assert gaps and max(gaps) <= 5.0, max(gaps)
    assert re.search(r"epoch 1  train loss \d\.\d{3} acc \d\.\d{3}  val loss", text)
    summary = json.loads((tmp_path / "tty" / "summary.json").read_text())
    accuracy = f"test accuracy {100 * summary['test']['accuracy']:.1f}%"
    assert accuracy in text
    for line in summary["audits"]["verdict_lines"].values():
        assert line in " ".join(text.split()), line
    assert f"report: {tmp_path / 'tty' / 'report.html'}" in text.replace("\n", "")


@needs_offline
def test_a_log_gets_plain_lines_at_a_steady_rate(tmp_path):
    run = subprocess.run(_args(tmp_path, "log"), cwd=tmp_path, env=_env(), capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stderr.splitlines()
    (tmp_path / "log.txt").write_text(run.stderr)
    assert "\x1b[" not in run.stderr  # no terminal codes in a log
    stamped = [ln for ln in lines if re.match(r"^\[\s*\d+ (s|min)", ln)]
    assert any(re.search(r"\] audit 3/3 localization$", ln) for ln in stamped)
    assert any(re.search(r"\] epoch 2  train loss", ln) for ln in stamped)
    assert any(re.search(r"\] integrated_gradients \S+ \d+/\d+ \(100%\)", ln) or
               re.search(r"explaining \d+ images with integrated_gradients", ln) for ln in stamped)
    assert any(ln.startswith("test accuracy ") for ln in lines)
    assert any(ln.startswith("time per stage: ") and "audit" in ln for ln in lines)
