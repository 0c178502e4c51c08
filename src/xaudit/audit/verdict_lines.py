"""The verdict in words: one sentence for the run, one line per method, one reason per cell.

Every text here is made from a cell's summary entry (``scorecard.cell_summary``: status,
the deciding test's yardstick, effect, interval, smallest difference that matters, n), so
the CLI, summary.json and the report say the same thing, also when read back from disk.
"""

from __future__ import annotations

from .cell_text import cell_words
from .controls import is_control
from .judge import Assessment
from .scorecard import cell_summary
from .types import Cell


def reason(e: dict) -> str:
    """Why a cell has its status, in words, from its summary entry; a tested one with the
    number of images its test paired."""
    n = int(e.get("n_paired") or e.get("n") or 0)
    tested = e.get("status") in ("pass", "fail", "inconclusive") and e.get("against") is not None
    # the images that would decide it are said once, by the method's line
    text = cell_words({**e, "images_to_decide": None}, margin=True)
    if tested and n and text.endswith(")"):
        text = f"{text[:-1]}, n={n})"
    return text


def _remedy(cell: Cell, summary: dict) -> str:
    """A concrete change that would fix a failed cell, where the audits know one."""
    if cell.audit == "convergence" and cell.metric == "completeness_rel_delta":
        info = ((summary.get("convergence") or {}).get("methods") or {}).get(cell.method) or {}
        configured = str(info.get("configured") or "")
        rule = configured.split(",")[0].strip()
        needed = (info.get("n_steps_needed") or {}).get(rule)
        if needed:
            return f"completeness fails at {configured}: set n_steps: {needed}"
        return f"completeness fails at {configured}, not met at any step count tried"
    if cell.metric == "emprt_complexity_rise":
        return "its maps grow no more complex when the model is randomized (eMPRT)"
    if cell.audit in ("model_randomization", "label_randomization", "smooth_model_randomization"):
        return "its maps barely change when the model is randomized"
    return ""


def method_lines(cells: list[Cell], assessment: Assessment, summary: dict) -> dict[str, str]:
    """``{method: line}``: its state, the deciding reason, and a remedy or the images that
    would decide it."""
    out: dict[str, str] = {}
    for method, j in assessment.methods.items():
        if j.state == "none":
            out[method] = f"{method}: no verdict — no audit with a rule applied to it"
        elif j.state == "fail":
            first = j.failed[0]
            why = _remedy(first, summary) or reason(cell_summary(first, assessment))
            more = f" (+{len(j.failed) - 1} more failed)" if len(j.failed) > 1 else ""
            out[method] = f"{method}: do not trust — {first.audit}: {why}{more}"
        elif j.state == "unsure":
            first = j.unsure[0]
            needed = images_to_decide(j.unsure, assessment)
            why = reason(cell_summary(first, assessment))
            more = f" (+{len(j.unsure) - 1} more open)" if len(j.unsure) > 1 else ""
            est = f"; about {needed} images would decide it" if needed else ""
            out[method] = f"{method}: undecided — {first.audit}: {why}{more}{est}"
        elif j.state == "missing":
            out[method] = f"{method}: undecided — passed no {' or '.join(j.missing)} check"
        elif j.state == "fooled":
            out[method] = (f"{method}: undecided — passed all {len(j.passed)} checks, but so "
                           "did a negative control")
        elif is_control(method):
            out[method] = (f"{method}: passed all {len(j.passed)} checks — a map that ignores the "
                           "model: these checks cannot decide here")
        else:
            audits = ", ".join(sorted({c.audit for c in j.passed}))
            out[method] = (f"{method}: trusted — passed all {len(j.passed)} checks ({audits}), "
                           "each against every negative control")
    return out


def images_to_decide(cells: list[Cell], assessment: Assessment) -> int | None:
    """The most images any of ``cells``' open tests is estimated to need."""
    needs = [assessment.of(c).images_to_decide() for c in cells]
    needs = [n for n in needs if n is not None]
    return max(needs) if needs else None


def verdict(assessment: Assessment, shortcut: dict | None,
            lines: dict[str, str] | None = None) -> str:
    """The run's verdict in one paragraph: the headline, then every method's line."""
    lines = lines or method_lines([], assessment, {})
    methods = [m for m in assessment.methods if not is_control(m)]
    denied = [m for m in methods if assessment.methods[m].state == "fail"]
    open_ = [m for m in methods if m not in assessment.trusted and m not in denied]
    level = f"error rate ≤ {assessment.alpha:g} each"
    if assessment.fooled:
        head = (f"The audits passed a negative control ({', '.join(assessment.fooled)}): on this "
                "data they cannot tell a map that ignores the model from an explanation, so no "
                "method is trusted.")
    elif assessment.trusted:
        head = f"Trust {', '.join(assessment.trusted)} for this model"
        head += (f"; do not trust {', '.join(denied)}" if denied else "") + f" ({level})."
    elif denied and not open_:
        head = f"Do not trust any audited method for this model ({level})."
    else:
        head = "No audited method is trusted yet"
        head += (f"; do not trust {', '.join(denied)}" if denied else "") + "."
        closest = _closest(assessment, open_)
        if closest:
            head += f" Closest to trustworthy: {closest}."
    if shortcut and shortcut.get("flagged"):
        classes = ", ".join(shortcut.get("classes", [])) or "some classes"
        head += (f" Warning: the shortcut screening found evidence off the object for {classes};"
                 " the model may rely on a shortcut, whatever the method.")
    return " ".join([head, *(lines[m] + "." for m in assessment.methods)])


def _closest(assessment: Assessment, methods: list[str]) -> str:
    """The undecided methods that passed the largest share of their checks (a pass already
    means beating every control), with that share; "" when none passed any."""
    shares = {m: (len(assessment.methods[m].passed), len(assessment.methods[m].counted))
              for m in methods if assessment.methods[m].counted}
    best = max((p / n for p, n in shares.values() if p), default=0)
    if not best:
        return ""
    return ", ".join(f"{m} ({p} of {n} checks)" for m, (p, n) in shares.items() if p / n == best)
