"""``run_audits``: one pool of images, the registered audits in order, the scorecard and verdict.

Methods a check refuses (e.g. guided backprop on a ReLU6 model) are skipped with their
reason, per audit, never aborting the stage; the negative controls (``controls.py``) go
through every method audit as extra rows, so that the verdict is seen to reject maps that
know nothing of the model.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError, MethodRefused, echo
from ..progress import fmt_duration
from .controls import control_explainers
from .maps import trained_maps
from .plan import cost_plan, plan_text
from .registry import AUDITS, INFO, validate_audit_specs
from .sequential import Rounds, audit_seed, not_tested_cells  # noqa: F401  (re-exported)
from .stats import ALPHA, MIN_EFFECT
from .types import AuditInput

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
    min_effect: float = MIN_EFFECT,
    rounds: int = 1,
    budget_seconds: float | None = None,
    continue_hint: Callable[[int], str] | None = None,
    pools: list[list[str]] | None = None,
) -> dict:
    """Run the listed audits (empty = all) in rounds, write tables and figures, return the
    summary section (documented in docs/audits.md).

    Round k audits the next ``n_images`` of the test pool (``rounds.round_chunks``) for the
    methods still undecided, with every control; the verdict looks after each round at level
    α/(k(k+1)). It stops when every method is decided, after ``rounds`` rounds, or when the
    next round would overrun ``budget_seconds``. Model-level audits run in round 1 only.

    ``state``: a key of everything the audits depend on (recipe, model, predictions; not the
    number of rounds or the budget). With it, each round's result of each audit is saved to
    ``run_dir/audit_state/`` and a matching one is reloaded instead of re-run: a killed stage
    resumes, and a run continued with more rounds starts from the images already audited.

    ``claim`` (with ``state``): one process of several. Only the round-1 audits that
    ``claim(name)`` gives to this process are run and saved; the final pass (and any later
    round) is one process's. Returns ``{}`` then.

    ``continue_hint(rounds)``: the command that would continue this audit to ``rounds``.
    ``pools``: the test images' ids each round draws its ``n_images`` from (default: the
    whole test split, round after round).
    """
    from .judge import assess
    from .rounds import look_level, round_chunks

    log = log or (lambda message: None)
    validate_audit_specs(specs)
    specs = resolve_specs(specs, preset)
    methods = [e.label for e in inp.explainers]
    refused = refused_methods(inp)
    for label, why in refused.items():
        log(f"audit: {label} is not tested: {why}")
    inp = dataclasses.replace(inp, explainers=[e for e in inp.explainers if e.label not in refused])
    control_list = control_explainers() if controls else []
    labels = methods + [c.label for c in control_list]
    plan = cost_plan(inp, specs, n_images, control_list)
    log(plan_text(plan))
    chunks = round_chunks(inp.splits["test"], n_images, rounds if claim is None else 1, pools)
    if len(chunks) > 1 or rounds > 1:
        budget = f", budget {fmt_duration(budget_seconds)}" if budget_seconds else ""
        log(f"audit rounds: up to {rounds} of {n_images} images ({len(inp.splits['test'])} in "
            f"the pool){budget}; each round looks at level α/(k(k+1)), α = {alpha:g}")
    run = Rounds(inp, run_dir, state, log, claim, refused, control_list, n_images)
    run.plan = plan
    # the model-level audits (round 1 only) read the first pool whole, as they describe the
    # model rather than decide a method
    first_pool = set(pools[0]) if pools else None
    first = inp.splits["test"] if first_pool is None else inp.splits["test"].subset(
        [k for k, i in enumerate(inp.splits["test"].ids) if i in first_pool])
    model_level = dataclasses.replace(inp, splits={**inp.splits, "test": first})
    undecided = list(inp.explainers)
    decided: dict[str, int] = {}  # label -> the look that decided it
    started = time.perf_counter()
    assessment = None
    stop = ""
    for look, chunk in enumerate(chunks, start=1):
        run_specs = specs if look == 1 else [s for s in specs if not INFO[s["name"]].model_level]
        round_inp = dataclasses.replace(inp, explainers=undecided,
                                        splits={**inp.splits, "test": chunk})
        t0 = time.perf_counter()
        run.round(round_inp, run_specs, look, plan if look == 1 else None,
                  model_level=model_level)
        if claim is not None:
            return {}
        level = look_level(alpha, look)
        assessment = assess(run.cells(), labels, alpha, min_effect=min_effect,
                            levels={m: look_level(alpha, decided.get(m, look)) for m in labels})
        for label in labels:
            if label not in decided and assessment.state_word(label) in ("trusted", "do not trust"):
                decided[label] = look
        # more images help only a method some ruled check could still decide
        undecided = [e for e in inp.explainers if e.label not in decided
                     and assessment.state_word(e.label) == "undecided"
                     and not assessment.methods[e.label].hopeless]
        run.looks.append({"look": look, "level": level, "images": len(chunk), "ids": chunk.ids,
                          "seconds": round(time.perf_counter() - t0, 3),
                          "decided": sorted(k for k, v in decided.items() if v == look)})
        if not undecided:
            break
        if look == len(chunks):
            stop = ("the pool is used up" if len(chunks) < rounds else f"{rounds} rounds done")
            break
        # the next round costs about what this one did, for the methods still in it
        share = (len(undecided) + len(control_list)) / max(len(round_inp.explainers) + len(control_list), 1)
        next_seconds = (time.perf_counter() - t0) * share
        if budget_seconds is not None and time.perf_counter() - started + next_seconds > budget_seconds:
            stop = f"the budget of {fmt_duration(budget_seconds)} would be overrun"
            break
        log(f"audit round {look} decided {len(decided)} of {len(labels)}; "
            f"round {look + 1}: {len(undecided)} methods on {len(chunks[look])} more images")
    return run.summary(labels, assessment, stop, continue_hint, rounds, alpha, min_effect,
                       decided, preset)


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


