"""The scorecard: methods × audits, each cell a mean with a 95% interval, a rule and a cost.

Intervals are Student-t intervals over the audited images (mean ± t(0.975, n−1)·s/√n), NaN
values skipped; with fewer than two finite values the interval is undefined (NaN / null).
Intervals are clipped to the range a metric can take (a correlation never leaves [−1, 1]).

A ruled cell's status: ``pass`` or ``fail`` when its whole interval lies on one side of the
rule's threshold, ``inconclusive`` when the interval contains the threshold (or is undefined),
so that a mean just across the line on a handful of images decides nothing. Two statuses the
numbers cannot give are set by the audit: ``not tested`` (the method refused or was left out)
and ``not informative`` (the check's own controls cannot be told apart on this data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .base import INFO, Cell, model_level_audits, nan_to_none
from .controls import is_control

NOT_TESTED, NOT_INFORMATIVE = "not tested", "not informative"
# Families a trusted method must pass a check of, where the run has one: maps of noise pass
# randomization, maps of the image (edges, the centre) pass faithfulness or localization
# against weak references; only a map that explains the model passes both kinds.
REQUIRED_FAMILIES = ("randomization", "faithfulness")


def wilson_ci(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion: inside [0, 1], sensible at 0/n and n/n."""
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


# Metrics whose per-image values are hits (0 or 1), by name prefix.
HIT_RATES = ("pointing_game",)


def is_rate(metric: str) -> bool:
    return metric.split(".")[-1].startswith(HIT_RATES)


def mean_ci(values, level: float = 0.95, rate: bool = False) -> tuple[float, float, float, int]:
    """(mean, lo, hi, n) of the finite ``values``: a Student-t interval, or for a hit rate
    (``rate``: every value 0 or 1, the pointing game's) a Wilson score interval, where a
    t-interval would leave [0, 1] or collapse to a point at 0/n and n/n. A similarity that is
    1 on every image is not a hit rate: its t-interval is the point 1."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(v.mean())
    if rate and np.isin(v, (0.0, 1.0)).all():
        lo, hi = wilson_ci(int(v.sum()), n, level)
        return mean, lo, hi, n
    if n < 2:
        return mean, float("nan"), float("nan"), n
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half, n


# The range each metric can take (by name prefix): intervals are clipped to it.
METRIC_RANGES: tuple[tuple[str, float, float], ...] = (
    ("spearman", -1.0, 1.0), ("cascade_", -1.0, 1.0),
    ("mean_pairwise_spearman", -1.0, 1.0), ("deletion_auc", 0.0, 1.0), ("insertion_auc", 0.0, 1.0),
    ("road_gap", -1.0, 1.0), ("pointing_game", 0.0, 1.0), ("auroc", 0.0, 1.0),
    ("relevance_rank", 0.0, 1.0), ("infidelity", 0.0, math.inf),
    ("max_sensitivity", 0.0, math.inf), ("completeness", 0.0, math.inf),
    ("sparseness", 0.0, 1.0), ("complexity", 0.0, math.inf), ("avg_sensitivity", 0.0, math.inf),
    ("local_lipschitz", 0.0, math.inf), ("faithfulness_correlation", -1.0, 1.0),
    ("monotonicity_correlation", -1.0, 1.0), ("random_logit", -1.0, 1.0),
    ("smooth_", -1.0, 1.0), ("gini", 0.0, 1.0), ("on_object_share", 0.0, 1.0),
)


def metric_range(metric: str) -> tuple[float, float]:
    for prefix, lo, hi in METRIC_RANGES:
        if metric.startswith(prefix):
            return lo, hi
    if "_share_" in metric:
        return 0.0, 1.0
    return -math.inf, math.inf


def cell_interval(cell: Cell) -> tuple[float, float, float, int]:
    """(mean, lo, hi, n) of a cell, the interval clipped to the metric's range."""
    return metric_interval(cell.values, cell.metric)


def metric_interval(values, metric: str) -> tuple[float, float, float, int]:
    """(mean, lo, hi, n) of one metric's values, the interval clipped to its range."""
    mean, lo, hi, n = mean_ci(values, rate=is_rate(metric))
    low, high = metric_range(metric)
    if math.isfinite(lo):
        lo = min(max(lo, low), high)
    if math.isfinite(hi):
        hi = max(min(hi, high), low)
    return mean, lo, hi, n


def cell_status(cell: Cell) -> str:
    """``pass`` / ``fail`` / ``inconclusive`` / ``not tested`` / ``not informative``, or ``""``
    for a cell without a rule."""
    if cell.forced:
        return cell.forced
    if cell.passed is None:
        return ""
    verdict = "pass" if cell.passed else "fail"
    if cell.threshold is None:
        return verdict
    _, lo, hi, _ = cell_interval(cell)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= cell.threshold <= hi:
        return "inconclusive"
    return verdict


