"""The image explorer's data: every explained image, its maps and its own audit values.

The page's script (static/explorer.js) reads this payload from a JSON data block and sets
image sources only when an image comes into view, so a run of thousands of images opens
quickly. Images are JPEG (maps in colour) and the mask outline a transparent PNG.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import XauditError
from ..run import RunDir, read_csv, read_json
from ..safety import safe_name
from ..stored import read_map_chunk, read_map_index
from . import encode

STATIC = Path(__file__).parent / "static"
THUMB_SIDE = 72
# The viewer's panels are 192 px: no image needs more pixels than it is shown at. Larger
# runs get smaller panels, so the page stays a size a browser opens quickly.
VIEW_SIDE, VIEW_SIDE_LARGE, LARGE_RUN = 192, 112, 200
# Per-image audit values shown in the viewer: (audit table, column, label).
IMAGE_AUDIT_VALUES = (
    ("localization", "pointing_game", "pointing-game hit"),
    ("localization", "auroc", "mask AUROC"),
    ("faithfulness", "deletion_auc", "deletion AUC"),
    ("faithfulness", "insertion_auc", "insertion AUC"),
    ("model_randomization", "spearman_abs", "randomized-model similarity"),
)


def load_maps(run: RunDir, label: str, ids: list[str],
              root: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(maps N×H×W, targets N) of one method in the order of ``ids``, read without torch;
    ``root``: the folder of method folders (the run's ``maps/`` unless given)."""
    root = run.maps if root is None else root
    folder = root / safe_name(label)
    index_path = folder / "index.json"
    if not index_path.is_file():
        raise XauditError(f"no maps/{folder.name}/index.json in {run.root}: run `xaudit explain` first")
    found: dict[str, tuple[np.ndarray, int]] = {}
    wanted = set(ids)
    for chunk in read_map_index(index_path, label, root)["chunks"]:
        if not wanted.intersection(chunk["ids"]):
            continue
        data = read_map_chunk(folder / chunk["file"], root, as_numpy=True)
        for k, image_id in enumerate(chunk["ids"]):
            found[image_id] = (data["maps"][k], int(data["targets"][k]))
    missing = [i for i in ids if i not in found]
    if missing:
        raise XauditError(f"maps of {label}: no stored map for {missing[0][:80]!r}")
    maps = np.stack([np.asarray(found[i][0], dtype=np.float32) for i in ids])
    if maps.ndim == 4:  # C×H×W per image: the channels summed, as everywhere else
        maps = maps.sum(axis=1)
    return maps, np.array([found[i][1] for i in ids])


