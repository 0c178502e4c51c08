"""Evaluation: predictions with per-class probabilities, metrics, confusion, top losses."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .data.base import Record
from .data.transforms import DecodedStore, Preprocessing


@torch.inference_mode()
def predict(
    model: torch.nn.Module,
    store: DecodedStore,
    records: Sequence[Record],
    pre: Preprocessing,
    batch_size: int,
    device: torch.device,
    progress=None,
) -> torch.Tensor:
    """Softmax probabilities N×K for ``records`` (float32, CPU)."""
    model.eval()
    out = []
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        x = pre.normalize(store.batch(batch)).to(device).contiguous(memory_format=torch.channels_last)
        logits = model(x).float()
        if not torch.isfinite(logits).all():
            from .errors import ModelError

            raise ModelError(
                "the model produced NaN or infinite outputs; explanations of such a model "
                "would be meaningless (check the learning rate and the input data)"
            )
        out.append(F.softmax(logits, dim=1).cpu())
        if progress is not None:
            progress("predict", min(start + batch_size, len(records)), len(records))
    return torch.cat(out) if out else torch.empty(0, 0)


def prediction_rows(records: Sequence[Record], probs: torch.Tensor, classes: list[str], split: str) -> list[dict]:
    rows = []
    eps = 1e-12
    for rec, p in zip(records, probs, strict=True):
        pred = int(p.argmax())
        row = {
            "id": rec.id,
            "split": split,
            "true": classes[rec.label],
            "pred": classes[pred],
            "true_idx": rec.label,
            "pred_idx": pred,
            "correct": int(pred == rec.label),
            "prob": float(p[pred]),
            "loss": float(-np.log(max(float(p[rec.label]), eps))),
        }
        for k, name in enumerate(classes):
            row[f"p[{name}]"] = float(p[k])
        rows.append(row)
    return rows


def confusion(y_true: Sequence[int], y_pred: Sequence[int], k: int) -> np.ndarray:
    cm = np.zeros((k, k), dtype=np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        cm[t, p] += 1
    return cm


def per_class_metrics(cm: np.ndarray, classes: list[str]) -> list[dict]:
    rows = []
    for i, name in enumerate(classes):
        tp = cm[i, i]
        fp = cm[:, i].sum() - tp
        fn = cm[i, :].sum() - tp
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append(
            {"class": name, "precision": float(precision), "recall": float(recall), "f1": float(f1), "support": int(cm[i].sum())}
        )
    return rows


def most_confused(cm: np.ndarray, classes: list[str], top: int = 10) -> list[dict]:
    pairs = [
        {"true": classes[i], "pred": classes[j], "count": int(cm[i, j])}
        for i in range(len(classes))
        for j in range(len(classes))
        if i != j and cm[i, j] > 0
    ]
    return sorted(pairs, key=lambda r: -r["count"])[:top]


def summarize(rows: list[dict], classes: list[str]) -> tuple[dict, np.ndarray, list[dict]]:
    """Test metrics, confusion matrix and per-class table from prediction rows."""
    y_true = [r["true_idx"] for r in rows]
    y_pred = [r["pred_idx"] for r in rows]
    cm = confusion(y_true, y_pred, len(classes))
    per_class = per_class_metrics(cm, classes)
    n = len(rows)
    # Classes without test images have no recall to average: macro F1 leaves them out.
    supported = [r["f1"] for r in per_class if r["support"]]
    metrics = {
        "n": n,
        "accuracy": float(np.trace(cm) / n) if n else 0.0,
        "loss": float(np.mean([r["loss"] for r in rows])) if n else 0.0,
        "macro_f1": float(np.mean(supported)) if supported else 0.0,
        "macro_f1_classes": len(supported),
    }
    return metrics, cm, per_class
