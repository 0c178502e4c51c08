"""The evaluate stage: test-split predictions, metrics, confusion, top losses."""

from __future__ import annotations

import torch

from ..data.base import Record
from ..data.transforms import DecodedStore
from ..evaluate import most_confused, predict, prediction_rows, summarize
from ..models import Classifier
from ..run import RunDir, write_csv


def evaluate_stage(clf: Classifier, test: list[Record], store: DecodedStore, cfg, own_classes: bool,
                   run: RunDir, device: torch.device, progress) -> dict:
    """Predict ``test``; ``own_classes``: the model keeps its own (many) classes, so the
    metrics cover only those that occur."""
    from ..report import figures

    pre = clf.preprocessing
    probs = predict(clf.module, store, test, pre, cfg.batch_size, device, progress)
    classes = clf.classes
    rows = prediction_rows(test, probs, classes, "test")
    prob_cols = [f"p[{c}]" for c in classes] if len(classes) <= 50 else []
    cols = ["id", "split", "true", "pred", "true_idx", "pred_idx", "correct", "prob", "loss", *prob_cols]
    write_csv(run.table("predictions"), [{k: r[k] for k in cols} for r in rows], cols)
    if own_classes:
        present = sorted({r["true_idx"] for r in rows} | {r["pred_idx"] for r in rows})
        names = [classes[i] for i in present]
        remap = {c: i for i, c in enumerate(present)}
        sub = [{**r, "true_idx": remap[r["true_idx"]], "pred_idx": remap[r["pred_idx"]]} for r in rows]
        metrics, cm, per_class = summarize(sub, names)
    else:
        names = classes
        metrics, cm, per_class = summarize(rows, classes)
    write_csv(run.table("metrics_per_class"), per_class)
    write_csv(run.table("confusion_matrix"),
              [{"true": names[i], **{n: int(cm[i, j]) for j, n in enumerate(names)}} for i in range(len(names))],
              ["true", *names])
    write_csv(run.table("most_confused"), most_confused(cm, names), ["true", "pred", "count"])
    figures.confusion_matrix(cm, names, run.figure("confusion_matrix"))
    worst = sorted(rows, key=lambda r: -r["loss"])[: cfg.top_losses]
    write_csv(run.table("top_losses"), [{c: r[c] for c in ("id", "true", "pred", "prob", "loss")} for r in worst])
    if worst:
        by_id = {r.id: r for r in test}
        images = [store.get(by_id[r["id"]]).image.permute(1, 2, 0).numpy() for r in worst]
        figures.top_losses(images, worst, run.figure("top_losses"))
    run.update_summary(test=metrics)
    return metrics
