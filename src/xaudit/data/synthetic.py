"""The synthetic bean-leaf dataset: records rendered on demand (``leaf_render``), memoised
within a byte budget, and written out as an ImageFolder with masks (``xaudit data synth``).

Each record's image comes from its own seed (the recipe's seed, split, class and index), so
a record is the same whichever records are read, in whatever order.
"""

from __future__ import annotations

import functools
import io
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from PIL import Image

from ..errors import ConfigError, echo
from .base import SOURCES, SPLITS, DatasetBundle, Record
from .leaf_render import (  # noqa: F401  (CLASSES, render_leaf, TAG_COLOURS: the dataset's public names)
    CLASSES,
    TAG_COLOURS,
    TAG_CORNER,
    TAG_FRACTION,
    TAG_PATTERNS,
    SyntheticLeaf,
    render_leaf,
)

if TYPE_CHECKING:
    from ..config import DataConfig, SyntheticConfig

# Memory for memoised dataset renders: ~0.25 MB per record at 224 px, masks alone ~12 kB.
_RENDER_CACHE_BYTES = 32 * 2**20
_MASK_CACHE_BYTES = 64 * 2**20


# --------------------------------------------------------------------------- dataset


class _Key(NamedTuple):
    seed: int
    split: str
    class_index: int  # index into CLASSES
    i: int
    size: int
    tagged: bool
    tag_fraction: float = TAG_FRACTION
    lesion_strength: float = 1.0


def _record_seed(key: _Key) -> np.random.SeedSequence:
    return np.random.SeedSequence(
        [key.seed % 2**64, SPLITS.index(key.split), key.class_index, key.i]
    )


class _ByteLRU:
    """A least-recently-used map bounded by the bytes of its values (thread-safe)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._items: OrderedDict[_Key, tuple[object, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: _Key):
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            self._items.move_to_end(key)
            return hit[0]

    def put(self, key: _Key, value: object, nbytes: int) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = (value, nbytes)
            self.nbytes += nbytes
            while self.nbytes > self.max_bytes and len(self._items) > 1:
                _, (_, dropped) = self._items.popitem(last=False)
                self.nbytes -= dropped

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.nbytes = 0


# Two tiers, so that a record renders once even when a pipeline reads every image first and
# the masks later: whole renders for recent records, and bit-packed masks (1/40 of a render)
# for many more.
_RENDERS = _ByteLRU(_RENDER_CACHE_BYTES)
_MASKS = _ByteLRU(_MASK_CACHE_BYTES)
RENDER_COUNT = 0  # renders made for dataset records (tests check the memoisation with it)


def _render_key(key: _Key) -> SyntheticLeaf:
    global RENDER_COUNT
    leaf = _RENDERS.get(key)
    if leaf is None:
        leaf = render_leaf(_record_seed(key), key.class_index, key.size, key.tagged, key.tag_fraction,
                           key.lesion_strength)
        RENDER_COUNT += 1
        _RENDERS.put(key, leaf, leaf.image.nbytes + 3 * leaf.leaf_mask.nbytes)
        packed = (np.packbits(leaf.lesion_mask), np.packbits(leaf.leaf_mask))
        _MASKS.put(key, packed, packed[0].nbytes + packed[1].nbytes)
    return leaf


def _mask(key: _Key, which: int) -> np.ndarray:
    packed = _MASKS.get(key)
    if packed is None:
        leaf = _render_key(key)
        return (leaf.lesion_mask if which == 0 else leaf.leaf_mask).copy()
    n = key.size * key.size
    return np.unpackbits(packed[which], count=n).reshape(key.size, key.size).astype(bool)


def _image(key: _Key) -> np.ndarray:
    return _render_key(key).image.copy()


def _lesion_mask(key: _Key) -> np.ndarray:
    return _mask(key, 0)


def _leaf_mask(key: _Key) -> np.ndarray:
    return _mask(key, 1)


def leaf_drawing(record: Record) -> dict | None:
    """How a synthetic record's leaf was drawn, as ``render_leaf``'s arguments (seed, label,
    size, shortcut, tag_fraction, lesion_strength), so that it can be re-drawn with changes
    (``render_leaf_without``); None for a record of any other source."""
    image = record.image
    if not (isinstance(image, functools.partial) and image.func is _image):
        return None
    key: _Key = image.args[0]
    return {"seed": _record_seed(key), "label": key.class_index, "size": key.size,
            "shortcut": key.tagged, "tag_fraction": key.tag_fraction,
            "lesion_strength": key.lesion_strength}


def _class_names(classes: list[str] | None) -> list[str]:
    if classes is None:
        return list(CLASSES)
    unknown = [c for c in classes if c not in CLASSES]
    if unknown or not classes or len(set(classes)) != len(classes):
        raise ConfigError(
            f"data.classes: {echo(classes)} is not a subset of the synthetic classes. "
            f"Allowed: {', '.join(CLASSES)} (each at most once, at least one)."
        )
    return list(classes)


def _tagged(seed: int, class_index: int, n: int, strength: float) -> set[int]:
    """Which of a class's ``n`` training images carry its tag: exactly round(strength * n)."""
    k = round(strength * n)
    order = np.random.default_rng([seed % 2**64, 7919, class_index]).permutation(n)
    return set(order[:k].tolist())