def rank_cells(cells: list[Cell]) -> dict[int, int]:
    """Rank (1 = best) of each cell among the cells with the same audit and metric."""
    ranks: dict[int, int] = {}
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.audit, cell.metric), []).append(cell)
    for group in groups.values():
        scored = []
        for cell in group:
            mean = mean_ci(cell.values)[0]
            if math.isfinite(mean):
                scored.append((-mean if cell.higher_is_better else mean, cell))
        # Ties keep the methods' order (a stable sort on the score alone), run after run.
        for rank, (_, cell) in enumerate(sorted(scored, key=lambda t: t[0]), start=1):
            ranks[id(cell)] = rank
    return ranks


def scorecard_rows(cells: list[Cell]) -> list[dict]:
    ranks = rank_cells(cells)
    rows = []
    for cell in cells:
        mean, lo, hi, n = cell_interval(cell)
        rows.append(
            {
                "method": cell.method,
                "audit": cell.audit,
                "metric": cell.metric,
                "mean": mean,
                "ci_lo": lo,
                "ci_hi": hi,
                "n": n,
                "direction": "higher" if cell.higher_is_better else "lower",
                "pass": "" if cell.passed is None else ("pass" if cell.passed else "fail"),
                "status": cell_status(cell),
                "threshold": "" if cell.threshold is None else cell.threshold,
                "rank": ranks.get(id(cell), ""),
                "rule": cell.rule,
                "note": cell.note,
                "control": is_control(cell.method),
                "seconds": round(cell.seconds, 3),
                "model_evals": int(cell.model_evals),
            }
        )
    return rows


def cell_summary(cell: Cell) -> dict:
    mean, lo, hi, n = cell_interval(cell)
    return {
        "metric": cell.metric,
        "score": nan_to_none(mean),
        "ci": [nan_to_none(lo), nan_to_none(hi)],
        "n": n,
        "pass": cell.passed,
        "status": cell_status(cell),
        "threshold": nan_to_none(cell.threshold),
        "higher_is_better": cell.higher_is_better,
        "rule": cell.rule,
        "note": cell.note,
        "control": is_control(cell.method),
        "seconds": round(cell.seconds, 3),
        "model_evals": int(cell.model_evals),
    }


def scorecard_summary(cells: list[Cell]) -> list[dict]:
    """Every cell as ``{method, audit, metric, score, ci, n, status, threshold, ...}``:
    the list summary.json keeps under ``audits.scorecard`` (what the report's grid reads)."""
    return [{"method": c.method, "audit": c.audit, **cell_summary(c)} for c in cells]


def summarize_cells(cells: list[Cell]) -> dict:
    """``{method: headline cell}`` plus ``{method: {"metrics": [...]}}`` for every cell.

    The headline is the first cell of a method (audits list their main metric first).
    """
    out: dict[str, dict] = {}
    for cell in cells:
        entry = cell_summary(cell)
        if cell.method not in out:
            out[cell.method] = {**entry, "metrics": [entry]}
        else:
            out[cell.method]["metrics"].append(entry)
    return out


@dataclass
class Judgement:
    """How the verdict's rules read one method's cells (shared by the verdict and its lines)."""

    counted: list[Cell]  # judged cells that can decide (not "not informative")
    failed: list[Cell]
    unsure: list[Cell]  # inconclusive or not tested
    passed: list[Cell]
    missing: list[str]  # required families without a passed check
    state: str = ""  # trusted | fail | unsure | missing | none | fooled


