"""Folder sources: ImageFolder layout (``folder``) and labels from file names (``filename``)."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError, echo
from .base import SOURCES, SPLITS, DatasetBundle, Record, readable_class_name
from .io import IMAGE_EXTENSIONS

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


def _existing_dir(path: str | None, key: str) -> Path:
    if not path:
        raise ConfigError(f"{key}: a folder is required for this data source")
    p = Path(path).expanduser()
    if not p.is_dir():
        raise DataError(f"{key}: folder not found: {p}")
    return p


def _visible(p: Path) -> bool:
    return not p.name.startswith(".")


def _special_reason(f: Path, root: Path, follow_symlinks: bool) -> str | None:
    """Why ``f`` (a listed entry that is not a plain file inside ``root``) is refused, or None."""
    if f.is_symlink() and not f.exists():
        try:
            os.stat(f)
        except OSError as err:
            if err.errno == errno.ELOOP:
                return "symbolic link loop (the link leads back to itself)"
        return "broken symbolic link (its target does not exist)"
    if not follow_symlinks and not f.resolve().is_relative_to(root.resolve()):
        return "symbolic link leading outside the dataset folder (data.follow_symlinks: true follows it)"
    if f.is_dir() or f.is_file():
        return None
    if f.is_fifo():
        return "not a regular file (a FIFO)"
    if f.is_char_device() or f.is_block_device():
        return "not a regular file (a device)"
    return "not a regular file (a socket or other special file)"


def _scan_files(folder: Path, root: Path | None = None,
                follow_symlinks: bool = False) -> tuple[list[Path], list[dict]]:
    """Image files below ``folder`` (sorted) and the files skipped, each with its reason.

    Links that are broken or leave ``root`` (the dataset folder) and special files (FIFOs,
    devices) are refused with a row: opening a FIFO would block, and a link could pull any
    local file into the run.
    """
    root = root or folder
    images, skipped = [], []
    entries, unlisted = _walk(folder)
    skipped += [{"file": str(d), "reason": f"cannot list folder ({reason})"} for d, reason in unlisted]
    for f in entries:
        if any(part.startswith(".") for part in f.relative_to(folder).parts):
            continue
        try:
            reason = _special_reason(f, root, follow_symlinks)
        except OSError as err:  # a file whose folder lets it be listed but not looked at
            reason = f"cannot read file ({type(err).__name__})"
        if reason:
            skipped.append({"file": str(f), "reason": reason})
            continue
        if not f.is_file():
            continue
        if f.suffix.lower() in IMAGE_EXTENSIONS:
            images.append(f)
        else:
            skipped.append(
                {"file": str(f), "reason": f"extension {f.suffix or '(none)'!r} is not an image type"}
            )
    return images, skipped


def _walk(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every entry below ``folder`` (sorted; links to folders listed, not entered), and the
    folders that could not be listed with why: Path.rglob skips those without a word."""
    entries: list[Path] = []
    unlisted: list[tuple[Path, str]] = []

    def refused(err: OSError) -> None:
        unlisted.append((Path(err.filename or folder), type(err).__name__))

    for top, dirs, files in os.walk(folder, onerror=refused):
        base = Path(top)
        entries += [base / name for name in (*dirs, *files)]
    return sorted(entries), sorted(unlisted)


def _listed(root: Path) -> list[Path]:
    """The entries of the dataset folder itself: one clear error when it cannot be listed."""
    try:
        return list(root.iterdir())
    except OSError as err:
        raise DataError(f"data.path: cannot list {root} ({err.strerror or type(err).__name__}); "
                        "xaudit needs a folder it can read") from None


def _mask_for(masks_root: Path | None, rel: Path) -> Path | None:
    if masks_root is None:
        return None
    for ext in (rel.suffix, ".png", *IMAGE_EXTENSIONS):
        candidate = (masks_root / rel).with_suffix(ext)
        if candidate.is_file():
            return candidate
    return None


