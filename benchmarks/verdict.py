"""Images and model evaluations the verdict needs to decide each cell: the paired tests
against the controls (today's rules) beside the previous release's rule (the method's own
t-interval against the stricter control's mean, as a fixed threshold), from one summary.json."""

from __future__ import annotations

import math

from scipy import stats


def _old_images(entry: dict, controls: list[dict]) -> int | None:
    """Images the previous rule needed to decide the cell at the observed mean and spread:
    the t-interval's half-width below the distance from the stricter control's mean."""
    lo, hi = (entry.get("ci") or [None, None])[:2]
    n, mean = int(entry.get("n") or 0), entry.get("score")
    means = [c["score"] for c in controls if c.get("score") is not None]
    if n < 2 or lo is None or hi is None or mean is None or not means:
        return None
    threshold = max(means) if entry.get("higher_is_better") else min(means)
    sd = (hi - lo) / 2 / float(stats.t.ppf(0.975, n - 1)) * math.sqrt(n)
    gap = abs(mean - threshold)
    if gap == 0:
        return None  # never decided
    if sd == 0:
        return 2
    return max(2, math.ceil((1.96 * sd / gap) ** 2))


def decision_table(audits: dict) -> list[dict]:
    """Per method cell of a ``controls`` check: images to decide, new rule and old."""
    cells = [c for c in audits.get("scorecard") or [] if c.get("check") == "controls"]
    out = []
    for e in cells:
        if e["method"].startswith("control: ") or e.get("status") in ("not tested", "not informative"):
            continue
        controls = [c for c in cells if c["method"].startswith("control: ")
                    and c["audit"] == e["audit"] and c["metric"] == e["metric"]]
        new = (e.get("images_to_decide") if e.get("status") == "inconclusive"
               else e.get("n_paired"))
        old = _old_images(e, controls)
        evals = (e.get("model_evals") or 0) / max(int(e.get("n") or 1), 1)
        out.append({"method": e["method"], "cell": f"{e['audit']}.{e['metric']}",
                    "status": e.get("status"), "new": new, "old": old,
                    "evals_per_image": evals})
    return out


def report(res, audits: dict, label: str) -> None:
    """Print the table and add, per method, old images / new images to decide (its slowest
    cell: a method is decided when all its cells are)."""
    rows = decision_table(audits)
    for r in rows:
        old = "never" if r["old"] is None else r["old"]
        print(f"    {r['method']:<22} {r['cell']:<38} {r['status'] or '':<13} new {r['new']!s:>5}  old {old!s:>6}")
    methods = dict.fromkeys(r["method"] for r in rows)
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        new = max((r["new"] or 0) for r in mine)
        if any(r["old"] is None for r in mine):
            res.add(f"{label}: {m} images to decide, old rule / new", math.inf, 5.0,
                    f"new {new}; old: some cell never decides")
            continue
        old = max(r["old"] for r in mine)
        res.add(f"{label}: {m} images to decide, old rule / new", old / max(new, 1), 5.0,
                f"new {new}, old {old} (evaluations scale with images)")
