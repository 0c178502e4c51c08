"""Audit inputs and results, the audit registry, shared helpers and ``run_audits``.

An audit is a plain function ``audit(inp, figures_dir, **params) -> AuditResult``
registered by name. Its keyword parameters are its recipe parameters: ``validate_audit_specs``
reads them from the signature, so the recipe, the CLI and the tests see one list.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError, echo, shown
from ..explain.base import ExplainContext, Explainer
from ..explain.counting import count_model_evals
from ..registry import Registry, did_you_mean

# --------------------------------------------------------------------------- data types


@dataclass
class AuditImages:
    """One split's sample of images to audit."""

    x: Tensor  # N×3×H×W normalised, CPU
    pixels: Tensor  # N×3×H×W in [0, 1]
    labels: Tensor  # (N,) long
    preds: Tensor  # (N,) long, the model's predictions
    targets: Tensor  # (N,) long, the class explained
    ids: list[str]
    masks: Tensor | None = None  # N×H×W bool evidence masks (e.g. lesions)
    object_masks: Tensor | None = None  # N×H×W bool object masks (e.g. the leaf)
    mask_missing: Tensor | None = None  # (N,) bool: no evidence mask (its row in ``masks`` is empty)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: list[int] | Tensor) -> AuditImages:
        idx = torch.as_tensor(index, dtype=torch.long)

        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[idx]

        return AuditImages(
            x=self.x[idx],
            pixels=self.pixels[idx],
            labels=self.labels[idx],
            preds=self.preds[idx],
            targets=self.targets[idx],
            ids=[self.ids[i] for i in idx.tolist()],
            masks=pick(self.masks),
            object_masks=pick(self.object_masks),
            mask_missing=pick(self.mask_missing),
        )


@dataclass
class AuditInput:
    """Everything an audit needs; the real model is never modified."""

    model: nn.Module  # eval mode, trained
    explainers: list[Explainer]  # configured methods from the recipe
    ctx: ExplainContext
    classes: list[str]
    splits: dict[str, AuditImages]  # "test" always; "train" too (shortcut screening)
    generator: torch.Generator  # all randomness from here (seeded by the recipe)
    retrain_shuffled: Callable[[int], nn.Module] | None = None  # seed -> shuffled-label model
    blocks: list[str] | None = None  # randomization blocks override (module names)
    regions: dict[str, list[float]] | None = None  # name -> [x0, y0, x1, y1] fractions
    # Maps of the trained model, computed once and shared by the audits of one run.
    cache: dict = field(default_factory=dict, repr=False)


@dataclass
class Cell:
    """One scorecard cell: a method's per-image values on one audit metric."""

    method: str
    audit: str
    metric: str
    values: np.ndarray  # per image
    higher_is_better: bool
    passed: bool | None  # None when no rule applies
    rule: str  # the stated rule
    seconds: float = 0.0
    model_evals: int = 0
    # The number the rule compares the mean with; with the interval it makes the status.
    threshold: float | None = None


@dataclass
class AuditResult:
    name: str
    title: str
    text: str  # how to read it, 2-4 sentences
    rows: list[dict]  # long table -> tables/audit_<name>.csv
    cells: list[Cell]  # scorecard cells
    figures: list[str]  # file names written under run_dir/figures/
    summary: dict  # -> summary.json audits.<name>
    seconds: float
    model_evals: int


AuditFn = Callable[..., AuditResult]
AUDITS: Registry[AuditFn] = Registry("audit")

# Parameters every audit takes from ``run_audits`` rather than from the recipe entry.
_POSITIONAL = ("inp", "figures_dir")


def register_audit(name: str) -> Callable[[AuditFn], AuditFn]:
    return AUDITS.register(name)


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
            if key not in params:
                allowed = sorted(params)
                raise ConfigError(
                    f"audit.audits: {name} has no parameter {echo(key)}. "
                    f"Allowed: {', '.join(allowed)}.{did_you_mean(shown(key), allowed)}"
                )
            _check_type(name, key, value, params[key])
        if spec.get("n_images") is not None and spec["n_images"] < 1:
            raise ConfigError(f"audit.audits: {name}.n_images must be at least 1, got {echo(spec['n_images'])}")


