"""``run_audits``: one pool of images, the registered audits in order, the scorecard and verdict.

Methods a check refuses (e.g. guided backprop on a ReLU6 model) are skipped with their
reason, per audit, never aborting the stage; the negative controls (``controls.py``) go
through every method audit as extra rows, so that the verdict is seen to reject maps that
know nothing of the model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, MethodRefused, echo
from ..progress import fmt_duration
from .controls import control_explainers
from .helpers import plain
from .maps import trained_maps
from .registry import AUDITS, INFO, audit_params, skipped, validate_audit_specs
from .stats import ALPHA
from .types import AuditInput, AuditResult, Cell, Maps

PRESETS = ("full", "quick")


def resolve_specs(specs: list[dict] | None, preset: str = "full") -> list[dict]:
    """The recipe's entries (or the preset's audits with defaults), in run order.

    ``full``: every registered audit; ``quick``: the audits marked quick (the cheap ones that
    still decide trust). Entries the recipe lists are run whatever the preset.
    """
    if preset not in PRESETS:
        raise ConfigError(f"audit.preset: expected one of {', '.join(PRESETS)}, got {echo(preset)}")
    specs = [{"name": s} if isinstance(s, str) else dict(s) for s in (specs or [])]
    if not specs:
        specs = [{"name": n} for n in AUDITS.names() if preset == "full" or INFO[n].quick]
    return sorted(specs, key=lambda s: INFO[s["name"]].order)


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
    preset: str = "full",
    controls: bool = True,
    alpha: float = ALPHA,
    looks: int = 1,
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
    (``needs_others``) are left to the final pass, and no scorecard or summary is written.
    Returns ``{}`` then.
    """
    from ..run import fingerprint
    from .checkpoint import STATE_DIR, load_checkpoint, save_checkpoint
    from .judge import assess
    from .scorecard import scorecard_rows, scorecard_summary, summarize_cells
    from .verdict_lines import method_lines, verdict

    log = log or (lambda message: None)
    validate_audit_specs(specs)
    specs = resolve_specs(specs, preset)
    methods = [e.label for e in inp.explainers]
    refused = refused_methods(inp)
    for label, why in refused.items():
        log(f"audit: {label} is not tested: {why}")
    inp = dataclasses.replace(inp, explainers=[e for e in inp.explainers if e.label not in refused])
    control_list = control_explainers() if controls else []
    plan = cost_plan(inp, specs, n_images, control_list)
    log(plan_text(plan))
    figures_dir = Path(run_dir.figures)
    figures_dir.mkdir(parents=True, exist_ok=True)
    state_dir = Path(run_dir.root) / STATE_DIR if state is not None else None
    base_seed = inp.generator.initial_seed()
    results: list[AuditResult] = []
    inp.cache["results"] = {}  # this call's results, in run order (correctness reads them)
    maps_cost: dict[Any, tuple[float, float]] = {}  # trained-map cache key -> (seconds, evals)
    for number, spec in enumerate(specs, start=1):
        name = spec["name"]
        log(f"audit {number}/{len(specs)} {name}{_planned(plan['audits'].get(name))}")
        params = {k: v for k, v in spec.items() if k != "name"}
        if "n_images" in audit_params(name) and params.get("n_images") is None:
            params["n_images"] = n_images
        key = fingerprint({"state": state, "audit": name, "params": params})
        loaded = load_checkpoint(state_dir, name, key, figures_dir) if state_dir else None
        if claim is not None and (loaded is not None or INFO[name].needs_others or not claim(name)):
            continue
        if loaded is not None:
            result, new_maps = loaded
            log(f"audit {name}: already done, kept")
        else:
            # Controls are judged like methods by the method audits, and kept out of the
            # model-level ones (an edge map in a corner is not the model's shortcut).
            own = inp if INFO[name].model_level else dataclasses.replace(
                inp, explainers=inp.explainers + control_list)
            result, new_maps = _run_one(own, name, params, audit_seed(base_seed, name), figures_dir)
            if result.model_evals:
                log(f"audit {name}: {result.seconds:.0f} s, {result.model_evals:,} model evaluations")
            if not INFO[name].model_level and result.cells:
                result.cells += not_tested_cells(name, refused)
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
    labels = methods + [c.label for c in control_list]
    assessment = assess(cells, labels, alpha=alpha, looks=looks)
    rows = scorecard_rows(cells, assessment)
    _write_table(run_dir.table("scorecard"), rows,
                 columns=None if rows else ["method", "audit", "metric", "mean", "ci_lo", "ci_hi"])
    summary: dict[str, Any] = {}
    for result in results:
        section = summarize_cells([c for c in result.cells if c.audit == result.name], assessment)
        section.update(result.summary)
        summary[result.name] = section
    text = verdict(assessment, summary.get("shortcut"))
    summary["verdict"] = text
    summary["trusted"] = assessment.trusted
    summary["states"] = {m: assessment.state_word(m) for m in labels}
    summary["verdict_lines"] = method_lines(cells, assessment, summary)
    summary["rules"] = {"alpha": alpha, "looks": looks, "level": alpha / looks,
                        "min_effect": assessment.min_effect}
    summary["controls"] = [c.label for c in control_list]
    summary["not_tested"] = refused
    summary["preset"] = preset
    summary["plan"] = plan
    summary["scorecard"] = scorecard_summary(cells, assessment)
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
    return key == "results" or (isinstance(key, tuple) and bool(key) and key[0] == "maps")


