"""The run-folder lock, held and contested by real processes."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xaudit.lock import LOCK_NAME, RunFolderBusy, RunLock, run_lock

ROOT = Path(__file__).resolve().parents[2]
HOLD = (
    "import sys, time; from xaudit.lock import RunLock; "
    "lock = RunLock(sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(float(sys.argv[2]))"
)


def holder(folder: Path, seconds: float = 30) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(seconds)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_process_fails_at_once_naming_the_holder(tmp_path):
    proc = holder(tmp_path / "run")
    try:
        t0 = time.perf_counter()
        with pytest.raises(RunFolderBusy) as err:
            RunLock(tmp_path / "run").acquire()
        assert time.perf_counter() - t0 < 1
        msg = str(err.value)
        assert f"pid {proc.pid} on {socket.gethostname()}" in msg and "in use by another xaudit run" in msg
        assert "\n" not in msg
    finally:
        proc.kill()
        proc.wait()


def test_lock_of_a_killed_process_is_taken_over_and_said_so(tmp_path):
    proc = holder(tmp_path / "run")
    proc.kill()  # SIGKILL: no clean-up ran, the file still names the dead holder
    proc.wait()
    assert json.loads((tmp_path / "run" / LOCK_NAME).read_text())["pid"] == proc.pid
    lock = RunLock(tmp_path / "run")
    note = lock.acquire()
    pattern = rf"took over the lock of pid {proc.pid} on {re.escape(socket.gethostname())} since [\d:]+: "
    assert re.fullmatch(pattern + "that process is no longer running", note), note
    assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    lock.release()
    assert not lock.path.exists()


def test_released_lock_is_free_and_leaves_no_file(tmp_path):
    logged: list[str] = []
    with run_lock(tmp_path / "run", log=logged.append):
        assert (tmp_path / "run" / LOCK_NAME).is_file()
        with pytest.raises(RunFolderBusy):  # another open file description in this process
            RunLock(tmp_path / "run").acquire()
    assert not (tmp_path / "run" / LOCK_NAME).exists() and logged == []
    with run_lock(tmp_path / "run"):  # free again
        pass


def test_lock_written_on_another_host_is_refused_with_the_file_to_delete(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK_NAME).write_text(json.dumps({"pid": 4242, "host": "elsewhere", "started": 0}))
    with pytest.raises(RunFolderBusy, match=r"pid 4242 on elsewhere .*another host.*delete .*xaudit\.lock"):
        RunLock(tmp_path / "run").acquire()