# --------------------------------------------------------------------------- helpers


def stratified(images: AuditImages, n: int | None) -> AuditImages:
    """At most ``n`` images, taken round-robin over classes (deterministic, keeps order)."""
    if n is None or n >= len(images):
        return images
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(images.labels.tolist()):
        by_class.setdefault(label, []).append(i)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < n:
        added = False
        for label in sorted(by_class):
            if depth < len(by_class[label]) and len(chosen) < n:
                chosen.append(by_class[label][depth])
                added = True
        if not added:
            break
        depth += 1
    return images.subset(sorted(chosen))


def fork_seed(generator: torch.Generator) -> int:
    """A fresh seed drawn from ``generator`` (for forked RNG state and sub-generators)."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())


def sub_generator(generator: torch.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(fork_seed(generator))


def ctx_for(model: nn.Module, reference: nn.Module, ctx: ExplainContext) -> ExplainContext:
    """``ctx`` with its layers pointing into ``model`` (a copy of ``reference``), by name."""
    if model is reference:
        return ctx
    names = {id(m): n for n, m in reference.named_modules()}
    modules = dict(model.named_modules())

    def remap(layer: nn.Module | None) -> nn.Module | None:
        if layer is None:
            return None
        name = names.get(id(layer))
        return modules.get(name, layer) if name is not None else layer

    return dataclasses.replace(
        ctx,
        target_layer=remap(ctx.target_layer),
        layers={k: remap(v) for k, v in ctx.layers.items()},
    )


@dataclass
class Maps:
    """Attributions of one method on one set of images, with their cost."""

    attributions: Tensor  # N×C×H×W
    seconds: float
    model_evals: int
    delta: Tensor | None = None

    @property
    def maps(self) -> Tensor:
        """N×H×W signed maps (summed over channels)."""
        return self.attributions.sum(dim=1)


def compute_maps(
    explainer: Explainer,
    model: nn.Module,
    x: Tensor,
    targets: Tensor,
    ctx: ExplainContext,
    batch_size: int = 2,
    with_delta: bool = False,
    reference: nn.Module | None = None,
) -> Maps:
    """Run ``explainer`` in batches; record seconds and model evaluations.

    Small batches by default: a path method expands each image n_steps times, and the
    audits re-run methods on CPU next to other work (2 images × 32 steps at 224 px ≈ 2 GB).

    ``reference``: the model ``ctx``'s layers belong to, when ``model`` is a copy of it.
    """
    ctx = ctx_for(model, reference if reference is not None else model, ctx)
    parts, deltas = [], []
    start = time.perf_counter()
    with count_model_evals(model) as count:
        for i in range(0, len(x), batch_size):
            xb, tb = x[i : i + batch_size], targets[i : i + batch_size]
            if with_delta:
                attr, delta = explainer.attribute_with_delta(model, xb, tb, ctx)
                deltas.append(None if delta is None else delta.detach().reshape(-1).cpu())
            else:
                attr = explainer.attribute(model, xb, tb, ctx)
            parts.append(attr.detach().float().cpu())
    seconds = time.perf_counter() - start
    delta_t = torch.cat(deltas) if deltas and all(d is not None for d in deltas) else None
    return Maps(torch.cat(parts), seconds, count.n, delta_t)


def trained_maps(inp: AuditInput, explainer: Explainer, split: str, images: AuditImages) -> Maps:
    """Maps of the trained model, cached per (method, split, image ids)."""
    key = ("maps", explainer.label, split, tuple(images.ids))
    if key not in inp.cache:
        inp.cache[key] = compute_maps(explainer, inp.model, images.x, images.targets, inp.ctx)
        cost = inp.cache.setdefault("maps_cost", {"seconds": 0.0, "model_evals": 0})
        cost["seconds"] += inp.cache[key].seconds
        cost["model_evals"] += inp.cache[key].model_evals
    return inp.cache[key]


@torch.no_grad()
def class_scores(
    model: nn.Module, x: Tensor, targets: Tensor, batch_size: int = 32, kind: str = "prob"
) -> Tensor:
    """Softmax probability (or logit) of ``targets`` for each image, batched."""
    out = []
    for i in range(0, len(x), batch_size):
        logits = model(x[i : i + batch_size]).float()
        scores = logits.softmax(dim=1) if kind == "prob" else logits
        out.append(scores.gather(1, targets[i : i + batch_size].view(-1, 1)).squeeze(1).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def safe_name(label: str) -> str:
    """A method label usable in a file name."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in label)


def nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def plain(value: Any) -> Any:
    """JSON-ready copy: numpy scalars and arrays to Python, NaN and inf to None."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        value = value.item()
    return nan_to_none(value)


# --------------------------------------------------------------------------- running


# Run order: correctness last, so it can join the per-image statistics of the others.
ORDER = (
    "convergence",
    "baseline_sensitivity",
    "model_randomization",
    "label_randomization",
    "faithfulness",
    "localization",
    "shortcut",
    "correctness",
)
# Audits that read the other audits' results (run after them, in one process).
NEEDS_OTHERS = ("correctness",)


def resolve_specs(specs: list[dict] | None) -> list[dict]:
    """The recipe's entries (or every audit with defaults), in run order."""
    specs = [{"name": s} if isinstance(s, str) else dict(s) for s in (specs or [])]
    specs = specs or [{"name": name} for name in AUDITS.names()]
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(specs, key=lambda s: rank.get(s["name"], len(ORDER)))


def audit_seed(seed: int, name: str) -> int:
    """The seed of audit ``name``: from the run's audit seed and the name alone.

    Each audit draws from its own generator (and a global RNG seeded the same way), so its
    numbers do not depend on which audits ran before it, or were reloaded on resume.
    """
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def run_audits(
    inp: AuditInput,
    specs: list[dict],
    run_dir: Any,
    n_images: int,
    state: str | None = None,
    log: Callable[[str], None] | None = None,
    claim: Callable[[str], bool] | None = None,
) -> dict:
    """Run the listed audits (empty = all), write tables and figures, return the summary section.

    Tables: ``tables/audit_<name>.csv`` per audit and ``tables/scorecard.csv``; figures:
    ``figures/audit_*.png``. The returned mapping is documented in docs/audits.md.

    ``state``: a key of everything the audits depend on (recipe, model, predictions). With it,
    each finished audit's result is saved to ``run_dir/audit_state/<name>.json`` and an
    audit whose saved key matches (and whose figures exist) is reloaded instead of re-run,
    so a killed stage resumes where it stopped, with the same numbers.

    ``claim`` (with ``state``): one process of several. Only the audits that ``claim(name)``
    gives to this process are run and saved; audits that need the others' results
    (``NEEDS_OTHERS``) are left to the final pass, and no scorecard or summary is written.
    Returns ``{}`` then.
    """
    from ..run import fingerprint
    from .checkpoint import STATE_DIR, load_checkpoint, save_checkpoint
    from .scorecard import scorecard_rows, scorecard_summary, summarize_cells, verdict
    from .verdict_lines import method_lines

    log = log or (lambda message: None)
    validate_audit_specs(specs)
    specs = resolve_specs(specs)
    figures_dir = Path(run_dir.figures)
    figures_dir.mkdir(parents=True, exist_ok=True)
    state_dir = Path(run_dir.root) / STATE_DIR if state is not None else None
    base_seed = inp.generator.initial_seed()
    results: list[AuditResult] = []
    inp.cache["results"] = {}  # this call's results, in run order (correctness reads them)
    maps_cost: dict[Any, tuple[float, int]] = {}  # trained-map cache key -> (seconds, evals)
    for number, spec in enumerate(specs, start=1):
        name = spec["name"]
        log(f"audit {number}/{len(specs)} {name}")
        params = {k: v for k, v in spec.items() if k != "name"}
        if "n_images" in audit_params(name) and params.get("n_images") is None:
            params["n_images"] = n_images
        key = fingerprint({"state": state, "audit": name, "params": params})
        loaded = load_checkpoint(state_dir, name, key, figures_dir) if state_dir else None
        if claim is not None and (loaded is not None or name in NEEDS_OTHERS or not claim(name)):
            continue
        if loaded is not None:
            result, new_maps = loaded
            log(f"audit {name}: already done, kept")
        else:
            result, new_maps = _run_one(inp, name, params, audit_seed(base_seed, name), figures_dir)
        for map_key, cost in new_maps.items():
            maps_cost.setdefault(map_key, cost)
        results.append(result)
        inp.cache.setdefault("results", {})[name] = result
        if result.rows:
            _write_table(run_dir.table(f"audit_{name}"), result.rows, only_if_changed=loaded is not None)
        if state_dir is not None and loaded is None:
            save_checkpoint(state_dir, name, key, result, new_maps, log)

    if claim is not None:
        return {}
    cells = [c for r in results for c in r.cells]
    rows = scorecard_rows(cells)
    _write_table(run_dir.table("scorecard"), rows,
                 columns=None if rows else ["method", "audit", "metric", "mean", "ci_lo", "ci_hi"])
    summary: dict[str, Any] = {}
    for result in results:
        section = summarize_cells([c for c in result.cells if c.audit == result.name])
        section.update(result.summary)
        summary[result.name] = section
    text, trusted = verdict(cells, [e.label for e in inp.explainers], summary.get("shortcut"))
    summary["verdict"] = text
    summary["trusted"] = trusted
    summary["verdict_lines"] = method_lines(cells, [e.label for e in inp.explainers], summary)
    summary["scorecard"] = scorecard_summary(cells)
    summary["sections"] = [
        {
            "title": r.title,
            "text": r.text,
            "figures": r.figures,
            "tables": [f"audit_{r.name}"] if r.rows else [],
        }
        for r in results
    ] + [{"title": "Scorecard", "text": text, "figures": [], "tables": ["scorecard"]}]
    summary["cost"] = {
        r.name: {"seconds": round(r.seconds, 3), "model_evals": int(r.model_evals)} for r in results
    }
    if maps_cost:
        summary["cost"]["maps"] = {
            "seconds": round(sum(s for s, _ in maps_cost.values()), 3),
            "model_evals": int(sum(e for _, e in maps_cost.values())),
        }
    return plain(summary)


