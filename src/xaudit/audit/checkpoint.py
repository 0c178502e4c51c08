"""Checkpoints of finished audits, so that a killed audit stage resumes where it stopped.

``run_dir/audit_state/<audit>.json`` holds an exact JSON round trip of an audit's result
(numpy arrays and scalars, tuples, NaN); the folder is removed once the stage has finished.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from .base import AuditResult, Cell, safe_name

STATE_DIR = "audit_state"  # run_dir/audit_state/<audit>.json: finished audits of an unfinished stage


def clear_audit_state(run_dir: Any) -> None:
    """Remove the saved audit results of a stage that has finished."""
    shutil.rmtree(Path(run_dir.root) / STATE_DIR, ignore_errors=True)


_TAG = "__xaudit__"


class _NotSaveable(TypeError):
    pass


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, bool) or type(value) in (int, str):
        return value
    if type(value) is float:
        return value if math.isfinite(value) else {_TAG: "float", "v": repr(value)}
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, (np.ndarray, np.generic)):
        if value.dtype.hasobject:
            raise _NotSaveable("numpy object array")
        array = np.asarray(value)  # 0-d for a scalar (ascontiguousarray would make it 1-d)
        return {_TAG: "ndarray" if isinstance(value, np.ndarray) else "scalar",
                "dtype": array.dtype.str, "shape": list(array.shape),
                "data": base64.b64encode(array.tobytes()).decode("ascii")}
    if isinstance(value, Cell):
        return {_TAG: "cell", "fields": {f.name: _encode(getattr(value, f.name))
                                          for f in dataclasses.fields(Cell)}}
    if isinstance(value, tuple):
        return {_TAG: "tuple", "items": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {_TAG: "dict", "items": [[_encode(k), _encode(v)] for k, v in value.items()]}
    raise _NotSaveable(type(value).__name__)


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    kind = value[_TAG]
    if kind == "float":
        return float(value["v"])
    if kind in ("ndarray", "scalar"):
        raw = base64.b64decode(value["data"])
        array = np.frombuffer(raw, dtype=np.dtype(value["dtype"])).reshape(value["shape"]).copy()
        return array if kind == "ndarray" else array[()]
    if kind == "cell":
        return Cell(**{k: _decode(v) for k, v in value["fields"].items()})
    if kind == "tuple":
        return tuple(_decode(v) for v in value["items"])
    if kind == "dict":
        return {_decode(k): _decode(v) for k, v in value["items"]}
    raise ValueError(f"unknown tag {kind!r}")


def _checkpoint_path(state_dir: Path, name: str) -> Path:
    return state_dir / f"{safe_name(name)}.json"


def save_checkpoint(
    state_dir: Path, name: str, key: str, result: AuditResult, maps: dict, log: Callable[[str], None]
) -> None:
    from ..run import atomic_write_text

    try:
        data = {
            "key": key,
            "result": {f.name: _encode(getattr(result, f.name)) for f in dataclasses.fields(AuditResult)},
            "maps": [[_encode(k), s, e] for k, (s, e) in maps.items()],
        }
    except _NotSaveable as err:
        log(f"audit {name}: its result holds a {err} and is not saved; a resumed run redoes it")
        return
    atomic_write_text(_checkpoint_path(state_dir, name), json.dumps(data, allow_nan=False) + "\n")


def load_checkpoint(
    state_dir: Path, name: str, key: str, figures_dir: Path
) -> tuple[AuditResult, dict] | None:
    """The saved result of audit ``name`` if its key matches and its figures exist."""
    path = _checkpoint_path(state_dir, name)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("key") != key:
            return None
        result = AuditResult(**{k: _decode(v) for k, v in data["result"].items()})
        maps = {_decode(k): (float(s), float(e)) for k, s, e in data["maps"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable or from another version: redo the audit
    if not all((figures_dir / f).is_file() for f in result.figures):
        return None
    return result, maps
