"""Known truth after the explain stage, on synthetic data: each method's stored maps scored
against the lesions' measured importance (``truth/run_truth.py``); other runs say why not."""

from __future__ import annotations

from ..data.base import Record
from ..data.leaf_render import CLASSES
from ..models import Classifier
from ..run import write_csv
from ..truth.run_truth import TABLE_COLUMNS, known_truth, table_rows
from .explain import Where

LESION_CLASSES = tuple(c for c in CLASSES if c != "healthy")


def skip_reason(source: str, classes: list[str]) -> str | None:
    if source != "synthetic":
        return f"data.source is {source}, not synthetic: no lesion can be re-drawn away"
    if not set(classes) & set(LESION_CLASSES):
        return f"no class with lesions ({', '.join(LESION_CLASSES)}) among the run's classes"
    return None


def truth_stage(clf: Classifier, rows: list[dict], test: list[Record], recipe, methods: list[str],
                where: Where) -> dict:
    """Score ``methods`` (those with stored maps) on the explained ``rows``; write
    ``tables/known_truth.csv`` and the summary's ``known_truth``. Rank 0 only."""
    run = where.run
    reason = skip_reason(recipe.data.source, list(clf.classes))
    if reason is None:
        by_id = {rec.id: rec for rec in test}
        where.log("scoring the maps against the lesions' known importance")
        truth = known_truth(clf, [by_id[row["id"]] for row in rows], run.maps, methods,
                            recipe.seed, where.device)
    else:
        truth = {"skipped": reason}
    if "skipped" in truth:
        run.table("known_truth").unlink(missing_ok=True)
    else:
        write_csv(run.table("known_truth"), table_rows(truth), TABLE_COLUMNS)
    run.update_summary(known_truth=truth)
    return truth