def _run_one(
    inp: AuditInput, name: str, params: dict, seed: int, figures_dir: Path
) -> tuple[AuditResult, dict[Any, tuple[float, float]]]:
    """Run one audit with its own generator, global RNG seed and cache view.

    Returns its result and the trained maps it computed (cache key -> seconds, evals).
    """
    view = {k: v for k, v in inp.cache.items() if _shared(k)}
    before = set(view)
    own = dataclasses.replace(inp, generator=torch.Generator().manual_seed(seed), cache=view)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            result = AUDITS.get(name)(own, figures_dir, **params)
        except MethodRefused as err:  # a refusal inside one audit skips that audit, stated
            result = skipped(name, name, str(err))
    result.seconds = result.seconds or time.perf_counter() - start
    new_maps: dict[Any, tuple[float, float]] = {}
    for key, value in view.items():
        if not _shared(key):
            continue
        inp.cache[key] = value
        if key not in before and isinstance(value, Maps):
            new_maps[key] = (float(value.seconds), float(value.model_evals))
    return result, new_maps


def refused_methods(inp: AuditInput) -> dict[str, str]:
    """``{label: reason}`` of the methods that refuse this model (tried on one image; the map
    is kept in the shared cache, so the try costs nothing the audits would not spend)."""
    test = inp.splits["test"]
    out: dict[str, str] = {}
    if len(test) == 0:
        return out
    for explainer in inp.explainers:
        try:
            trained_maps(inp, explainer, "test", test.subset([0]), whole=False)
        except MethodRefused as err:
            out[explainer.label] = str(err)
    return out


