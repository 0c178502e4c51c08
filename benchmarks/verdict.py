"""Images and model evaluations the verdict needs to decide each cell: the paired tests
against the controls (today's rules) beside the previous release's rule (the method's own
t-interval against the stricter control's mean, as a fixed threshold), from one summary.json."""

from __future__ import annotations

import math

from scipy import stats


def _old_images(entry: dict, controls: list[dict]) -> tuple[int | None, bool]:
    """Images the previous rule needed to decide the cell at the observed mean and spread
    (the t-interval's half-width below the distance from the stricter control's mean), and
    whether the mean lies on the failing side."""
    lo, hi = (entry.get("ci") or [None, None])[:2]
    n, mean = int(entry.get("n") or 0), entry.get("score")
    means = [c["score"] for c in controls if c.get("score") is not None]
    if n < 2 or lo is None or hi is None or mean is None or not means:
        return None, False
    higher = entry.get("higher_is_better")
    threshold = max(means) if higher else min(means)
    failing = mean <= threshold if higher else mean >= threshold
    sd = (hi - lo) / 2 / float(stats.t.ppf(0.975, n - 1)) * math.sqrt(n)
    gap = abs(mean - threshold)
    if gap == 0:
        return None, failing  # never decided
    return (2 if sd == 0 else max(2, math.ceil((1.96 * sd / gap) ** 2))), failing


def decision_table(audits: dict) -> list[dict]:
    """Per method, the images each rule needs to decide it: today's, as the run's rounds
    decided it (or its estimate when open), and the previous release's at the same means
    and spreads (a failing cell decides "do not trust" alone; a trust needs every cell)."""
    cells = [c for c in audits.get("scorecard") or [] if c.get("check") == "controls"]
    looks = (audits.get("rounds") or {}).get("looks") or []
    decided = (audits.get("rules") or {}).get("decided_at_look") or {}
    open_ = audits.get("undecided") or {}
    out = []
    for method in dict.fromkeys(c["method"] for c in cells if not c["method"].startswith("control: ")):
        old_cells = []
        for e in cells:
            if e["method"] != method or e.get("status") in ("not tested", "not informative"):
                continue
            controls = [c for c in cells if c["method"].startswith("control: ")
                        and c["audit"] == e["audit"] and c["metric"] == e["metric"]]
            old_cells.append(_old_images(e, controls))
        failing = [n for n, f in old_cells if f and n is not None]
        known = [n for n, _ in old_cells]
        old = min(failing) if failing else (None if None in known else max(known, default=None))
        if method in decided:
            new = sum(look["images"] for look in looks[: decided[method]])
        else:
            new = (open_.get(method) or {}).get("images_to_decide")
        out.append({"method": method, "state": (audits.get("states") or {}).get(method),
                    "new": new, "old": old})
    return out


def cell_table(audits: dict) -> list[dict]:
    """Per method cell of a paired check: images to decide it today (the images it was
    decided on, or the estimate of an open cell) and under the previous rule."""
    cells = [c for c in audits.get("scorecard") or [] if c.get("check") == "controls"]
    out = []
    for e in cells:
        if e["method"].startswith("control: ") or e.get("status") in ("not tested", "not informative"):
            continue
        controls = [c for c in cells if c["method"].startswith("control: ")
                    and c["audit"] == e["audit"] and c["metric"] == e["metric"]]
        new = e.get("images_to_decide") if e.get("status") == "inconclusive" else e.get("n_paired")
        out.append({"method": e["method"], "cell": f"{e['audit']}.{e['metric']}",
                    "status": e.get("status"), "new": new, "old": _old_images(e, controls)[0]})
    return out


def report(res, audits: dict, label: str) -> None:
    """Per cell, the images each rule needs to decide it; per method, the geometric mean of
    the cells' ratios, and the images its verdict took beside the previous rule's."""
    cells = cell_table(audits)
    for r in cells:
        old = "never" if r["old"] is None else r["old"]
        print(f"    {r['method']:<22} {r['cell']:<38} {r['status'] or '':<13} "
              f"new {r['new']!s:>5}  old {old!s:>6}")
    decisions = {r["method"]: r for r in decision_table(audits)}
    for method in dict.fromkeys(r["method"] for r in cells):
        mine = [r for r in cells if r["method"] == method and r["new"]]
        ratios = [math.log((r["old"] if r["old"] is not None else 10**6) / r["new"]) for r in mine]
        never = sum(r["old"] is None for r in mine)
        d = decisions.get(method) or {}
        note = (f"{d.get('state')} at {d.get('new')} images (previous rule: {d.get('old')}, "
                f"uncorrected); {never} of {len(mine)} cells never decided by it")
        ratio = math.exp(sum(ratios) / len(ratios)) if ratios else float("nan")
        res.add(f"{label}: {method} images per cell decision, old / new (geo. mean)", ratio, 5.0,
                note)
