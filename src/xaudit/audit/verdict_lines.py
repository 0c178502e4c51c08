"""One short line per method: trusted or not, the deciding reason, and a remedy where one exists.

The long verdict (``scorecard.verdict``) lists every check; these lines are what a reader
needs first, and what the report's top screen and the CLI's closing block show.
"""

from __future__ import annotations

import math

from .base import Cell
from .controls import is_control
from .scorecard import cell_interval, cell_status, judge


def fmt(value: float | None) -> str:
    """A number in 3 significant digits (or a dash when undefined)."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.3g}"


def cell_reason(cell: Cell) -> str:
    """Why a ruled cell has its status, in one line: value, interval, threshold, n."""
    mean, lo, hi, n = cell_interval(cell)
    return reason(cell.metric, mean, lo, hi, n, cell_status(cell), cell.threshold,
                  cell.higher_is_better, cell.rule)


def reason(metric: str, mean: float | None, lo: float | None, hi: float | None, n: int,
           status: str, threshold: float | None, higher_is_better: bool, rule: str) -> str:
    """The one-line "why" of a cell from its numbers (also read back from summary.json)."""
    def finite(v: float | None) -> bool:
        return v is not None and math.isfinite(v)

    if status == "" or threshold is None:
        return f"{metric} {fmt(mean)} (n={n}): {rule}"
    side = "≥" if higher_is_better else "≤"
    interval = f"[{fmt(lo)}, {fmt(hi)}]"
    if status == "inconclusive":
        if not (finite(lo) and finite(hi)):
            return f"{metric} {fmt(mean)} on n={n}: too few images for an interval"
        return f"{metric} {fmt(mean)} {interval} contains the threshold {fmt(threshold)} (n={n})"
    word = "meets" if status == "pass" else "misses"
    return f"{metric} {fmt(mean)} {interval} {word} {side} {fmt(threshold)} (n={n})"


def _remedy(cell: Cell, summary: dict) -> str:
    """A concrete change that would fix a failed cell, where the audits know one."""
    if cell.audit == "convergence" and cell.metric == "completeness_rel_delta":
        info = ((summary.get("convergence") or {}).get("methods") or {}).get(cell.method) or {}
        configured = str(info.get("configured") or "")
        rule = configured.split(",")[0].strip()
        needed = (info.get("n_steps_needed") or {}).get(rule)
        mean = cell_interval(cell)[0]
        if needed:
            return f"completeness {fmt(mean)} at {configured}: set n_steps: {needed}"
        return f"completeness {fmt(mean)} at {configured}, not met at any step count tried"
    if cell.audit == "localization":
        return f"localization indistinguishable from the centre prior ({cell.metric})"
    if cell.audit == "faithfulness":
        return f"no more faithful than an edge detector ({cell.metric})"
    if cell.metric == "emprt_complexity_rise":
        return "maps grow no more complex when the model is randomized (eMPRT)"
    if cell.audit in ("model_randomization", "label_randomization"):
        return f"maps barely change when the model is randomized ({cell.audit})"
    return ""


def method_lines(cells: list[Cell], methods: list[str], summary: dict) -> dict[str, str]:
    """``{method: line}``: e.g. "integrated_gradients: do not trust — completeness 0.16 at
    gausslegendre, n_steps=32: set n_steps: 64 (+1 more)". The rules are ``scorecard.judge``'s."""
    judged, _, _ = judge(cells, methods)
    out: dict[str, str] = {}
    for method, j in judged.items():
        if j.state == "none":
            out[method] = f"{method}: no verdict — no audit with a pass/fail rule decided anything"
        elif j.state == "fail":
            first = j.failed[0]
            reason = _remedy(first, summary) or cell_reason(first)
            more = f" (+{len(j.failed) - 1} more failed)" if len(j.failed) > 1 else ""
            out[method] = f"{method}: do not trust — {reason}{more}"
        elif j.state == "unsure":
            first = j.unsure[0]
            why = (f"not tested: {first.note}" if cell_status(first) == "not tested"
                   else f"{cell_reason(first)}; audit more images")
            more = f" (+{len(j.unsure) - 1} more)" if len(j.unsure) > 1 else ""
            out[method] = f"{method}: not established — {why}{more}"
        elif j.state == "missing":
            out[method] = f"{method}: not established — passed no {' or '.join(j.missing)} check"
        elif j.state == "fooled":
            out[method] = (f"{method}: not established — passed all {len(j.passed)} checks, "
                           "but so did a negative control")
        elif is_control(method):
            out[method] = (f"{method}: passed all {len(j.passed)} checks — a map that ignores the "
                           "model: these checks cannot decide here")
        else:
            out[method] = f"{method}: trusted — passed all {len(j.passed)} checks"
    return out
