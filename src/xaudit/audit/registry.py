"""The audit registry: each audit's function, order, family and recipe parameters.

An audit is a plain function ``audit(inp, figures_dir, **params) -> AuditResult`` registered
by name with what the runner and the verdict need to know of it. Its keyword parameters are
its recipe parameters: ``validate_audit_specs`` reads them from the signature, so the recipe,
the CLI and the tests see one list.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, echo, shown
from ..registry import Registry, did_you_mean
from .types import AuditResult

AuditFn = Callable[..., AuditResult]
AUDITS: Registry[AuditFn] = Registry("audit")

# Parameters every audit takes from ``run_audits`` rather than from the recipe entry.
_POSITIONAL = ("inp", "figures_dir")



@dataclass(frozen=True)
class AuditInfo:
    """What the runner, the verdict and the report know of an audit besides its function."""

    name: str
    order: int  # run order: audits that read others' results run after them
    family: str  # the verdict's families: convergence, randomization, faithfulness, ...
    model_level: bool = False  # describes the model, never decides whether a method is trusted
    needs: str = ""  # what it needs to apply (masks, a path method, a retrain), in words
    needs_others: bool = False  # reads the other audits' results (runs last, in one process)
    quick: bool = False  # part of ``audit.preset: quick``
    # (params with "n" images, {method: model evaluations per map and image}, explainers)
    # -> the audit's model evaluations beyond the shared trained maps, for the plan it prints.
    cost: Callable[[dict, dict, list], float] | None = None
    # (params, the audit input, explainers) -> seconds spent beyond model evaluations (ROAD's
    # solves), measured on the pool for the plan.
    other_seconds: Callable[[dict, Any, list], float] | None = None
    # the splits whose pool's trained maps it reads (the plan counts them as shared maps)
    map_splits: tuple[str, ...] = ("test",)
    # parameters an older version took -> what replaced them, so that an old recipe is told
    replaced: tuple[tuple[str, str], ...] = ()


INFO: dict[str, AuditInfo] = {}


def register_audit(
    name: str, *, order: int, family: str, model_level: bool = False, needs: str = "",
    needs_others: bool = False, quick: bool = False,
    cost: Callable[[dict, dict, list], float] | None = None,
    other_seconds: Callable[[dict, Any, list], float] | None = None,
    map_splits: tuple[str, ...] = ("test",),
    replaced: dict[str, str] | None = None,
) -> Callable[[AuditFn], AuditFn]:
    """Register ``name``: one decorator is all an audit needs to be run, ordered and judged."""
    INFO[name] = AuditInfo(name, order, family, model_level, needs, needs_others, quick, cost,
                           other_seconds, map_splits, tuple((replaced or {}).items()))
    return AUDITS.register(name)


def no_extra_cost(p: dict, per_map: dict, explainers: list) -> float:
    """For audits that only read the shared trained maps."""
    return 0.0


def audit_info(name: str) -> AuditInfo:
    AUDITS.get(name)  # unknown names fail with the allowed ones
    return INFO[name]


def model_level_audits() -> tuple[str, ...]:
    return tuple(n for n, info in INFO.items() if info.model_level)


def audit_params(name: str) -> dict[str, Any]:
    """The recipe parameters of audit ``name`` with their defaults."""
    sig = inspect.signature(AUDITS.get(name))
    return {k: p.default for k, p in sig.parameters.items() if k not in _POSITIONAL}


def skipped(name: str, title: str, reason: str) -> AuditResult:
    """An audit that does not apply: stated, never silent."""
    return AuditResult(
        name=name,
        title=title,
        text=f"Skipped: {reason}",
        rows=[],
        cells=[],
        figures=[],
        summary={"skipped": True, "reason": reason},
        seconds=0.0,
        model_evals=0,
    )


# --------------------------------------------------------------------------- validation


def _check_type(audit: str, key: str, value: Any, default: Any) -> None:
    if default is None or value is None:
        return
    ok: bool
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(
            f"audit.audits: {audit}.{key}: expected {type(default).__name__} like {default!r}, "
            f"got {echo(value)}"
        )


def validate_audit_specs(specs: list[dict]) -> None:
    """Check the recipe's ``audit.audits`` entries against the registered audits."""
    if not isinstance(specs, list):
        raise ConfigError(f"audit.audits: expected a list of {{name: ...}} entries, got {echo(specs)}")
    seen: set[str] = set()
    for spec in specs:
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, dict) or "name" not in spec:
            raise ConfigError(f"audit.audits: each entry needs a 'name', got {echo(spec)}")
        if not isinstance(spec["name"], str):
            raise ConfigError(f"audit.audits: an audit's name must be text, got {echo(spec['name'])}")
        name = spec["name"]
        if name not in AUDITS:
            allowed = AUDITS.names()
            raise ConfigError(
                f"audit.audits: unknown audit {echo(name)}. Allowed: {', '.join(allowed)}."
                f"{did_you_mean(shown(name), allowed)}"
            )
        if name in seen:
            raise ConfigError(f"audit.audits: {name!r} is listed twice")
        seen.add(name)
        params = audit_params(name)
        for key, value in spec.items():
            if key == "name":
                continue
            gone = dict(INFO[name].replaced).get(key) if name in INFO else None
            if key not in params and gone:
                raise ConfigError(
                    f"audit.audits: {name}.{key} was removed: replaced by {gone}, which needs "
                    "no setting; delete the key"
                )
            if key not in params:
                allowed = sorted(params)
                raise ConfigError(
                    f"audit.audits: {name} has no parameter {echo(key)}. "
                    f"Allowed: {', '.join(allowed)}.{did_you_mean(shown(key), allowed)}"
                )
            _check_type(name, key, value, params[key])
        if spec.get("n_images") is not None and spec["n_images"] < 1:
            raise ConfigError(f"audit.audits: {name}.n_images must be at least 1, got {echo(spec['n_images'])}")