def image_audit_values(run: RunDir) -> dict[tuple[str, str], dict[str, float]]:
    """``{(method, id): {label: value}}`` from the audits' per-image tables."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    tables: dict[str, list[dict[str, str]]] = {}
    for audit, column, label in IMAGE_AUDIT_VALUES:
        if audit not in tables:
            path = run.table(f"audit_{audit}")
            tables[audit] = read_csv(path) if path.is_file() else []
        rows = tables[audit]
        if audit == "model_randomization":
            cascade = [r for r in rows if r.get("mode") == "cascading" and r.get("depth") != ""]
            deepest: dict[str, int] = {}
            for r in cascade:
                deepest[r["method"]] = max(deepest.get(r["method"], -1), int(r["depth"]))
            rows = [r for r in cascade if int(r["depth"]) == deepest[r["method"]]]
        for r in rows:
            if column in r and r.get(column) not in ("", None) and "id" in r:
                value = float(r[column])
                out.setdefault((r["method"], r["id"]), {})[label] = (
                    value if math.isfinite(value) else None)
    return out


def cell_images(run: RunDir, ids: list[str]) -> dict[str, list[int]]:
    """``{"method\taudit": [explorer indices]}``: the explained images behind each scorecard
    cell, read from the audits' per-image tables (an audit draws its own pool, so a cell's
    images in the explorer are those of its pool that were also explained)."""
    index = {image_id: k for k, image_id in enumerate(ids)}
    out: dict[str, set[int]] = {}
    for path in sorted(run.tables.glob("audit_*.csv")):
        audit = path.stem[len("audit_"):]
        for r in read_csv(path):
            if r.get("id") in index and r.get("method"):
                out.setdefault(f"{r['method']}\t{audit}", set()).add(index[r["id"]])
    return {key: sorted(found) for key, found in out.items()}


def _rows(run: RunDir, labels: list[str]) -> tuple[list[dict], str | None]:
    """The explained images, then the audited images the explain stage did not explain (with
    the maps the audit stage kept of them: a method decided in an earlier round has none of a
    later round's images), and a note on audited images left out."""
    path = run.table("explained_images")
    if not path.is_file():
        return [], None
    explained = read_csv(path)
    pred_path = run.table("predictions")
    preds = {r["id"]: r for r in read_csv(pred_path)} if pred_path.is_file() else {}
    audited = _audited_only(run, labels, {r["id"] for r in explained})
    kept = [i for i in audited if any(i in ids for ids in audited[i].values()) and i in preds]
    note = None
    if len(kept) < len(audited):
        note = (f"{len(audited) - len(kept)} audited images are not in the explorer: the audit "
                "stage kept no map of them (a resumed audit); "
                f"`xaudit audit {run.root}` keeps them")
    out = []
    for r in [*explained, *(preds[i] for i in kept)]:
        p = preds.get(r["id"], {})
        out.append({
            "id": r["id"], "true": r["true"], "pred": r["pred"],
            "correct": r["correct"] in ("1", "True", "true"),
            "prob": float(r["prob"]), "loss": float(p["loss"]) if p.get("loss") else None,
            "split": p.get("split", "test"), "audited_only": r["id"] in audited,
        })
    return out, note


def _audited_only(run: RunDir, labels: list[str], explained: set[str]) -> dict[str, dict]:
    """``{id: {label: ids stored}}`` of the test images a method audit scored that were not
    explained (the audits' per-image tables list them; the model-level screens, which also
    read training images, decide no method and are left out)."""
    from ..audit.registry import model_level_audits

    model_level = set(model_level_audits())
    ids: dict[str, None] = {}
    for path in sorted(run.tables.glob("audit_*.csv")):
        if path.stem[len("audit_"):] in model_level:
            continue
        for r in read_csv(path):
            if r.get("id") and r.get("method") in labels and r["id"] not in explained:
                ids[r["id"]] = None
    stored = {lab: _stored_ids(run.audited_maps, lab) for lab in labels}
    return {i: stored for i in ids}


def _stored_ids(root: Path, label: str) -> set[str]:
    index = root / safe_name(label) / "index.json"
    if not index.is_file():
        return set()
    return {i for c in read_map_index(index, label, root)["chunks"] for i in c["ids"]}


def _class_names(run: RunDir, summary: dict) -> list[str]:
    meta = run.model_dir / "model.json"
    if meta.is_file():
        return [str(c) for c in read_json(meta).get("classes") or []]
    return [str(c) for c in (summary.get("dataset") or {}).get("classes") or []]


Loader = Callable[[RunDir, dict, list[str]], dict]


def explorer_payload(run: RunDir, summary: dict, originals: Loader | None = None) -> dict | None:
    """The explorer's data, or None when the run explained no image."""
    labels = [str(k) for k in summary.get("explanations") or {}]
    rows, left_out = _rows(run, labels)
    if not rows or not labels:
        return None
    if originals is None:
        from .originals import load_originals as originals
    ids = [r["id"] for r in rows]
    note = None
    try:
        pictures = originals(run, summary, ids)
    except XauditError as err:
        pictures, note = {}, f"original images not shown: {err}"
    side = VIEW_SIDE if len(rows) <= LARGE_RUN else VIEW_SIDE_LARGE
    classes = _class_names(run, summary)
    values = image_audit_values(run)
    methods, maps, targets = [], {}, {}
    true_maps = _true_class_maps(run, summary, rows)
    explained = [r["id"] for r in rows if not r["audited_only"]]
    extra = [r["id"] for r in rows if r["audited_only"]]
    for label in labels:
        # the explained images' maps, then those of the audited ones the audit stage kept
        kept = _stored_ids(run.audited_maps, label)
        parts = [(ids_, *load_maps(run, label, ids_, root)) for ids_, root in
                 ((explained, None), ([i for i in extra if i in kept], run.audited_maps)) if ids_]
        maps[label] = {i: m for ids_, ms, _ in parts for i, m in zip(ids_, ms, strict=True)}
        targets[label] = {i: t for ids_, _, ts in parts for i, t in zip(ids_, ts, strict=True)}
        # Signed view only where the maps take both signs (not saliency's |gradient|, not
        # Grad-CAM after its ReLU).
        methods.append({"label": label,
                        "signed": bool(any((m < 0).any() for m in maps[label].values()))})
    images = []
    for row in rows:
        pic = pictures.get(row["id"])
        own = [lab for lab in labels if row["id"] in maps[lab]]
        t = int(targets[own[0]][row["id"]])
        entry = {
            **row,
            "target": classes[t] if 0 <= t < len(classes) else str(t),
            "t": encode.photo(pic.pixels, THUMB_SIDE, 80) if pic else
                 encode.colour_map(maps[own[0]][row["id"]], False, THUMB_SIDE, 80),
            "o": encode.photo(pic.pixels, side) if pic else "",
            "k": encode.outline(pic.mask, side) if pic is not None and pic.mask is not None else "",
            "m": {},
            "a": {},
            "tm": {},
        }
        for m in methods:
            lab = m["label"]
            if row["id"] in maps[lab]:  # else the method was decided before this image's round
                entry["m"][lab] = [encode.coded_map(maps[lab][row["id"]], side),
                                   encode.map_scale(maps[lab][row["id"]])]
            if (lab, row["id"]) in values:
                entry["a"][lab] = values[(lab, row["id"])]
            if row["id"] in true_maps.get(lab, {}):
                tmap = true_maps[lab][row["id"]]
                entry["tm"][lab] = [encode.coded_map(tmap, side),
                                    encode.map_scale(tmap)]
        images.append(entry)
    note = "; ".join(n for n in (note, left_out) if n) or None
    return {"methods": methods, "images": images, "note": note, "side": side,
            "cells": cell_images(run, ids)}


def _true_class_maps(run: RunDir, summary: dict, rows: list[dict]) -> dict[str, dict]:
    """{method: {id: map}} of the true class for the wrong predictions the explain stage
    explained that way (none for runs that explain another target)."""
    wrong = [r["id"] for r in rows if not r["correct"] and not r["audited_only"]]
    out: dict[str, dict] = {}
    for label in summary.get("explanations_true_class") or {}:
        if wrong and (run.true_class_maps / safe_name(label) / "index.json").is_file():
            tmaps, _ = load_maps(run, label, wrong, run.true_class_maps)
            out[label] = dict(zip(wrong, tmaps, strict=True))
    return out


def payload_json(payload: dict) -> str:
    """The payload as JSON safe inside a <script type="application/json"> block: '<', '>'
    and '&' escaped, so no run value can close the block."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def static_text(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")
