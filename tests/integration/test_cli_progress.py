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

from tests.helpers.cli_runs import needs_offline

ROOT = Path(__file__).resolve().parents[2]
# Cheap audits only (the trained model's maps, no re-explanation): the test stays fast.
TINY = [
    "data.synthetic.n_train=4", "data.synthetic.n_val=2", "data.synthetic.n_test=2",
    "data.synthetic.image_size=32", "model.image_size=32", "model.resize_size=32",
    "train.epochs=2", "train.batch_size=8", "explain.select.per_class=1",
    "explain.methods=[{name: saliency}, {name: grad_cam}]",
    "audit.enabled=true", "audit.n_images=3", "audit.audits=[{name: localization}, {name: shortcut}]",
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


def _check_terminal(chunks: list[tuple[float, str]], text: str, run: Path) -> None:
    started = next(t for t, c in chunks if "auditing 2 methods" in _plain(c))
    first_audit = next(t for t, c in chunks if "audit 1/2 localization" in _plain(c))
    assert first_audit - started <= 5.0
    # While audits run, the terminal keeps changing (bars tick) at least every 5 s.
    finished = next(t for t, c in chunks if "done in" in _plain(c))
    during = [t for t, _ in chunks if started <= t <= finished]
    gaps = [b - a for a, b in zip(during, during[1:], strict=False)]
    assert gaps and max(gaps) <= 5.0, max(gaps)
    assert re.search(r"epoch 1  train loss \d\.\d{3} acc \d\.\d{3}  val loss", text)
    summary = json.loads((run / "summary.json").read_text())
    accuracy = f"test accuracy {100 * summary['test']['accuracy']:.1f}%"
    assert accuracy in text
    for method, line in summary["audits"]["verdict_lines"].items():
        if not method.startswith("control: "):  # the controls are summed up in one line
            assert line in " ".join(text.split()), line
    assert "Negative controls: none of 5 trusted" in text
    assert f"report: {run / 'report.html'}" in text.replace("\n", "")


def _check_log(stderr: str, run: Path) -> None:
    assert "\x1b[" not in stderr  # no terminal codes in a log
    lines = stderr.splitlines()
    stamped = [ln for ln in lines if re.match(r"^\[\s*\d+ (s|min)", ln)]
    assert any(re.search(r"\] auditing 2 methods on 6 test images( \(up to \d+ rounds| \(\d+ maps of the explain stage at hand\)|$)", ln)
               for ln in stamped)
    assert any(ln.endswith("] audit 2/2 shortcut") for ln in stamped)
    summary = json.loads((run / "summary.json").read_text())
    accuracy = f"test accuracy {100 * summary['test']['accuracy']:.1f}% on 6 images, macro F1 "
    assert any(ln.startswith(accuracy) for ln in lines)
    methods = [line for m, line in summary["audits"]["verdict_lines"].items()
               if not m.startswith("control: ")]
    shown = [ln.strip() for ln in lines if ln.startswith("  ")]
    assert [ln.split(" (about ")[0] for ln in shown[: len(methods)]] == methods
    assert shown[len(methods)].startswith("Negative controls: none of 5 trusted")
    assert any(ln.startswith("time per stage: ") and "audit" in ln for ln in lines)


@pytest.mark.slow  # a real run: about 90 s of CPU
@needs_offline
def test_terminal_run_then_a_logged_audit_stage(tmp_path):
    """One tiny run in a pty; then its audit stage again with output to a pipe (a log)."""
    code, chunks = _run_in_pty(_args(tmp_path, "tty"), tmp_path)
    text = _plain("".join(c for _, c in chunks))
    assert code == 0, text[-2000:]
    _check_terminal(chunks, text, tmp_path / "tty")
    run = subprocess.run([sys.executable, "-m", "xaudit.cli", "audit", str(tmp_path / "tty")],
                         cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    _check_log(run.stderr, tmp_path / "tty")
