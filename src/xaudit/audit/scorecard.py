"""The scorecard: methods × audits, each cell a mean with a 95% interval, a rule and a cost.

Intervals are Student-t intervals over the audited images (mean ± t(0.975, n−1)·s/√n), NaN
values skipped; with fewer than two finite values the interval is undefined (NaN / null).
Intervals are clipped to the range a metric can take (a correlation never leaves [−1, 1]).

These intervals describe a cell; they do not decide it. A ruled cell's status (``pass``,
``fail``, ``inconclusive``) comes from the verdict's paired tests against the negative
controls (``judge.py``, ``stats.py``). Two statuses the numbers cannot give are set by the
audit: ``not tested`` (the method refused or was left out) and ``not informative`` (the
check cannot tell maps apart on this data, e.g. a map that is the same for every image).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from .controls import is_control
from .helpers import nan_to_none
from .judge import NOT_INFORMATIVE, NOT_TESTED, REQUIRED_FAMILIES, Assessment, assess
from .types import Cell

__all__ = ["NOT_INFORMATIVE", "NOT_TESTED", "REQUIRED_FAMILIES", "assess"]


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


def cell_status(cell: Cell, cells: list[Cell] | None = None) -> str:
    """The status of ``cell`` judged among ``cells`` (its audit's result; default: alone)."""
    return assess(cells if cells is not None else [cell]).status(cell)


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


def scorecard_rows(cells: list[Cell], assessment: Assessment | None = None) -> list[dict]:
    """tables/scorecard.csv: one row per cell, with the test that decided it."""
    assessment = assessment or assess(cells)
    ranks = rank_cells(cells)
    rows = []
    for cell in cells:
        mean, lo, hi, n = cell_interval(cell)
        test = test_fields(cell, assessment)
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
                "status": assessment.status(cell),
                "check": cell.check,
                "against": test["against"] or "",
                "effect": _blank(test["effect"]),
                "effect_lo": _blank(test["effect_ci"][0]),
                "effect_hi": _blank(test["effect_ci"][1]),
                "min_difference": _blank(test["delta"]),
                "p_pass": _blank(test["p_pass"]),
                "p_fail": _blank(test["p_fail"]),
                "images_to_decide": _blank(test["images_to_decide"]),
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


def _blank(value):
    return "" if value is None else value


def test_fields(cell: Cell, assessment: Assessment) -> dict:
    """The deciding test of a cell, as plain numbers (None where the cell has no test)."""
    verdict = assessment.of(cell)
    deciding = verdict.deciding()
    if deciding is None:
        return {"against": None, "effect": None, "effect_ci": [None, None], "delta": None,
                "p_pass": None, "p_fail": None, "n_paired": None,
                "images_to_decide": None, "tests": []}
    against, test = deciding
    lo, hi = test.bounds()
    return {
        "against": against,
        "effect": nan_to_none(test.mean),
        "effect_ci": [nan_to_none(lo), nan_to_none(hi)],
        "delta": nan_to_none(test.delta),
        "p_pass": nan_to_none(test.p_pass),
        "p_fail": nan_to_none(test.p_fail),
        "n_paired": test.n,
        "images_to_decide": verdict.images_to_decide() if verdict.status == "inconclusive" else None,
        "tests": [{"against": a, "effect": nan_to_none(t.mean), "n": t.n, "decision": d,
                   "p_pass": nan_to_none(t.p_pass), "p_fail": nan_to_none(t.p_fail)}
                  for d, (a, t) in zip(verdict.decisions, verdict.tests, strict=True)],
    }


def cell_summary(cell: Cell, assessment: Assessment) -> dict:
    mean, lo, hi, n = cell_interval(cell)
    verdict = assessment.of(cell)
    return {
        "metric": cell.metric,
        "score": nan_to_none(mean),
        "ci": [nan_to_none(lo), nan_to_none(hi)],
        "n": n,
        "status": verdict.status,
        "check": cell.check,
        **test_fields(cell, assessment),
        "threshold": nan_to_none(cell.threshold),
        "higher_is_better": cell.higher_is_better,
        "rule": cell.rule,
        "note": cell.note or verdict.why,
        "control": is_control(cell.method),
        "seconds": round(cell.seconds, 3),
        "model_evals": int(cell.model_evals),
    }


def scorecard_summary(cells: list[Cell], assessment: Assessment | None = None) -> list[dict]:
    """Every cell as ``{method, audit, metric, score, ci, n, status, against, effect, ...}``:
    the list summary.json keeps under ``audits.scorecard`` (what the report's grid reads)."""
    assessment = assessment or assess(cells)
    return [{"method": c.method, "audit": c.audit, **cell_summary(c, assessment)} for c in cells]


def summarize_cells(cells: list[Cell], assessment: Assessment) -> dict:
    """``{method: headline cell}`` plus ``{method: {"metrics": [...]}}`` for every cell.

    The headline is the first cell of a method (audits list their main metric first).
    """
    out: dict[str, dict] = {}
    for cell in cells:
        entry = cell_summary(cell, assessment)
        if cell.method not in out:
            out[cell.method] = {**entry, "metrics": [entry]}
        else:
            out[cell.method]["metrics"].append(entry)
    return out
