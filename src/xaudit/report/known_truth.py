"""The report's known-truth table (synthetic data): each method's truth score beside its verdict."""

from __future__ import annotations

from typing import Any

from .formats import fmt_number, fmt_value


def _interval(ci: Any) -> str:
    lo, hi = (ci if isinstance(ci, list | tuple) and len(ci) == 2 else (None, None))
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lo, hi)):
        return "–"
    return f"[{fmt_number(float(lo))}, {fmt_number(float(hi))}]"


def known_truth_table(summary: dict) -> dict | None:
    """The known-truth table (synthetic data): each method's truth score beside its verdict
    state, then the best control's; a synthetic run with nothing to score says why."""
    truth = summary.get("known_truth")
    if not isinstance(truth, dict):
        return None
    if truth.get("skipped"):
        synthetic = (summary.get("dataset") or {}).get("source") == "synthetic"
        return {"skipped": fmt_value(truth["skipped"])} if synthetic else None
    audits = summary.get("audits")
    states = audits.get("states") if isinstance(audits, dict) else None
    states = states if isinstance(states, dict) else {}

    def row(label: str, e: dict, beats: str, shown: str | None = None) -> list[str]:
        return [fmt_value(shown or label), fmt_value(e.get("score")), _interval(e.get("ci")),
                fmt_value(e.get("n")), beats, fmt_value(states.get(label, "–"))]

    methods = truth.get("methods") or {}
    controls = truth.get("controls") or {}
    rows = [row(lab, e or {}, fmt_value(e.get("beats_best_control", "–")))
            for lab, e in methods.items() if isinstance(e, dict)]
    best = truth.get("best_control")
    if isinstance(controls.get(best), dict):
        rows.append(row(best, controls[best], "–", f"{best} (best control)"))
    others = [f"{lab.removeprefix('control: ')} {fmt_value(e.get('score'))}"
              for lab, e in controls.items() if lab != best and isinstance(e, dict)]
    return {
        "table": {"columns": ["method", "truth score", "95% interval", "images",
                              "beats best control", "verdict"],
                  "rows": rows, "numeric": [False, True, False, True, False, False]},
        "images": fmt_value(truth.get("images")),
        "max_lesions": fmt_value(truth.get("max_lesions")),
        "min_lesions": fmt_value(truth.get("min_lesions")),
        "others": ", ".join(others),
    }