def _plan(syn: SyntheticConfig, seed: int, names: list[str], max_per_class: int | None):
    """Yield (split, class name, i, key) for every image, class by class."""
    for split, n in zip(SPLITS, (syn.n_train, syn.n_val, syn.n_test), strict=True):
        n = n if max_per_class is None else min(n, max_per_class)
        for name in names:
            ci = CLASSES.index(name)
            tagged = (
                _tagged(seed, ci, n, syn.shortcut_strength)
                if syn.shortcut and split == "train"
                else set()
            )
            for i in range(n):
                yield split, name, i, _Key(seed, split, ci, i, syn.image_size, i in tagged, syn.shortcut_size,
                                           syn.lesion_strength)


def _shortcut_info(syn: SyntheticConfig, names: list[str]) -> dict:
    if not syn.shortcut:
        return {"enabled": False}
    return {
        "enabled": True,
        "splits": ["train"],
        "corner": TAG_CORNER,
        "size_px": max(3, round(syn.shortcut_size * syn.image_size)),
        "strength": syn.shortcut_strength,
        "colours": {name: list(TAG_COLOURS[name]) for name in names},
        "patterns": {name: TAG_PATTERNS[name] for name in names},
    }


@SOURCES.register("synthetic")
def synthetic_source(cfg: DataConfig, seed: int) -> DatasetBundle:
    """Procedural bean leaves; images render lazily (and once) when a record is first read."""
    syn = cfg.synthetic
    names = _class_names(cfg.classes)
    splits: dict[str, list[Record]] = {s: [] for s in SPLITS}
    for split, name, i, key in _plan(syn, seed, names, cfg.max_per_class):
        rid = f"{split}/{name}/{i:04d}"
        splits[split].append(
            Record(
                id=rid,
                label=names.index(name),
                image=functools.partial(_image, key),
                mask=functools.partial(_lesion_mask, key),
                object_mask=functools.partial(_leaf_mask, key),
                source=f"synthetic:{rid}",
            )
        )
    info = {
        "generator": "synthetic bean leaves",
        "image_size": syn.image_size,
        "lesion_strength": syn.lesion_strength,
        "per_class": {s: len(splits[s]) // len(names) for s in SPLITS},
        "shortcut": _shortcut_info(syn, names),
    }
    return DatasetBundle(name="synthetic", classes=names, splits=splits, info=info)


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array.astype(np.uint8) * 255 if array.dtype == bool else array).save(buf, "PNG")
    return buf.getvalue()


def write_synthetic(out_dir: str | Path, cfg: SyntheticConfig, seed: int) -> Path:
    """Write every split as an ImageFolder: ``images/``, ``masks/`` (lesions), ``object_masks/``."""
    from ..run import atomic_write_bytes, write_json

    out = Path(out_dir)
    names = list(CLASSES)
    for split, name, i, key in _plan(cfg, seed, names, None):
        leaf = render_leaf(_record_seed(key), key.class_index, key.size, key.tagged, key.tag_fraction,
                           key.lesion_strength)
        rel = Path(split) / name / f"{i:04d}.png"
        atomic_write_bytes(out / "images" / rel, _png(leaf.image))
        atomic_write_bytes(out / "masks" / rel, _png(leaf.lesion_mask))
        atomic_write_bytes(out / "object_masks" / rel, _png(leaf.leaf_mask))
    write_json(
        out / "synthetic.json",
        {
            "generator": "synthetic bean leaves",
            "seed": seed,
            "classes": names,
            "per_class": dict(zip(SPLITS, (cfg.n_train, cfg.n_val, cfg.n_test), strict=True)),
            "image_size": cfg.image_size,
            "lesion_strength": cfg.lesion_strength,
            "shortcut": _shortcut_info(cfg, names),
            "layout": "images/<split>/<class>/<name>.png; masks/ (lesions) and "
            "object_masks/ (leaf) mirror images/ as 0/255 PNGs",
        },
    )
    return out
