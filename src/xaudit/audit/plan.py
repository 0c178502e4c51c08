"""The audit plan: each audit's estimated model evaluations and seconds, printed before the
stage starts, from the audits' registered costs and the methods' measured cost per map."""

from __future__ import annotations

import time

from ..progress import fmt_duration
from .registry import INFO, audit_params
from .types import AuditInput


def cost_plan(inp: AuditInput, specs: list[dict], n_images: int, controls: list) -> dict:
    """Each audit's estimated model evaluations and seconds, from its registered cost and the
    methods' measured cost per map (the one-image try of ``refused_methods``, or, where that
    map was reused from the explain stage, ``inp.map_costs``).

    Seconds price each method's explanations at that method's own measured seconds per
    evaluation (a backward pass costs several forwards) and the rest (deletion curves,
    perturbed inputs) at a plain forward's, timed here on a few pool images; work that is no
    model evaluation (ROAD's solves) at the audit's own timing (``other_seconds``).
    """
    test = inp.splits["test"]
    per_map, per_eval = {}, {}
    for e in inp.explainers:
        m = inp.cache.get(("maps", e.label, "test", test.ids[0])) if len(test) else None
        evals, seconds = (m.model_evals, m.seconds) if m is not None else (0.0, 0.0)
        if not evals and e.label in inp.map_costs:  # a reused map: priced where it was made
            evals, seconds = inp.map_costs[e.label]
        per_map[e.label] = float(evals)
        per_eval[e.label] = seconds / evals if evals else 0.0
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
    """One line: the audits that cost something, the slowest first, and the total in minutes;
    the free ones (no model evaluation, under a second) only counted."""
    def part(name: str, entry: dict) -> str:
        if entry["model_evals"] is None:
            return f"{name} (cost unknown)"
        secs = f" ~{fmt_duration(entry['seconds'])}" if entry["seconds"] is not None else ""
        return f"{name} ~{entry['model_evals']:,} evals{secs}"

    def free(entry: dict) -> bool:
        return entry["model_evals"] == 0 and (entry["seconds"] or 0) < 1

    items = sorted(plan["audits"].items(), key=lambda kv: -(kv[1]["seconds"] or 0))
    costly = [(n, e) for n, e in items if not free(e)]
    n_free = len(items) - len(costly)
    known = [e["seconds"] for e in plan["audits"].values() if e["seconds"] is not None]
    total = sum(known) + (plan["maps"]["seconds"] or 0)
    rate = 1 / plan["seconds_per_forward"] if plan["seconds_per_forward"] else None
    parts = [part(n, e) for n, e in costly]
    if plan["maps"]["model_evals"]:
        parts.append(f"shared maps ~{plan['maps']['model_evals']:,} evals")
    if n_free:
        parts.append(f"{n_free} more at no model cost")
    when = f"{round(total / 60)} min" if total >= 90 else fmt_duration(total)
    return (f"audit plan, about {when}"
            f"{f' at {rate:.0f} forwards/s' if rate else ''}: " + "; ".join(parts))
