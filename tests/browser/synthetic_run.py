"""A finished run folder written directly (no training): 32 px images with masks, stored maps
of two methods, predictions, audit tables and a summary whose scorecard comes from real
``Cell`` objects. Fast enough for 2,000 images; the report renders from it as from any run.

As in a real run, the audits' pool and the explained images overlap only in part: the last
``AUDITED_ONLY`` test images were audited, not explained, and their maps are where the audit
stage keeps them (``maps_audited/``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.numpy import save_file

from xaudit.audit.base import Cell
from xaudit.audit.judge import assess
from xaudit.audit.scorecard import scorecard_rows, scorecard_summary
from xaudit.audit.verdict_lines import method_lines, verdict
from xaudit.run import write_csv, write_json

CLASSES = ["healthy", "rust", "spot"]
METHODS = ("saliency", "integrated_gradients")  # unsigned, signed
SIZE = 32
AUDITED_ONLY = 3


def _write_images(root: Path, n_test: int, rng: np.random.Generator) -> list[tuple[str, int]]:
    """images/test/<class>/<i>.png and masks/test/...; returns (relative name, label)."""
    out = []
    # The folder source needs a train split beside the test split: one image per class.
    names = [(f"train/{c}/0.png", k) for k, c in enumerate(CLASSES)]
    names += [(f"test/{CLASSES[i % len(CLASSES)]}/{i:05d}.png", i % len(CLASSES))
              for i in range(n_test)]
    for name, label in names:
        img = rng.integers(0, 60, (SIZE, SIZE, 3), dtype=np.uint8)
        img[..., label] += 150
        mask = np.zeros((SIZE, SIZE), np.uint8)
        y, x = rng.integers(4, 20, 2)
        mask[y:y + 10, x:x + 10] = 255
        for folder, arr in (("images", img), ("masks", mask)):
            path = root / folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(path)
        out.append((name, label))
    return out


def write_run(root: Path, n_test: int = 12, seed: int = 0) -> Path:
    """Write a finished run into ``root`` (data beside it in ``root/data``); return ``root``."""
    from xaudit.data import load_dataset
    from xaudit.recipe import load_recipe

    rng = np.random.default_rng(seed)
    data = root / "data"
    _write_images(data, n_test, rng)
    recipe = (f"name: synthetic-{n_test}\nseed: {seed}\ndata:\n  source: folder\n"
              f"  path: {data / 'images'}\n  masks: {data / 'masks'}\n"
              f"model:\n  image_size: {SIZE}\n  resize_size: {SIZE}\n")
    root.mkdir(parents=True, exist_ok=True)
    (root / "recipe.yaml").write_text(recipe, encoding="utf-8")
    records = load_dataset(load_recipe(root / "recipe.yaml").data, seed).splits["test"]
    names = {r.id: r for r in records}
    ids = sorted(names)
    # Every fifth image is misclassified as the next class.
    rows = []
    for k, image_id in enumerate(ids):
        label = names[image_id].label
        pred = (label + 1) % len(CLASSES) if k % 5 == 4 else label
        prob = float(0.55 + 0.4 * rng.random())
        rows.append({"id": image_id, "split": "test", "true": CLASSES[label], "pred": CLASSES[pred],
                     "true_idx": label, "pred_idx": pred, "correct": int(pred == label),
                     "prob": prob, "loss": float(-np.log(prob if pred == label else 1 - prob))})
    write_csv(root / "tables/predictions.csv", rows, list(rows[0]))
    extra = AUDITED_ONLY if n_test > 2 * AUDITED_ONLY else 0
    explained = rows[:len(rows) - extra]
    write_csv(root / "tables/explained_images.csv",
              [{k: r[k] for k in ("id", "true", "pred", "prob", "correct")} for r in explained])
    write_csv(root / "tables/metrics_per_class.csv",
              [{"class": c, "precision": 0.8, "recall": 0.8, "f1": 0.8, "support": 1} for c in CLASSES])
    targets = np.array([r["pred_idx"] for r in rows], dtype=np.int64)
    n_explained = len(explained)
    for method in METHODS:
        maps = rng.normal(size=(len(ids), SIZE, SIZE)).astype(np.float32)
        if method == "saliency":
            maps = np.abs(maps)
        for where, part in (("maps", slice(0, n_explained)), ("maps_audited", slice(n_explained, None))):
            if not ids[part]:
                continue
            folder = root / where / method
            folder.mkdir(parents=True, exist_ok=True)
            save_file({"maps": maps[part].copy(), "targets": targets[part].copy()},
                      str(folder / "chunk_00000.safetensors"))
            write_json(folder / "index.json", {"label": method, "chunks": [
                {"file": "chunk_00000.safetensors", "ids": ids[part]}]})
        # The true class's maps of the explained wrong predictions, as the explain stage stores them.
        wrong = [r for r in explained if not r["correct"]]
        folder = root / "maps_true_class" / method
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"maps": maps[[ids.index(r["id"]) for r in wrong]][:, ::-1].copy(),
                   "targets": np.array([r["true_idx"] for r in wrong], dtype=np.int64)},
                  str(folder / "chunk_00000.safetensors"))
        write_json(folder / "index.json", {"label": method, "chunks": [
            {"file": "chunk_00000.safetensors", "ids": [r["id"] for r in wrong]}]})
    audited = ids[:3] + ids[n_explained:] if extra else ids[: min(6, len(ids))]
    loc = [{"method": m, "id": i, "pointing_game": float(k % 2), "auroc": 0.5 + 0.05 * k}
           for m in METHODS for k, i in enumerate(audited)]
    write_csv(root / "tables/audit_localization.csv", loc)
    rand = [{"method": m, "mode": mode, "block": "b", "depth": depth, "id": i,
             "spearman_abs": 0.1 * depth + 0.01 * k}
            for m in METHODS for k, i in enumerate(audited)
            for mode, depth in (("cascading", 0), ("cascading", 1))]
    write_csv(root / "tables/audit_model_randomization.csv", rand)
    cells = [
        Cell("saliency", "localization", "auroc", np.array([0.9, 0.92, 0.91, 0.93]), True, True,
             "mean auroc above 0.60", threshold=0.6, check="superior"),
        Cell("integrated_gradients", "localization", "auroc", np.array([0.3, 0.9, 0.5, 0.8]), True,
             True, "mean auroc above 0.60", threshold=0.6, check="superior"),
        Cell("saliency", "faithfulness", "infidelity", np.array([0.4, 0.41, 0.42]), False, False,
             "mean infidelity below 0.164", threshold=0.164, check="superior"),
        Cell("integrated_gradients", "faithfulness", "infidelity", np.array([0.1, 0.11, 0.12]),
             False, True, "mean infidelity below 0.164", threshold=0.164, check="superior"),
    ]
    assessment = assess(cells, list(METHODS))
    audits = {"scorecard": scorecard_summary(cells, assessment),
              "verdict": verdict(assessment, None), "trusted": assessment.trusted,
              "sections": []}
    audits["verdict_lines"] = method_lines(cells, assessment, audits)
    write_csv(root / "tables/scorecard.csv", scorecard_rows(cells, assessment))
    correct = sum(r["correct"] for r in rows)
    write_json(root / "model/model.json", {"classes": CLASSES, "preprocessing": {
        "image_size": SIZE, "resize_size": SIZE, "mean": [0.5] * 3, "std": [0.25] * 3}})
    write_json(root / "summary.json", {
        "name": f"synthetic-{n_test}", "created": "2026-12-02T00:00:00+00:00", "seed": seed,
        "dataset": {"name": "synthetic", "source": "folder", "classes": CLASSES,
                    "n": {"test": len(ids)}, "has_masks": True},
        "model": {"name": "tiny", "mode": "frozen"},
        "test": {"accuracy": correct / len(rows), "macro_f1": 0.8, "n": len(rows), "loss": 0.3},
        "explanations": {m: {"n_images": len(ids), "seconds": 1.0, "model_evals": len(ids)}
                         for m in METHODS},
        "explanations_true_class": {m: len(ids) - correct for m in METHODS},
        "audits": audits,
    })
    return root
