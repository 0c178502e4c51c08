"""What the CLI prints around a run: bars on a terminal, plain lines elsewhere, and the
closing block (accuracy, one verdict line per method, time per stage, the report's path)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .progress import AUDIT_LINE, PlainReporter, attach_epoch, epoch_line, fmt_duration

STAGE_ORDER = ("data", "decode", "train", "evaluate", "explain", "audit", "report")


class RichReporter:
    """Rich bars keyed by the pipeline's step description; audits get one bar of their own."""

    def __init__(self, progress: Progress):
        self.bars = progress
        self.tasks: dict[str, int] = {}

    def progress(self, desc: str, done: int, total: int) -> None:
        if desc not in self.tasks:
            self.tasks[desc] = self.bars.add_task(desc, total=total)
        self.bars.update(self.tasks[desc], completed=done, total=total)

    def log(self, message: str) -> None:
        match = AUDIT_LINE.match(message)
        if match:
            number, total, name = int(match[1]), int(match[2]), match[3]
            if "audits" not in self.tasks:
                self.tasks["audits"] = self.bars.add_task("audits", total=total)
            planned = f" ({match[4]})" if match[4] else ""
            self.bars.update(self.tasks["audits"], completed=number - 1, total=total,
                             description=f"audit {number}/{total} {name}{planned}")
        self.bars.console.print(f"[dim]{message}[/dim]", highlight=False)

    def epoch(self, row: dict) -> None:
        self.bars.console.print(epoch_line(row), highlight=False)

    def finish(self) -> None:
        if "audits" in self.tasks:
            task = self.tasks["audits"]
            total = next(t.total for t in self.bars.tasks if t.id == task)
            self.bars.update(task, completed=total, description="audits")


@contextmanager
def reporter(console: Console) -> Iterator[tuple]:
    """(progress, log) callbacks: rich bars on a terminal, plain steady lines otherwise."""
    if console.is_terminal:
        bars = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("left"), TimeRemainingColumn(), console=console, transient=False,
        )
        with bars:
            rich = RichReporter(bars)
            yield attach_epoch(rich.progress, rich.epoch), rich.log
            rich.finish()
    else:
        with PlainReporter(console.file) as plain:
            yield attach_epoch(plain.progress, plain.epoch), plain.log


def _f1_classes(summary: dict) -> str:
    """" over K of N classes" when some class had no test image to average over."""
    counted = (summary.get("test") or {}).get("macro_f1_classes")
    classes = (summary.get("dataset") or {}).get("classes") or []
    if isinstance(counted, int) and 0 < len(classes) and counted < len(classes):
        return f" over {counted} of {len(classes)} classes"
    return ""


def closing_block(run_dir: Path, seconds: float) -> list[str]:
    """The lines that end a run, read from the run's summary.json."""
    path = run_dir / "summary.json"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return [f"done in {seconds:.1f} s (no readable summary.json in {run_dir})"]
    lines = ["", f"── {summary.get('name', run_dir.name)} done in {seconds:.1f} s ──"]
    test = summary.get("test") or {}
    if isinstance(test.get("accuracy"), int | float):
        f1 = test.get("macro_f1")
        lines.append(f"test accuracy {100 * test['accuracy']:.1f}% on {test.get('n', '?')} images"
                     + (f", macro F1 {f1:.3f}{_f1_classes(summary)}" if isinstance(f1, int | float) else ""))
    audits = summary.get("audits")
    if isinstance(audits, dict):
        verdict_lines = audits.get("verdict_lines") or {}
        if verdict_lines:
            lines += answer_lines(audits, verdict_lines)
        elif audits.get("verdict"):
            lines.append(f"verdict: {audits['verdict']}")
    else:
        lines.append("verdict: no audits ran (audit.enabled: false)")
    timing = summary.get("timing") or {}
    known = [k for k in STAGE_ORDER if k in timing] + [k for k in timing if k not in STAGE_ORDER]
    if known:
        lines.append("time per stage: " + ", ".join(f"{k} {float(timing[k]):.1f} s" for k in known))
    lines.append(f"report: {run_dir / 'report.html'}")
    return lines


def answer_lines(audits: dict, verdict_lines: dict) -> list[str]:
    """The answer block: the verdict's headline, one line per method (with the minutes an open
    one needs), and the controls in one line, as the report's first screen says them."""
    from .headline import controls_sentence, headline

    head = headline(audits)
    undecided = audits.get("undecided") or {}
    out = [f"verdict: {head}" if head else "verdict:"]
    for method, line in verdict_lines.items():
        if str(method).startswith("control: "):
            continue
        est = (undecided.get(method) or {}).get("estimated_seconds")
        out.append(f"  {line}" + (f" (about {fmt_duration(float(est))})" if est else ""))
    controls, alarm = controls_sentence(audits)
    if controls:
        out.append("  " + (controls.replace("Warning:", "WARNING:", 1) if alarm
                           else controls[:-1] + "; their lines are in summary.json."))
    return out