def judge(cells: list[Cell], methods: list[str]) -> tuple[dict[str, Judgement], list[str], list[str]]:
    """Each method's judgement, the trusted methods, and the controls that would be trusted.

    A method is trusted when none of its judged method-audit cells failed, was inconclusive
    or was not tested, at least one passed, and it passed a check of each required family
    the run could decide (``REQUIRED_FAMILIES``). Model-level audits never decide it; a
    control (``controls.py``) is judged by the same rules, and if one would be trusted, no
    method is (state ``fooled``): the checks could not tell a map that ignores the model
    from one that does not.
    """
    decided = {INFO[c.audit].family for c in cells if c.audit in INFO
               and cell_status(c) in ("pass", "fail")}
    required = [f for f in REQUIRED_FAMILIES if f in decided]
    out: dict[str, Judgement] = {}
    for method in methods:
        judged = _judged(cells, method)
        status = {id(c): cell_status(c) for c in judged}
        passed = [c for c in judged if status[id(c)] == "pass"]
        j = Judgement(
            counted=[c for c in judged if status[id(c)] != NOT_INFORMATIVE],
            failed=[c for c in judged if status[id(c)] == "fail"],
            unsure=[c for c in judged if status[id(c)] in ("inconclusive", NOT_TESTED)],
            passed=passed,
            missing=[f for f in required if not any(INFO[c.audit].family == f for c in passed)],
        )
        j.state = ("none" if not j.counted else "fail" if j.failed else "unsure" if j.unsure
                   else "missing" if j.missing else "trusted")
        out[method] = j
    fooled = [m for m, j in out.items() if j.state == "trusted" and is_control(m)]
    trusted = [] if fooled else [m for m, j in out.items() if j.state == "trusted"]
    if fooled:
        for m, j in out.items():
            if j.state == "trusted" and not is_control(m):
                j.state = "fooled"
    return out, trusted, fooled


STATE_WORDS = {"trusted": "trusted", "fail": "do not trust", "unsure": "undecided",
               "missing": "undecided", "fooled": "undecided", "none": "no verdict"}


def verdict_states(cells: list[Cell], methods: list[str]) -> dict[str, str]:
    """``{label: "trusted" | "do not trust" | "undecided" | "no verdict"}``: the verdict in
    one word per method and control, for code that acts on it."""
    judged, trusted, _ = judge(cells, methods)
    return {m: "trusted" if m in trusted else STATE_WORDS[j.state] for m, j in judged.items()}


def verdict(cells: list[Cell], methods: list[str], shortcut: dict | None) -> tuple[str, list[str]]:
    """Plain-language verdict and the methods whose maps can be trusted (rules: ``judge``)."""
    judged, trusted, fooled = judge(cells, methods)
    lines: list[str] = []
    pass_rate: dict[str, tuple[int, int]] = {}
    for method, j in judged.items():
        if j.counted and not is_control(method):
            pass_rate[method] = (len(j.passed), len(j.counted))
        if j.state == "none":
            lines.append(f"{method}: no audit with a pass/fail rule decided anything, so no verdict.")
        elif j.state == "fail":
            reasons = "; ".join(f"{c.audit} ({c.metric}): fails '{c.rule}'" for c in j.failed)
            lines.append(f"{method}: do not trust — failed {len(j.failed)} of {len(j.counted)} "
                         f"checks: {reasons}.")
        elif j.state == "unsure":
            reasons = "; ".join(f"{c.audit} ({c.metric}{': ' + c.note if c.note else ''})"
                                for c in j.unsure)
            lines.append(
                f"{method}: not established — {len(j.unsure)} of {len(j.counted)} checks inconclusive "
                f"or not tested (audit more images, or see why): {reasons}."
            )
        elif j.state == "missing":
            lines.append(f"{method}: not established — passed no {' or '.join(j.missing)} check.")
        elif j.state == "fooled":
            lines.append(f"{method}: not established — passed all {len(j.passed)} checks, but so "
                         "did a negative control.")
        else:
            names = ", ".join(sorted({c.audit for c in j.passed}))
            what = ("a map that ignores the model passed every check"
                    if is_control(method) else "trusted")
            lines.append(f"{method}: {what} — passed all {len(j.passed)} checks ({names}).")
    if fooled:
        head = (f"The audits passed a negative control ({', '.join(fooled)}): on this data they "
                "cannot tell a map that ignores the model from an explanation, so no method is "
                "trusted.")
    elif trusted:
        head = f"This model's maps can be trusted with {', '.join(trusted)}."
    else:
        head = "None of the audited methods passed every check: read its maps with caution."
        if pass_rate:
            best = max(p / n for p, n in pass_rate.values())
            closest = [m for m, (p, n) in pass_rate.items() if p / n == best and p > 0]
            shown = ", ".join(f"{m} ({pass_rate[m][0]} of {pass_rate[m][1]} checks)" for m in closest)
            if closest:
                head += f" Closest to trustworthy: {shown}."
    if shortcut and shortcut.get("flagged"):
        classes = ", ".join(shortcut.get("classes", [])) or "some classes"
        head += (
            f" Warning: the shortcut screening found evidence off the object for {classes};"
            " the model may rely on a shortcut, whatever the method."
        )
    return " ".join([head, *lines]), trusted


def _judged(cells: list[Cell], method: str) -> list[Cell]:
    """A method's cells that can decide its trust: ruled (or forced) method-audit cells."""
    model_level = model_level_audits()
    return [c for c in cells if c.method == method and c.audit not in model_level
            and (c.passed is not None or c.forced)]
