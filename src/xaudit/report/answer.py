"""The report's first screen: model, data, accuracy, the methods × audits grid, the verdict.

Everything here is read from summary.json (``audits.scorecard``, ``audits.verdict_lines``),
so the page shows exactly what the run stored; tests compare the two.
"""

from __future__ import annotations

import math

from ..audit.cell_text import cell_words, fmt, no_nan
from ..audit.controls import is_control
from ..audit.registry import model_level_audits
from ..audit.verdict_lines import reason
from ..headline import controls_sentence, headline, open_sentence
from ..run import RunDir, read_csv

# The status that decides a family's cell first: any failure, then doubt, then a pass.
STATUS_ORDER = ("fail", "inconclusive", "not tested", "not informative", "pass")
# Every status a grid cell can show, in the order the contents bar counts them.
BADGE_ORDER = ("pass", "fail", "inconclusive", "not informative", "not tested", "no rule")


def _entries(run: RunDir, audits: dict) -> tuple[list[dict], str | None]:
    """Scorecard cells from summary.json, or from tables/scorecard.csv for runs audited
    before summary.json kept them (said on the page)."""
    cells = audits.get("scorecard")
    if isinstance(cells, list):
        return [c for c in cells if isinstance(c, dict)], None
    path = run.table("scorecard")
    rows = read_csv(path) if path.is_file() else []
    needed = {"method", "audit", "metric", "mean", "ci_lo", "ci_hi", "n", "status"}
    if not rows or not needed <= set(rows[0]):
        return [], ("no grid: this run's scorecard predates pass / fail / inconclusive; "
                    "run `xaudit audit` again" if rows else None)
    out = [{
        "method": row["method"], "audit": row["audit"], "metric": row["metric"],
        "score": _num(row, "mean"), "ci": [_num(row, "ci_lo"), _num(row, "ci_hi")],
        "n": int(float(row.get("n") or 0)), "status": row["status"],
        "threshold": _num(row, "threshold"), "higher_is_better": row.get("direction") == "higher",
        "rule": row.get("rule", ""),
    } for row in rows]
    return out, "grid read from tables/scorecard.csv (this run's summary.json predates it)"


def _num(row: dict[str, str], key: str) -> float | None:
    try:
        value = float(row.get(key) or "nan")
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _deciding(entries: list[dict]) -> dict:
    """The entry that decides a family's cell: the first failed, else inconclusive, else
    passed ruled metric; with no rule, the family's headline metric."""
    for status in STATUS_ORDER:
        for e in entries:
            if e.get("status") == status:
                return e
    return entries[0]


def grid_cell(entries: list[dict]) -> dict:
    """One grid cell: status, value, interval, n and why, from a family's entries."""
    e = _deciding(entries)
    lo, hi = (e.get("ci") or [None, None])[:2]
    status = e.get("status") or ""
    n = int(e.get("n") or 0)
    return {
        "status": status or "no rule",
        "metric": str(e.get("metric")),
        "value": fmt(e.get("score")),
        "interval": f"[{fmt(lo)}, {fmt(hi)}]" if lo is not None and hi is not None else "",
        "n": n,
        "why": cell_words(e),
        "reason": no_nan(reason(e)),
        "ruled": sum(1 for x in entries if x.get("status")),
    }


def _methods(summary: dict, entries: list[dict]) -> list[str]:
    known = list(summary.get("explanations") or {})
    seen = [e["method"] for e in entries if "(reference)" not in e["method"]]
    return known + [m for m in dict.fromkeys(seen) if m not in known]


def answer(run: RunDir, summary: dict) -> dict:
    """The top screen's data (plain strings and numbers; the template escapes them)."""
    test = summary.get("test") or {}
    model = summary.get("model") or {}
    ds = summary.get("dataset") or {}
    facts = [
        ("model", f"{model.get('name', '–')} ({model.get('mode', '–')})"),
        ("data", f"{ds.get('name', '–')} · {len(ds.get('classes') or [])} classes · "
                 f"{test.get('n', '–')} test images"),
        ("accuracy", f"{100 * test['accuracy']:.1f}%" if isinstance(test.get("accuracy"), float) else "–"),
        ("macro F1", fmt(test.get("macro_f1"))),
    ]
    audits = summary.get("audits")
    if isinstance(audits, dict) and audits.get("preset"):
        facts.append(("audits", f"preset {audits['preset']}"
                      + (f" · {len(audits.get('controls') or [])} controls" if audits.get("controls") else "")))
    if not isinstance(audits, dict):
        return {"facts": facts, "grid": None, "lines": [], "note": None, "warning": None,
                "model_audits": [], "badges": {}, "headline": "", "controls": ""}
    entries, note = _entries(run, audits)
    if not entries:
        return {"facts": facts, "grid": None, "lines": [], "note": note, "warning": None,
                "model_audits": _model_audits(audits), "badges": {}, "headline": "",
                "controls": ""}
    model_level = model_level_audits()  # they describe the model: beside the grid, not in it
    families = list(dict.fromkeys(e["audit"] for e in entries if e["audit"] not in model_level))
    methods = _methods(summary, entries)
    rows = []
    # Counted apart: a control failing a check is good news, a method failing one is not.
    counts = {"methods": dict.fromkeys(BADGE_ORDER, 0), "controls": dict.fromkeys(BADGE_ORDER, 0)}
    for method in methods:
        cells = []
        for family in families:
            own = [e for e in entries if e["method"] == method and e["audit"] == family]
            cell = grid_cell(own) if own else None
            if cell:
                side = counts["controls" if is_control(method) else "methods"]
                side[cell["status"]] = side.get(cell["status"], 0) + 1
            cells.append(cell)
        rows.append({"method": method, "cells": cells, "control": is_control(method)})
    lines_by_method = audits.get("verdict_lines") or {}
    lines = [str(lines_by_method[m]) for m in methods if m in lines_by_method and not is_control(m)]
    return {
        "headline": headline(audits),
        "controls": controls_sentence(audits)[0],
        "facts": facts,
        "grid": {"families": families, "rows": rows},
        "lines": lines,
        "trusted": [str(t) for t in audits.get("trusted") or []],
        "note": note,
        "warning": open_sentence(audits),
        "model_audits": _model_audits(audits),
        "badges": counts,
    }


def _model_audits(audits: dict) -> list[str]:
    out = [f"not tested: {label} ({why})" for label, why in (audits.get("not_tested") or {}).items()]
    shortcut = audits.get("shortcut")
    if isinstance(shortcut, dict) and not shortcut.get("skipped"):
        flagged = shortcut.get("flagged")
        classes = ", ".join(map(str, shortcut.get("classes") or [])) or "no class"
        out.append(f"shortcut screening: {'flagged ' + classes if flagged else 'nothing flagged'}")
    return out
