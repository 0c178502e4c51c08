"""Sequential auditing: images in rounds, results merged, the error rate held across looks.

Round k audits the next ``n`` images of the pool (round-robin over classes) for the methods
whose verdict is still open, with every negative control (their values are the yardsticks).
After each round the verdict looks at everything audited so far at level α / (k (k + 1)):
these levels sum to α over any number of looks, so a run may be continued later with more
rounds and its decisions keep their error rate (a union bound over the looks).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .helpers import stratified_index
from .types import AuditImages, AuditResult


def look_level(alpha: float, look: int) -> float:
    """The level of look ``look`` (1-based): α / (k (k + 1)), summing to α over all looks."""
    return alpha / (look * (look + 1))


def round_chunks(test: AuditImages, n: int, rounds: int,
                 pools: list[list[str]] | None = None) -> list[AuditImages]:
    """Up to ``rounds`` disjoint batches of at most ``n`` images, each round-robin over
    classes: from ``pools[k]`` (ids) for round k, else from what earlier rounds left."""
    chunks: list[AuditImages] = []
    position = {image_id: k for k, image_id in enumerate(test.ids)}
    left = list(range(len(test)))
    labels = test.labels.tolist()
    for k in range(rounds):
        if pools is not None:
            if k >= len(pools):
                break
            left = [position[i] for i in pools[k] if i in position]
        if not left:
            break
        taken = set(stratified_index([labels[i] for i in left], n))
        chunks.append(test.subset([left[j] for j in sorted(taken)]))
        left = [i for j, i in enumerate(left) if j not in taken]
    return chunks


def merge(into: AuditResult, later: AuditResult) -> AuditResult:
    """``into`` with ``later``'s per-image values appended cell by cell (matched by method
    and metric), its rows appended and its cost added. Text, figures and the summary stay
    those of the first round (they describe its images)."""
    by_key = {(c.method, c.metric): c for c in into.cells}
    for cell in later.cells:
        mine = by_key.get((cell.method, cell.metric))
        if mine is None:
            into.cells.append(cell)
            by_key[(cell.method, cell.metric)] = cell
            continue
        if mine.forced or cell.forced:
            # "not tested" / "not informative" hold for the whole method: the first stands
            # unless only the later round could say it
            if mine.forced is None and cell.forced is not None:
                mine.forced, mine.note = cell.forced, cell.note
            continue
        mine.values = np.concatenate([np.asarray(mine.values, float), np.asarray(cell.values, float)])
        if mine.ids is not None and cell.ids is not None:
            mine.ids = list(mine.ids) + list(cell.ids)
        else:
            mine.ids = None
        mine.seconds += cell.seconds
        mine.model_evals += cell.model_evals
    into.rows = into.rows + [{**row, "round": later.summary.get("round", "")} for row in later.rows]
    into.seconds += later.seconds
    into.model_evals += later.model_evals
    return into


def tag_round(result: AuditResult, look: int) -> AuditResult:
    """Mark a round's result and its rows with the round they came from."""
    result.summary = {**result.summary, "round": look}
    result.rows = [{**row, "round": look} for row in result.rows]
    return result


def copy_result(result: AuditResult) -> AuditResult:
    """A copy whose cells can be extended without touching ``result``'s (a saved round)."""
    return dataclasses.replace(result, cells=[dataclasses.replace(c) for c in result.cells],
                               rows=list(result.rows), summary=dict(result.summary))


def rounds_to(images: int, per_round: int) -> int:
    """Rounds of ``per_round`` images it takes to audit ``images`` more (at least one)."""
    return max(1, math.ceil(images / max(per_round, 1)))