def _shared(key: Any) -> bool:
    """Cache entries every audit sees: earlier results and the trained model's maps.

    Other entries (e.g. a random pairing of images) stay private to the audit that made
    them, so an audit's numbers never depend on whether another ran before it.
    """
    return key in ("results", "maps_cost") or (isinstance(key, tuple) and bool(key) and key[0] == "maps")


def _run_one(
    inp: AuditInput, name: str, params: dict, seed: int, figures_dir: Path
) -> tuple[AuditResult, dict[Any, tuple[float, int]]]:
    """Run one audit with its own generator, global RNG seed and cache view.

    Returns its result and the trained maps it computed (cache key -> seconds, evals).
    """
    view = {k: v for k, v in inp.cache.items() if _shared(k)}
    before = set(view)
    own = dataclasses.replace(inp, generator=torch.Generator().manual_seed(seed), cache=view)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        result = AUDITS.get(name)(own, figures_dir, **params)
    result.seconds = result.seconds or time.perf_counter() - start
    new_maps: dict[Any, tuple[float, int]] = {}
    for key, value in view.items():
        if not _shared(key):
            continue
        inp.cache[key] = value
        if key not in before and isinstance(value, Maps):
            new_maps[key] = (float(value.seconds), int(value.model_evals))
    return result, new_maps


def _write_table(path: Path, rows: list[dict], only_if_changed: bool = False, columns=None) -> None:
    from ..run import atomic_write_text, csv_text

    text = csv_text(rows, columns or _columns(rows))
    if only_if_changed and path.is_file() and path.read_text(encoding="utf-8") == text:
        return  # a reloaded audit's table is already there: leave it untouched
    atomic_write_text(path, text)


def _columns(rows: list[dict]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    return columns
