"""YAML for recipes and ``--set`` values: safe types only, aliases capped, size bounded.

PyYAML's ``safe_load`` shares aliased nodes, so an alias bomb ("billion laughs") loads in
microseconds, but anything that walks the value afterwards (a check, an error message, a
fingerprint) expands it. Documents are refused when their value, with every alias expanded,
holds more than ``MAX_NODES`` items, or when a value contains itself.
"""

from __future__ import annotations

from typing import Any

import yaml

from .errors import ConfigError

MAX_BYTES = 1_000_000  # a recipe is a few kB
MAX_NODES = 100_000  # scalars, lists and mappings once aliases are expanded
MAX_DEPTH = 32  # a recipe nests four or five levels


def expanded_size(value: Any, limit: int = MAX_NODES) -> int:
    """Items in ``value`` with shared sub-values counted every time; stops past ``limit``.

    Raises ``ValueError`` for a value that contains itself or nests deeper than ``MAX_DEPTH``.
    """
    seen: dict[int, tuple[int, int]] = {}  # id -> (items, levels below)
    active: set[int] = set()

    def walk(v: Any) -> tuple[int, int]:
        if not isinstance(v, (list, dict)):
            return 1, 0
        key = id(v)
        if key in seen:
            return seen[key]
        if key in active:
            raise ValueError("a value contains itself (a recursive alias)")
        if len(active) > MAX_DEPTH:
            raise ValueError(f"values nested more than {MAX_DEPTH} levels deep")
        active.add(key)
        total, height = 1, 0
        children = [*v.keys(), *v.values()] if isinstance(v, dict) else v
        for child in children:
            n, h = walk(child)
            total, height = total + n, max(height, h + 1)
            if total > limit:
                break
        active.discard(key)
        seen[key] = (total, height)
        return total, height

    total, height = walk(value)
    if height > MAX_DEPTH:
        raise ValueError(f"values nested more than {MAX_DEPTH} levels deep")
    return total


def load_yaml(text: str, where: str) -> Any:
    """Parse ``text`` with ``yaml.safe_load``; one ``ConfigError`` naming ``where`` on failure."""
    if len(text) > MAX_BYTES:
        raise ConfigError(f"{where}: {len(text)} characters is too large for a recipe (at most {MAX_BYTES})")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML ({_short(err)})") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply to be a recipe") from None
    try:
        n = expanded_size(value)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}; a recipe is a few plain levels of sections") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply to be a recipe") from None
    if n > MAX_NODES:
        raise ConfigError(
            f"{where}: more than {MAX_NODES} values once YAML aliases are expanded "
            "(an alias bomb?); a recipe needs far fewer"
        )
    return value


def _short(err: yaml.YAMLError, limit: int = 200) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
