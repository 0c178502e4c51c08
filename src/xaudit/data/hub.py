"""Hugging Face ``datasets``: a hub name (online) or local files of the same schema.

Local forms: a ``save_to_disk`` folder (DatasetDict or Dataset), or a folder / file of
parquet or arrow files (``<split>-*.parquet`` or ``<split>/...`` names pick the split).
The image column is the one of feature type ``Image``; the label column is ``labels`` or
``label`` (a ``ClassLabel``, whose names become the classes) unless the recipe names one.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, DataError, echo, shown
from .base import SOURCES, DatasetBundle, Record
from .folder import SPLIT_ALIASES, stratified_split
from .io import BadImageError


def _import_datasets():
    try:
        import datasets
    except ImportError:
        raise DataError(
            "the hub source needs the `datasets` package: pip install 'xaudit[hub]'"
        ) from None
    return datasets


def _load_local(path: Path):
    datasets = _import_datasets()
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return datasets.load_from_disk(str(path))
    files = [path] if path.is_file() else sorted(
        f for f in path.rglob("*") if f.suffix in (".parquet", ".arrow")
    )
    if not files:
        raise DataError(
            f"data.path: {path} holds no save_to_disk dataset and no .parquet/.arrow files"
        )
    builder = "parquet" if files[0].suffix == ".parquet" else "arrow"
    by_split: dict[str, list[str]] = {}
    for f in files:
        rel = f.relative_to(path).as_posix().lower() if path.is_dir() else f.name.lower()
        split = next(
            (SPLIT_ALIASES[a] for a in sorted(SPLIT_ALIASES, key=len, reverse=True)
             if rel.startswith(a) or f"/{a}" in rel or f"{a}-" in rel),
            "train",
        )
        by_split.setdefault(split, []).append(str(f))
    try:
        return datasets.load_dataset(builder, data_files=by_split)
    except Exception as err:  # datasets raises many kinds for broken files
        raise DataError(f"data.path: cannot read {path} as {builder} files ({err})") from None


def _load_hub(name: str):
    datasets = _import_datasets()
    try:
        return datasets.load_dataset(name)
    except Exception as err:  # offline, unknown name, auth...
        raise DataError(
            f"data.hub_name: could not load {name!r} from the Hugging Face hub "
            f"({type(err).__name__}). Offline? Point data.path at a local copy "
            "(a save_to_disk folder or parquet files)"
        ) from None


def _columns(ds, cfg) -> tuple[str, str, list[str]]:
    datasets = _import_datasets()
    features = ds.features
    names = list(features)
    image_col = cfg.image_column or next(
        (c for c in names if isinstance(features[c], datasets.Image)), None
    )
    if image_col is None or image_col not in features:
        raise DataError(
            f"no image column found (columns: {', '.join(names)}). Set data.image_column"
        )
    label_col = cfg.label_column or next((c for c in ("labels", "label") if c in features), None)
    if label_col is None or label_col not in features:
        raise DataError(
            f"no label column found (columns: {', '.join(names)}; looked for 'labels', 'label'). "
            "Set data.label_column"
        )
    feat = features[label_col]
    if isinstance(feat, datasets.ClassLabel):
        classes = list(feat.names)
    else:
        values = sorted(set(ds[label_col]), key=str)
        classes = [str(v) for v in values]
    return image_col, label_col, classes


class _Row:
    """Zero-argument loader of one dataset row's image cell, as bytes for xaudit's decoder.

    The column is read undecoded (``Image(decode=False)``): ``datasets`` would otherwise open
    the cell itself, bypassing the header-first size guard, and follow a cell that holds only
    a path to any local file (or, with fsspec, a URL).
    """

    def __init__(self, ds, index: int, column: str, root: Path | None, allow_paths: bool):
        self.ds, self.index, self.column = ds, index, column
        self.root, self.allow_paths = root, allow_paths

    def __call__(self):
        return cell_source(self.ds[self.index][self.column], self.root, self.allow_paths,
                           f"row {self.index}")


def cell_source(cell, root: Path | None, allow_paths: bool, name: str = ""):
    """The bytes of an image cell, or its path when paths are allowed and it lies under ``root``."""
    if isinstance(cell, dict):
        if cell.get("bytes"):
            return bytes(cell["bytes"])
        cell = cell.get("path")
    if isinstance(cell, (bytes, bytearray, memoryview)):
        return bytes(cell)
    if not isinstance(cell, str) or not cell:
        raise BadImageError(name, "image cell holds no image bytes")
    if "://" in cell or cell.startswith(("hf:", "http:", "https:")):
        raise BadImageError(name, f"image cell holds a URL ({shown(cell, 60)}); xaudit does not fetch images")
    if not allow_paths:
        raise BadImageError(name, "image cell holds only a path, no bytes (data.allow_paths: true reads "
                                  "paths under data.path)")
    if root is None:
        raise BadImageError(name, "image cell holds only a path, and paths are read only from a local "
                                  "data.path")
    path = (root / cell) if not Path(cell).is_absolute() else Path(cell)
    if not path.resolve().is_relative_to(root.resolve()):
        raise BadImageError(name, f"image cell's path {shown(cell, 60)} lies outside the dataset folder")
    return path


def _undecoded(ds, column: str):
    datasets = _import_datasets()
    if isinstance(ds.features[column], datasets.Image):
        return ds.cast_column(column, datasets.Image(decode=False))
    return ds


@SOURCES.register("hub")
def hub_source(cfg, seed: int) -> DatasetBundle:
    if cfg.path:
        path = Path(cfg.path).expanduser()
        if not path.exists():
            raise DataError(f"data.path: not found: {path}")
        data = _load_local(path)
        name = path.name
    elif cfg.hub_name:
        data = _load_hub(cfg.hub_name)
        name = cfg.hub_name
    else:
        raise ConfigError("the hub source needs data.hub_name (online) or data.path (local files)")
    datasets = _import_datasets()
    if isinstance(data, datasets.Dataset):
        data = datasets.DatasetDict({"train": data})
    splits_in = {SPLIT_ALIASES.get(k.lower(), k.lower()): v for k, v in data.items()}
    unknown = [k for k in splits_in if k not in ("train", "val", "test")]
    if unknown:
        raise DataError(f"unexpected split names {unknown}; expected train / validation / test")
    first = splits_in.get("train") or next(iter(splits_in.values()))
    image_col, label_col, classes = _columns(first, cfg)
    keep = cfg.classes or classes
    missing = [c for c in keep if c not in classes]
    if missing:
        raise ConfigError(f"data.classes: {missing} not found. Classes present: {', '.join(classes)}")
    remap = {classes.index(c): i for i, c in enumerate(keep)}

    def label_index(value) -> int | None:
        if isinstance(value, int) and not isinstance(value, bool):
            idx = value
        else:
            idx = classes.index(str(value)) if str(value) in classes else -1
        if not 0 <= idx < len(classes):
            raise DataError(
                f"label column {echo(label_col)}: value {echo(value)} is not a class. "
                f"Allowed: 0..{len(classes) - 1} or {', '.join(classes)}"
            )
        return remap.get(idx)

    root = None if not cfg.path else (path if path.is_dir() else path.parent)
    splits_in = {k: _undecoded(v, image_col) for k, v in splits_in.items()}
    items: dict[str, list[tuple[str, int, _Row]]] = {}
    for split, ds in splits_in.items():
        labels = ds[label_col]
        rows = []
        for i, value in enumerate(labels):
            lab = label_index(value)
            if lab is not None:
                rows.append((f"{split}/{i:06d}", lab, _Row(ds, i, image_col, root, cfg.allow_paths)))
        items[split] = rows
    if set(items) != {"train", "val", "test"}:
        pool = [r for rows in items.values() for r in rows]
        assigned = stratified_split([r[1] for r in pool], cfg.splits, seed)
        items = {s: [pool[i] for i in idx] for s, idx in assigned.items()}
    splits = {}
    for split in ("train", "val", "test"):
        counts: dict[int, int] = {}
        recs = []
        for rid, lab, row in items.get(split, []):
            if cfg.max_per_class is not None and counts.get(lab, 0) >= cfg.max_per_class:
                continue
            counts[lab] = counts.get(lab, 0) + 1
            recs.append(Record(id=rid, label=lab, image=row, source=f"{name}:{rid}"))
        splits[split] = recs
    if len(keep) < 2:
        raise DataError(f"{name}: found {len(keep)} class; a classifier needs at least 2 classes")
    return DatasetBundle(
        name=name,
        classes=list(keep),
        splits=splits,
        info={"image_column": image_col, "label_column": label_col, "hub_name": cfg.hub_name},
    )