def stratified_split(
    labels: list[int], fractions: dict[str, float], seed: int
) -> dict[str, list[int]]:
    """Indices per split, stratified by label, seeded; every split's share rounded per class."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    labels_arr = np.asarray(labels)
    for cls in sorted(set(labels)):
        idx = np.flatnonzero(labels_arr == cls)
        rng.shuffle(idx)
        n = len(idx)
        n_val = int(round(n * fractions["val"]))
        n_test = int(round(n * fractions["test"]))
        if fractions["test"] > 0 and n_test == 0 and n >= 2:
            n_test = 1
        n_train = n - n_val - n_test
        out["train"] += idx[:n_train].tolist()
        out["val"] += idx[n_train : n_train + n_val].tolist()
        out["test"] += idx[n_train + n_val :].tolist()
    return {s: sorted(v) for s, v in out.items()}


def _select_classes(found: list[str], wanted: list[str] | None) -> list[str]:
    if wanted is None:
        return found
    missing = [c for c in wanted if c not in found]
    if missing:
        raise ConfigError(f"data.classes: {missing} not found. Classes present: {', '.join(found)}")
    return list(wanted)


def _finish(
    name: str,
    classes: list[str],
    items: list[tuple[str, int, Path, str]],  # (id, label, path, split or "")
    cfg,
    seed: int,
    skipped: list[dict],
    masks_root: Path | None,
    objects_root: Path | None,
    rel_root: Path,
    info: dict,
) -> DatasetBundle:
    if len(classes) < 2:
        raise DataError(
            f"{name}: found {len(classes)} class ({', '.join(classes) or 'none'}); "
            "a classifier needs at least 2 classes"
        )
    per_class = {c: 0 for c in classes}
    for _, label, _, _ in items:
        per_class[classes[label]] += 1
    empty = [c for c, n in per_class.items() if n == 0]
    if empty:
        raise DataError(
            f"{name}: class {empty[0]!r} has no images "
            f"(allowed extensions: {', '.join(IMAGE_EXTENSIONS)})"
        )
    readable = [readable_class_name(c) for c in classes]
    if len(set(readable)) == len(readable):  # PlantVillage "Plant___Disease" -> "Plant: Disease"
        classes = readable
    splits: dict[str, list[Record]] = {s: [] for s in SPLITS}
    if all(split for *_, split in items):
        assigned = {s: [i for i, it in enumerate(items) if it[3] == s] for s in SPLITS}
    else:
        assigned = stratified_split([it[1] for it in items], cfg.splits, seed)
    for split, idxs in assigned.items():
        counts: dict[int, int] = {}
        for i in idxs:
            rid, label, path, _ = items[i]
            if cfg.max_per_class is not None and counts.get(label, 0) >= cfg.max_per_class:
                continue
            counts[label] = counts.get(label, 0) + 1
            rel = path.relative_to(rel_root)
            splits[split].append(
                Record(
                    id=rid,
                    label=label,
                    image=path,
                    mask=_mask_for(masks_root, rel),
                    object_mask=_mask_for(objects_root, rel),
                    source=str(path),
                )
            )
    if masks_root is not None and not any(r.mask for rs in splits.values() for r in rs):
        raise DataError(f"data.masks: no mask in {masks_root} matches an image's relative path")
    return DatasetBundle(name=name, classes=classes, splits=splits, skipped=skipped, info=info)


@SOURCES.register("folder")
def folder_source(cfg, seed: int) -> DatasetBundle:
    """A folder per class, optionally inside train/val/test folders; masks mirror the tree."""
    root = _existing_dir(cfg.path, "data.path")
    masks_root = _existing_dir(cfg.masks, "data.masks") if cfg.masks else None
    objects_root = None
    if masks_root is not None and (masks_root.parent / "object_masks").is_dir():
        objects_root = masks_root.parent / "object_masks"
    subdirs = sorted(d for d in _listed(root) if d.is_dir() and _visible(d))
    split_dirs = {SPLIT_ALIASES[d.name.lower()]: d for d in subdirs if d.name.lower() in SPLIT_ALIASES}
    skipped: list[dict] = []
    items: list[tuple[str, int, Path, str]] = []
    if split_dirs:
        if "train" not in split_dirs:
            raise DataError(f"data.path: {root} has split folders {sorted(split_dirs)} but no 'train'")
        found = sorted({d.name for sd in split_dirs.values() for d in _listed(sd) if d.is_dir() and _visible(d)})
        classes = _select_classes(found, cfg.classes)
        for split, sd in split_dirs.items():
            for c_idx, cls in enumerate(classes):
                cdir = sd / cls
                if not cdir.is_dir():
                    continue
                files, skip = _scan_files(cdir, root, cfg.follow_symlinks)
                skipped += skip
                items += [(f.relative_to(root).as_posix(), c_idx, f, split) for f in files]
        if "test" not in split_dirs or "val" not in split_dirs:
            # carve the missing split(s) out of train, stratified and seeded
            items = _carve(items, split_dirs, cfg.splits, seed)
    else:
        found = [d.name for d in subdirs]
        if not found:
            raise DataError(f"data.path: {root} has no class folders (expected one folder per class)")
        classes = _select_classes(found, cfg.classes)
        for c_idx, cls in enumerate(classes):
            files, skip = _scan_files(root / cls, root, cfg.follow_symlinks)
            skipped += skip
            items += [(f.relative_to(root).as_posix(), c_idx, f, "") for f in files]
    return _finish(
        root.name, classes, items, cfg, seed, skipped, masks_root, objects_root, root,
        {"layout": "split folders" if split_dirs else "class folders", "path": str(root)},
    )


def _carve(items, split_dirs, fractions, seed):
    train = [it for it in items if it[3] == "train"]
    rest = [it for it in items if it[3] != "train"]
    missing = [s for s in ("val", "test") if s not in split_dirs]
    frac = {"train": fractions["train"], "val": 0.0, "test": 0.0}
    for s in missing:
        frac[s] = fractions[s]
    total = sum(frac.values())
    frac = {k: v / total for k, v in frac.items()}
    assigned = stratified_split([it[1] for it in train], frac, seed)
    out = list(rest)
    for split, idxs in assigned.items():
        out += [(train[i][0], train[i][1], train[i][2], split) for i in idxs]
    return out


@SOURCES.register("filename")
def filename_source(cfg, seed: int) -> DatasetBundle:
    """Labels from file names: ``label_regex`` (group 1 = class) and/or ``label_map``.

    With only ``label_map``, its keys are regexes tried in order on the file name (pets:
    ``{"^[A-Z]": "cat", "^[a-z]": "dog"}``); with ``label_regex``, the group's value is the
    class, renamed through ``label_map`` when given.
    """
    root = _existing_dir(cfg.path, "data.path")
    if not cfg.label_regex and not cfg.label_map:
        raise ConfigError("data.label_regex or data.label_map is required for the filename source")
    try:
        pattern = re.compile(cfg.label_regex) if cfg.label_regex else None
        rules = [(re.compile(k), v) for k, v in (cfg.label_map or {}).items()] if not pattern else []
    except re.error as err:
        raise ConfigError(f"data.label_regex / data.label_map: invalid regex ({err})") from None
    if pattern is not None and pattern.groups < 1:
        raise ConfigError(f"data.label_regex: {echo(cfg.label_regex)} needs one capturing group")
    _listed(root)  # an unreadable root is one error, not one skipped row
    files, skipped = _scan_files(root, root, cfg.follow_symlinks)
    labelled: list[tuple[Path, str]] = []
    for f in files:
        cls = None
        if pattern is not None:
            m = pattern.search(f.name)
            if m and m.group(1) is not None:
                cls = (cfg.label_map or {}).get(m.group(1), m.group(1))
        else:
            cls = next((v for rx, v in rules if rx.search(f.name)), None)
        if cls is None:
            skipped.append({"file": str(f), "reason": "file name matches no label rule"})
        else:
            labelled.append((f, cls))
    found = sorted({c for _, c in labelled})
    classes = _select_classes(found, cfg.classes)
    index = {c: i for i, c in enumerate(classes)}
    items = [(f.relative_to(root).as_posix(), index[c], f, "") for f, c in labelled if c in index]
    masks_root = _existing_dir(cfg.masks, "data.masks") if cfg.masks else None
    return _finish(
        root.name, classes, items, cfg, seed, skipped, masks_root, None, root,
        {"layout": "labels from file names", "path": str(root)},
    )
