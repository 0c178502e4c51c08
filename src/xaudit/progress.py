"""Progress for people: bars on a terminal, plain lines elsewhere (a log file, CI, Python).

The pipeline reports through two callables, ``progress(desc, done, total)`` and
``log(message)``; training also calls ``progress.epoch(row)`` with each epoch's losses and
accuracies where the reporter has it. Plain output prints a line when a step starts, at most
every ``interval`` seconds while it runs, and when it ends, with the rate and time left; a
heartbeat says what is still running when nothing else was printed for a while, so a long
audit never looks hung.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

# run_audits logs "audit 3/8 model_randomization" as each audit starts, followed by
# " — ~1,632 model evaluations, ~46 s planned" when the plan has an estimate.
AUDIT_LINE = re.compile(r"^audit (\d+)/(\d+) (\S+)(?: — (.+))?$")
_PLANNED = re.compile(r"~((?:\d+ h )?(?:\d+ min )?(?:\d+ s)?|\d+ h \d+ min) planned")
_UNITS = {"h": 3600, "min": 60, "s": 1}


def parse_duration(text: str) -> float:
    """Seconds of a duration as ``fmt_duration`` writes it ("1 min 05 s", "2 h 03 min")."""
    return float(sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+) (h|min|s)\b", text)))


def fmt_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def epoch_line(row: dict) -> str:
    """``epoch 3  train loss 0.412 acc 0.871  val loss 0.398 acc 0.889``."""
    def num(key: str) -> str:
        v = row.get(key)
        return "–" if v is None else f"{float(v):.3f}"

    return (f"epoch {row.get('epoch')}  train loss {num('train_loss')} acc {num('train_acc')}  "
            f"val loss {num('val_loss')} acc {num('val_acc')}")


class _Step:
    def __init__(self, done: int, total: int):
        # The rate counts from the first report, which may already have some work done.
        self.start = time.perf_counter()
        self.first = done
        self.total = total
        self.done = done
        self.printed = 0.0

    def rate_and_left(self) -> str:
        spent = time.perf_counter() - self.start
        if self.done <= self.first or spent <= 0:
            return ""
        rate = (self.done - self.first) / spent
        left = (self.total - self.done) / rate if self.total > self.done else 0.0
        shown = f"{rate:.2f}/s" if rate < 10 else f"{rate:,.0f}/s"
        return f", {shown}, ~{fmt_duration(left)} left" if left else f", {shown}"


class PlainReporter:
    """Plain lines at a steady rate; ``progress`` and ``log`` are its two callbacks."""

    def __init__(self, stream: TextIO | None = None, interval: float = 5.0,
                 heartbeat: float = 30.0):
        self.stream = stream or sys.stderr
        self.interval = interval
        self.heartbeat = heartbeat
        self.t0 = time.perf_counter()
        self.steps: dict[str, _Step] = {}
        self.current = ""  # what is running now, for the heartbeat
        self.current_since = self.t0
        # The last step announced by a log line ("explaining 8 images with X", an audit's
        # start): what is running again once a progress step inside it has finished.
        self.context = ""
        self.planned: dict[str, float] = {}  # a step's planned seconds, from its log line
        self.last_line = self.t0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the callbacks -------------------------------------------------------------------
    def progress(self, desc: str, done: int, total: int) -> None:
        step = self.steps.get(desc)
        if step is None or done < step.done:
            step = self.steps[desc] = _Step(done, total)
        step.done, step.total = done, total
        self._running(desc if done < total else self.context)
        now = time.perf_counter()
        if done >= total or now - step.printed >= self.interval or step.printed == 0.0:
            step.printed = now
            pct = f" ({100 * done // total}%)" if total else ""
            self.line(f"{desc} {done:,}/{total:,}{pct}{step.rate_and_left()}")

    def log(self, message: str) -> None:
        match = AUDIT_LINE.match(message)
        if match:
            self.context = f"audit {match[1]}/{match[2]} {match[3]}"
            planned = _PLANNED.search(match[4] or "")
            if planned:
                self.planned[self.context] = parse_duration(planned[1])
            self._running(self.context)
        elif ":" not in message:
            # A line without a colon announces a step ("decoding 360 train images"); lines
            # with one report ("audit x: 12 s", "warning: …") and start nothing.
            self.context = message
            self._running(message)
        self.line(message)

    def epoch(self, row: dict) -> None:
        self.line(epoch_line(row))

    # -- output --------------------------------------------------------------------------
    def line(self, text: str) -> None:
        with self._lock:
            self.last_line = time.perf_counter()
            print(f"[{fmt_duration(self.last_line - self.t0):>9}] {text}", file=self.stream,
                  flush=True)

    def _running(self, what: str) -> None:
        if what != self.current:
            self.current, self.current_since = what, time.perf_counter()

    def _beat(self) -> None:
        while not self._stop.wait(min(self.heartbeat, 5.0)):
            now = time.perf_counter()
            if self.current and now - self.last_line >= self.heartbeat:
                self.line(f"still running: {self.current} ({self._time_left(now)})")

    def _time_left(self, now: float) -> str:
        """Time so far and left: from a progress step's rate, else from the plan's estimate
        (and saying so when the step has run past it)."""
        spent = now - self.current_since
        so_far = f"{fmt_duration(spent)} so far"
        step = self.steps.get(self.current)
        if step is not None and step.rate_and_left():
            return so_far + step.rate_and_left()
        planned = self.planned.get(self.current)
        if planned is None:
            return so_far + ", time left unknown"
        if spent < planned:
            return f"{so_far}, ~{fmt_duration(planned - spent)} left of ~{fmt_duration(planned)} planned"
        return f"{so_far}, past the ~{fmt_duration(planned)} planned"

    def __enter__(self) -> PlainReporter:
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)


def attach_epoch(progress: Callable[[str, int, int], None],
                 epoch: Callable[[dict], None]) -> Callable[[str, int, int], None]:
    """``progress`` with an ``epoch`` attribute (what training calls with each epoch's row)."""
    def wrapped(desc: str, done: int, total: int) -> None:
        progress(desc, done, total)

    wrapped.epoch = epoch  # type: ignore[attr-defined]
    return wrapped


def report_epoch(progress: Callable, row: dict) -> None:
    """Training's hook: hand ``row`` to the reporter behind ``progress``, if it takes rows."""
    epoch = getattr(progress, "epoch", None)
    if callable(epoch):
        epoch(row)
