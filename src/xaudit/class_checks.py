"""Recipe values that depend on the data, checked as soon as the data is listed.

The class names and test ids are known right after loading, before any image is decoded or
any model trained, so a target that is not a class fails in seconds, not after training.
"""

from __future__ import annotations

from .data.base import DatasetBundle
from .errors import ConfigError, echo, shown
from .registry import did_you_mean

_SHOWN_CLASSES = 20


def check_class_values(recipe, bundle: DatasetBundle) -> None:
    """``explain.target`` names a class (or predicted / true); ``explain.select.ids`` are test ids."""
    target, classes = recipe.explain.target, bundle.classes
    if target not in ("predicted", "true") and target not in classes:
        listed = ", ".join(shown(c, 40) for c in classes[:_SHOWN_CLASSES])
        more = f", … {len(classes) - _SHOWN_CLASSES} more" if len(classes) > _SHOWN_CLASSES else ""
        raise ConfigError(
            f"explain.target: {echo(target)} is not allowed. Allowed: predicted, true, or a class name "
            f"({listed}{more}).{did_you_mean(target, list(classes))}"
        )
    test_ids = {r.id for r in bundle.splits.get("test", [])}
    for rid in recipe.explain.select.ids:
        if rid not in test_ids:
            example = next(iter(sorted(test_ids)), None)
            like = f" (test ids look like {echo(example)})" if example else ""
            raise ConfigError(f"explain.select.ids: {echo(rid)} is not a test image id{like}")