def cost_plan(inp: AuditInput, specs: list[dict], n_images: int, controls: list) -> dict:
    """Each audit's estimated model evaluations and seconds, from its registered cost and the
    methods' measured cost per map (the one-image try of ``refused_methods``).

    Seconds price each method's explanations at that method's own measured seconds per
    evaluation (a backward pass costs several forwards) and the rest (deletion curves,
    perturbed inputs) at a plain forward's, timed here on a few pool images; work that is no
    model evaluation (ROAD's solves) at the audit's own timing (``other_seconds``).
    """
    test = inp.splits["test"]
    per_map, per_eval = {}, {}
    for e in inp.explainers:
        m = inp.cache.get(("maps", e.label, "test", test.ids[0])) if len(test) else None
        per_map[e.label] = float(m.model_evals) if m is not None else 0.0
        per_eval[e.label] = m.seconds / m.model_evals if m is not None and m.model_evals else 0.0
    forward = _forward_seconds(inp) if len(test) else None
    audits: dict[str, dict] = {}
    for spec in specs:
        name = spec["name"]
        info = INFO[name]
        params = {**audit_params(name), **{k: v for k, v in spec.items() if k != "name"}}
        params["n"] = min(len(test), params.get("n_images") or n_images)
        explainers = inp.explainers + ([] if info.model_level else controls)
        maps = {**per_map, **({} if info.model_level else {c.label: 0.0 for c in controls})}
        if info.cost is None:
            audits[name] = {"model_evals": None, "seconds": None}
            continue
        est = info.cost(params, maps, explainers)
        zero = {label: 0.0 for label in maps}
        plain = info.cost(params, zero, explainers)  # evaluations that are no method's map
        seconds = None
        if forward is not None:
            seconds = plain * forward + sum(
                (info.cost(params, {**zero, label: per_map[label]}, explainers) - plain) * per_eval[label]
                for label in per_map)
            if info.other_seconds is not None:
                seconds += info.other_seconds(params, inp, explainers)
        audits[name] = {"model_evals": int(round(est)),
                        "seconds": None if seconds is None else round(seconds, 1)}
    # the shared maps still to compute (the try's and those reused from the explain stage are
    # in): the whole pool of each split an audit reads, as ``trained_maps`` computes them
    splits = {"test"} | {s for spec in specs for s in INFO[spec["name"]].map_splits}
    todo = {k: sum(("maps", k, split, i) not in inp.cache
                   for split in sorted(splits & set(inp.splits)) for i in inp.splits[split].ids)
            for k in per_map}
    shared = sum(per_map[k] * todo[k] for k in per_map)
    shared_seconds = sum(per_map[k] * per_eval[k] * todo[k] for k in per_map)
    return {"seconds_per_forward": None if forward is None else round(forward, 5),
            "audits": audits,
            "maps": {"model_evals": int(round(shared)), "seconds": round(shared_seconds, 1)}}


def _forward_seconds(inp: AuditInput, n: int = 4) -> float:
    """Seconds per image of a plain forward (fp32, no gradients), on up to ``n`` pool images;
    best of two runs, the first also warms the model up."""
    from .maps import class_scores

    x = inp.splits["test"].x[:n]
    t = inp.splits["test"].targets[:n]
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        class_scores(inp.model, x, t, batch_size=len(x))
        best = min(best, time.perf_counter() - start)
    return best / len(x)


def _planned(entry: dict | None) -> str:
    """The plan's estimate for one audit, as its start line's suffix ("" when it has none)."""
    if not entry or not entry.get("model_evals"):
        return ""
    secs = f", ~{fmt_duration(entry['seconds'])} planned" if entry.get("seconds") is not None else ""
    return f" — ~{entry['model_evals']:,} model evaluations{secs}"


def plan_text(plan: dict) -> str:
    """One line: the estimated cost of each audit, the slowest first."""
    def part(name: str, entry: dict) -> str:
        if entry["model_evals"] is None:
            return f"{name} (cost unknown)"
        secs = f" ~{entry['seconds']:.0f} s" if entry["seconds"] is not None else ""
        return f"{name} ~{entry['model_evals']:,} evals{secs}"

    items = sorted(plan["audits"].items(), key=lambda kv: -(kv[1]["seconds"] or 0))
    known = [e["seconds"] for e in plan["audits"].values() if e["seconds"] is not None]
    total = sum(known) + (plan["maps"]["seconds"] or 0)
    rate = 1 / plan["seconds_per_forward"] if plan["seconds_per_forward"] else None
    return (f"audit plan (estimated{f', {rate:.0f} forwards/s' if rate else ''}): "
            + "; ".join(part(n, e) for n, e in items)
            + f"; shared maps ~{plan['maps']['model_evals']:,} evals; total ~{total:.0f} s")


def not_tested_cells(audit: str, refused: dict[str, str]) -> list[Cell]:
    """One "not tested" cell per refused method: in the scorecard, never in its favour."""
    import numpy as np

    return [Cell(label, audit, "not_tested", np.array([]), True, None, "refused by the method",
                 forced="not tested", note=why) for label, why in refused.items()]


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
