"""Recipe values checked by type and range: strict coercion of YAML values to annotations,
and the ``ranged`` field limits with the one check that reads them.

Used by the recipe's dataclasses (``config``) and by the files a run folder stores
(``stored``), so both refuse a value with the same words.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import field
from typing import Any, Literal

from .errors import ConfigError, echo, shown
from .registry import did_you_mean

MAX_SIDE = 4096  # pixels; a 100000-pixel side would need 30 GB per decoded image


def ranged(default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
           le: float | None = None, lt: float | None = None, length: int | None = None,
           default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field whose value (or each number of a list value) ``check_ranges`` bounds."""
    limits = {k: v for k, v in {"ge": ge, "gt": gt, "le": le, "lt": lt, "length": length}.items() if v is not None}
    return field(default=default, default_factory=default_factory, metadata=limits)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{origin.__name__}[{args}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widened to float)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return coerce(value, arg, key)
            except ConfigError as err:
                errors.append(err)
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {echo(value)}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {echo(value)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed:
            return value
        raise ConfigError(
            f"{key}: {echo(value)} is not allowed. Allowed: {', '.join(map(str, allowed))}."
            + did_you_mean(shown(value), [str(a) for a in allowed])
        )
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {echo(value)}")
        (item,) = typing.get_args(tp)
        return [coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {echo(value)}")
        kt, vt = typing.get_args(tp)
        return {coerce(k, kt, key): coerce(v, vt, f"{key}.{shown(k)}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"unsupported annotation {tp!r} for {key}")
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {echo(value)} ({type(value).__name__})")


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys by their dotted path."""
    where = prefix or "recipe"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {echo(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{shown(key)}" if prefix else shown(key)
        if key not in names:
            raise ConfigError(
                f"unknown key {dotted!r}. Allowed keys{' in ' + prefix if prefix else ''}: "
                f"{', '.join(names)}.{did_you_mean(shown(key), names)}"
            )
        kwargs[key] = coerce(value, hints[key], dotted)
    return cls(**kwargs)


def _num(x: float) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() and abs(x) < 1e15 else str(x)


def range_text(limits: dict[str, float]) -> str:
    """The allowed range in words: ``must be at least 1``, ``must be in (0, 1]``."""
    lo = ("[", limits["ge"]) if "ge" in limits else ("(", limits["gt"]) if "gt" in limits else None
    hi = ("]", limits["le"]) if "le" in limits else (")", limits["lt"]) if "lt" in limits else None
    if lo and hi:
        return f"must be in {lo[0]}{_num(lo[1])}, {_num(hi[1])}{hi[0]}"
    if lo:
        if lo[0] == "(":
            return f"must be greater than {_num(lo[1])}"
        return "must be 0 or more" if lo[1] == 0 else f"must be at least {_num(lo[1])}"
    if hi:
        return f"must be at most {_num(hi[1])}" if hi[0] == "]" else f"must be less than {_num(hi[1])}"
    return "must be a finite number"


def _in_range(x: float, limits: dict[str, float]) -> bool:
    if isinstance(x, float) and not math.isfinite(x):
        return False
    return (("ge" not in limits or x >= limits["ge"]) and ("gt" not in limits or x > limits["gt"])
            and ("le" not in limits or x <= limits["le"]) and ("lt" not in limits or x < limits["lt"]))


def check_value(value: Any, limits: dict[str, Any], key: str) -> None:
    """Refuse ``value`` (a number, a list of numbers or a mapping of such lists) out of ``limits``."""
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            check_value(v, limits, f"{key}.{shown(k)}")
        return
    bounds = {k: v for k, v in limits.items() if k != "length"}
    if isinstance(value, list):
        if "length" in limits and len(value) != limits["length"]:
            raise ConfigError(f"{key}: must hold {limits['length']} numbers, got {len(value)}")
        for i, v in enumerate(value):
            check_value(v, bounds, f"{key}[{i}]")
        return
    if isinstance(value, (int, float)) and not _in_range(value, bounds):
        raise ConfigError(f"{key}: {range_text(bounds)}, got {echo(value)}")


def check_ranges(section: Any, prefix: str = "") -> None:
    """Check every field of a recipe section (and its sub-sections) against its ``ranged`` limits."""
    for f in dataclasses.fields(section):
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            check_ranges(value, key)
        else:
            check_value(value, dict(f.metadata), key)
