"""The recipe as the pipeline, the CLI and the report use it: loaded from YAML with
``--set`` overrides, validated against the registries, and fingerprinted per stage.

Every key is checked: unknown keys and wrong types are rejected with the key's dotted
path and the allowed names or type (``typed``). Explainer and audit parameters are validated
against the registered classes' signatures (see ``explain.base`` and ``audit.registry``).
"""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path
from typing import Any

import yaml

from .config import Recipe
from .errors import ConfigError, echo, shown
from .run import stage_fingerprints
from .safety import is_control
from .typed import check_ranges, from_dict
from .yaml_safe import load_yaml


def _check_special(recipe: Recipe) -> None:
    """Rules that tie several values together or are not numeric ranges."""
    splits = recipe.data.splits
    allowed = {"train", "val", "test"}
    if set(splits) != allowed:
        raise ConfigError(f"data.splits: needs exactly the keys train, val, test; got {echo(sorted(splits))}")
    if any(not 0 <= v <= 1 for v in splits.values()) or abs(sum(splits.values()) - 1) > 1e-6:
        raise ConfigError(f"data.splits: fractions must be 0 or more and add up to 1, got {echo(splits)}")
    for name, (x0, y0, x1, y1) in (recipe.audit.regions or {}).items():
        if not (x0 < x1 and y0 < y1):
            raise ConfigError(f"audit.regions.{shown(name)}: needs x0 < x1 and y0 < y1, got {echo([x0, y0, x1, y1])}")
    # a control character in a folder name garbles every console line and path shown
    if (not recipe.name or any(c in recipe.name for c in "/\\\0") or recipe.name in {".", ".."}
            or len(recipe.name) > 200 or any(is_control(c) for c in recipe.name)):
        raise ConfigError(f"name: {echo(recipe.name)} cannot name a run folder (no '/', '\\', '.' or '..', "
                          "no control or bidirectional-control characters; at most 200 characters)")
    if recipe.device not in {"cpu", "cuda", "auto"}:
        raise ConfigError(f"device: {echo(recipe.device)} is not allowed. Allowed: cpu, cuda, auto.")


def _check_range(recipe: Recipe) -> None:
    check_ranges(recipe)
    _check_special(recipe)


def validate(recipe: Recipe) -> Recipe:
    """Range checks plus registry checks of every named thing in the recipe."""
    _check_range(recipe)
    # Imported here: the registries import torch-heavy modules.
    from .data import SOURCES
    from .explain import validate_method_specs
    from .models.sources import check_model_recipe

    SOURCES.get(recipe.data.source)
    check_model_recipe(recipe.model, recipe.train.skip)
    validate_method_specs(recipe.explain.methods)
    if recipe.audit.enabled or recipe.audit.audits:
        from .audit import validate_audit_specs

        validate_audit_specs(recipe.audit.audits)
    return recipe


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"--set {echo(text)}: expected KEY=VALUE, e.g. --set train.epochs=3")
    key, raw = text.split("=", 1)
    value = load_yaml(raw, f"--set {echo(text)}: the value") if raw.strip() else ""
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {echo(text)}: {echo(part)} is not a section")
            node = child
        node[path[-1]] = value
    return data


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None, **data: Any) -> Recipe:
    """Load a YAML recipe (or keyword sections), apply ``--set`` overrides, validate."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(_not_a_recipe_file(path))
        raw = load_yaml(_read_recipe_text(path), str(path)) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a recipe must be a mapping of sections, got {type(raw).__name__}")
    raw.update(data)
    raw = apply_overrides(raw, overrides or [])
    return validate(from_dict(Recipe, raw))


def _not_a_recipe_file(path: Path) -> str:
    """What ``path`` is instead of a readable recipe file, in words."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"recipe file not found: {echo(str(path))}"
    except OSError as err:  # a link loop, no permission on a folder above it
        return f"recipe {echo(str(path))}: cannot read ({err.strerror or type(err).__name__})"
    what = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file")
    return f"recipe {echo(str(path))}: not a regular file ({what}); a recipe is a YAML file"


def _read_recipe_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); save the recipe as UTF-8") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the recipe ({err.strerror or type(err).__name__})") from None


def to_dict(recipe: Recipe) -> dict:
    return dataclasses.asdict(recipe)


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(to_dict(recipe), sort_keys=False, allow_unicode=True)


def recipe_fingerprints(recipe: Recipe) -> dict[str, str]:
    """Each stage's fingerprint under ``recipe``: what the manifest records when it finishes."""
    return stage_fingerprints(_with_checkpoint_digest(to_dict(recipe)))


# When to stop auditing, not what is audited: saved rounds stay valid across them, so a run
# continued with more rounds (or a larger budget) reloads the rounds it has.
STOPPING_KEYS = ("max_rounds", "budget_minutes")


def rounds_free_fingerprint(recipe: Recipe) -> str:
    """The audit stage's fingerprint without the keys that only say when to stop."""
    d = _with_checkpoint_digest(to_dict(recipe))
    d["audit"] = {k: v for k, v in d["audit"].items() if k not in STOPPING_KEYS}
    return stage_fingerprints(d)["audit"]


def _with_checkpoint_digest(recipe_dict: dict) -> dict:
    """A model checkpoint counts by its content, not only its path."""
    from .models.checkpoints import content_digest

    model = recipe_dict.get("model", {})
    if model.get("checkpoint"):
        model = {**model, "checkpoint": [model["checkpoint"], content_digest(model["checkpoint"])]}
    return {**recipe_dict, "model": model}
