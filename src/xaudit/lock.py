"""One run at a time per run folder: an exclusive lock held for the whole run.

Two runs writing one folder interleave their read-modify-write of the manifest, summary and
map index (and one run's results silently replace the other's), so the second run fails at
once. The lock is an ``flock`` on ``<run>/xaudit.lock``; the file holds the holder's pid and
host for the message. The kernel drops an ``flock`` when its process dies, however it dies, so
a lock left by a dead process on this host is taken over (and said so). A lock written from
another host cannot be checked from here and is refused with the file to delete.
Under torchrun, rank 0 holds it for the job.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import XauditError, shown

LOCK_NAME = "xaudit.lock"


class RunFolderBusy(XauditError):
    """Another process is running in the same run folder."""


def _holder_text(info: dict) -> str:
    since = info.get("started")
    when = f" since {time.strftime('%H:%M:%S', time.localtime(since))}" if isinstance(since, (int, float)) else ""
    return f"pid {shown(info.get('pid', '?'), 20)} on {shown(info.get('host', '?'), 60)}{when}"


def _read_info(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, 4096)
    if not data.strip():
        return {}
    try:
        info = json.loads(data.decode("utf-8", "replace"))
    except ValueError:
        return {"pid": "?", "host": "?"}
    return info if isinstance(info, dict) else {"pid": "?", "host": "?"}


class RunLock:
    """The exclusive lock of one run folder; ``acquire`` returns a note when it took one over."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> str | None:
        from .run import output_error

        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise output_error(self.root, err, "create run folder") from None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise output_error(self.path, err, "create lock file") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _read_info(fd)
            if not info:  # the holder has its lock but has not written its name yet
                time.sleep(0.1)
                info = _read_info(fd)
            os.close(fd)
            raise RunFolderBusy(
                f"run folder {self.root} is in use by another xaudit run ({_holder_text(info)}); "
                "wait for it to finish, or give this run another name",
            ) from None
        except OSError as err:
            os.close(fd)
            raise output_error(self.path, err, "lock") from None
        # The holder may have removed the file between our open and our flock: lock the new one.
        try:
            same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return self.acquire()
        previous = _read_info(fd)
        host = socket.gethostname()
        if previous and previous.get("host") not in (host, "?"):
            os.close(fd)
            raise RunFolderBusy(
                f"run folder {self.root} is locked by {_holder_text(previous)}, another host, which "
                f"this host cannot check; if that run is over, delete {self.path}",
            )
        info = {"pid": os.getpid(), "host": host, "started": time.time(), "command": shown(" ".join(sys.argv), 300)}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(info) + "\n").encode("utf-8"))
        os.fsync(fd)
        self._fd = fd
        if previous:
            return f"took over the lock of {_holder_text(previous)}: that process is no longer running"
        return None

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # before unlocking, so a waiting opener re-checks (see acquire)
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


@contextmanager
def run_lock(root: str | Path, world: object | None = None, log: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold ``root``'s lock while the block runs; under torchrun rank 0 holds it for every rank.

    ``world`` is a ``distributed.World``; the lock is taken as one step of the job, so when
    rank 0 cannot take it every rank stops instead of waiting for it.
    """
    from .distributed import World, step

    world = world if isinstance(world, World) else World()
    lock = RunLock(root)
    note = step(world, lock.acquire, main_only=True)
    if note and log:
        log(f"warning: {note}")
    try:
        yield
    finally:
        lock.release()
