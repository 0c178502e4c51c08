"""SIGINT and SIGTERM end a run with one line naming the interrupted stage, exit 130 / 143.

The handlers raise ``Interrupted``, a ``BaseException``: no ``except Exception`` in the
stages swallows it, ``finally`` blocks (the run lock, temporary files) still run, and the
CLI turns it into its line. Click would turn a plain ``KeyboardInterrupt`` into an abort
that forgets which signal came.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_STATE: dict[str, str | bool | None] = {"stage": None, "finished": False}


class Interrupted(BaseException):  # noqa: N818 - a signal, not an error
    """The process received SIGINT or SIGTERM."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def entering(stage: str) -> None:
    """Record the stage now running, for the interrupt message."""
    _STATE.update(stage=stage, finished=False)


def finished(stage: str) -> None:
    """Record that ``stage`` is marked done (an interrupt now falls between stages)."""
    _STATE.update(stage=stage, finished=True)


def current_stage() -> str | None:
    """The stage running now, or None between stages."""
    return None if _STATE["finished"] else _STATE["stage"]  # type: ignore[return-value]


def message(err: Interrupted, command: str = "xaudit run") -> str:
    stage = _STATE["stage"]
    if not stage:
        where = ""
    elif _STATE["finished"]:
        where = f" after the {stage} stage finished"
    else:
        where = f" during the {stage} stage"
    return (f"interrupted by {err.name}{where}: finished stages and chunks are kept; "
            f"run `{command}` again with the same recipe to resume")


def _raise(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


@contextmanager
def handled() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into ``Interrupted`` while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
