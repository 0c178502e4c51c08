"""Checks of the JSON files a run reads back (``model.json``, a method's ``index.json``).

A run folder can be edited by hand, copied from elsewhere or half-written by an old version;
what is read back is validated like a recipe, and a bad file is one error naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ConfigError, ModelError, XauditError, echo
from .run import read_inside, read_json
from .typed import MAX_SIDE, check_value

MAX_CLASSES = 100_000
_PREPROCESSING = {
    "image_size": {"ge": 8, "le": MAX_SIDE},
    "resize_size": {"ge": 8, "le": MAX_SIDE},
    "mean": {"ge": 0, "le": 1, "length": 3},
    "std": {"gt": 0, "le": 1, "length": 3},
}


def _load(path: Path, kind: type[XauditError]) -> Any:
    return read_json(path, kind=kind)  # inside its folder, a regular file, bounded


def read_map_chunk(path: str | Path, root: str | Path, as_numpy: bool = False) -> dict:
    """One chunk of stored maps (``maps``, ``targets``, maybe ``delta``) as torch tensors or,
    without torch, numpy arrays; ``root``: the folder of method folders it must lie in."""
    data = read_inside(path, root)
    try:
        if as_numpy:
            from safetensors.numpy import load
        else:
            from safetensors.torch import load
        tensors = load(data)
    except Exception as err:  # safetensors raises its own error types for a foreign file
        raise XauditError(f"{path}: not a chunk of stored maps ({type(err).__name__}: "
                          f"{echo(str(err))})") from None
    _need("maps" in tensors and "targets" in tensors, Path(path),
          f"not a chunk of stored maps (holds {echo(sorted(tensors))})", XauditError)
    return tensors


def _need(cond: bool, path: Path, message: str, kind: type[XauditError]) -> None:
    if not cond:
        raise kind(f"{path}: {message}")


SOURCES = ("torchvision", "timm", "transformers", "python")
# What each source needs to rebuild its architecture: key, type, what it is in words.
_SOURCE_KEYS = {"transformers": ("config", dict, "the model's config (a mapping)"),
                "python": ("module", str, "'package.module:factory'")}


def read_model_meta(path: str | Path, need_preprocessing: bool = False,
                    need_classes: bool = False) -> dict:
    """``model.json``: architecture name and source, class names and preprocessing, each checked.

    The preprocessing block and the class names are checked when present;
    ``need_preprocessing`` / ``need_classes`` require them.
    """
    path = Path(path)
    meta = _load(path, ModelError)
    _need(isinstance(meta, dict), path, f"expected a JSON object, got {echo(meta)}", ModelError)
    _need(isinstance(meta.get("name"), str) and bool(meta.get("name")), path,
          f"name: expected a model name, got {echo(meta.get('name'))}", ModelError)
    source = meta.get("source", "torchvision")
    _need(source in SOURCES, path, f"source: expected one of {', '.join(SOURCES)}, got {echo(source)}",
          ModelError)
    if source in _SOURCE_KEYS:
        key, kind, what = _SOURCE_KEYS[source]
        _need(isinstance(meta.get(key), kind) and bool(meta.get(key)), path,
              f"{key}: a {source} model needs {what}, got {echo(meta.get(key))}", ModelError)
    for key in ("anatomy", "model_args"):
        _need(meta.get(key) is None or isinstance(meta[key], dict), path,
              f"{key}: expected a mapping, got {echo(meta.get(key))}", ModelError)
    _need(not need_classes or meta.get("classes") is not None, path,
          "classes: the class names are missing", ModelError)
    n = meta.get("num_classes")
    _need(n is None or (isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_CLASSES), path,
          f"num_classes: must be in [1, {MAX_CLASSES}] or null, got {echo(n)}", ModelError)
    classes = meta.get("classes")
    if classes is not None:
        _need(isinstance(classes, list) and all(isinstance(c, str) for c in classes), path,
              f"classes: expected a list of names, got {echo(classes)}", ModelError)
        _need(n is None or len(classes) == n, path,
              f"classes: {len(classes)} names for num_classes {n}", ModelError)
    pre = meta.get("preprocessing")
    if pre is None and not need_preprocessing:
        return meta
    _need(isinstance(pre, dict), path, f"preprocessing: expected a mapping, got {echo(pre)}", ModelError)
    for key, limits in _PREPROCESSING.items():
        value = pre.get(key)
        is_num = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = (isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
              if "length" in limits else is_num and (float(value).is_integer()))
        _need(ok, path, f"preprocessing.{key}: expected {'3 numbers' if 'length' in limits else 'an integer'}, "
              f"got {echo(value)}", ModelError)
        try:
            check_value(value, limits, f"preprocessing.{key}")
        except ConfigError as err:
            raise ModelError(f"{path}: {err}") from None
    return meta


def read_map_index(path: str | Path, label: str, root: str | Path | None = None) -> dict:
    """A method's ``index.json``: chunk files (plain names in the method's folder) and their
    ids; ``root``: the folder it must lie in (default its own)."""
    path = Path(path)
    index = read_json(path, root)
    _need(isinstance(index, dict) and isinstance(index.get("chunks"), list), path,
          f"expected an object with a list of chunks, got {echo(index)}", XauditError)
    seen: set[str] = set()
    for i, chunk in enumerate(index["chunks"]):
        where = f"chunks[{i}]"
        _need(isinstance(chunk, dict) and isinstance(chunk.get("file"), str)
              and isinstance(chunk.get("ids"), list), path,
              f"{where}: expected {{file, ids}}, got {echo(chunk)}", XauditError)
        name = chunk["file"]
        _need(Path(name).name == name and name.endswith(".safetensors") and not name.startswith("."), path,
              f"{where}.file: {echo(name)} is not a chunk file name of this folder", XauditError)
        ids = chunk["ids"]
        _need(all(isinstance(x, str) for x in ids), path, f"{where}.ids: expected image ids, got {echo(ids)}",
              XauditError)
        for x in ids:
            _need(x not in seen, path, f"{where}: image id {echo(x)} is stored twice", XauditError)
            seen.add(x)
    index.setdefault("label", label)
    return index
