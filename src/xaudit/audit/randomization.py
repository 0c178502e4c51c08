"""Sanity checks (Adebayo et al. 2018): maps must change when the weights or the labels do.

Model randomization re-initialises blocks of a copy of the model, from the logits down
(cascading) or one at a time (independent); label randomization compares with a model
trained on shuffled labels. The yardstick is the random-pair line: the similarity between
maps of *different* images under the trained model.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from . import plots
from .base import (
    AuditImages,
    AuditInput,
    AuditResult,
    Cell,
    affordable_evals,
    compute_maps,
    fork_seed,
    left_out_text,
    over_budget,
    register_audit,
    safe_name,
    skipped,
    stratified,
    trained_maps,
)
from .controls import is_control
from .scorecard import NOT_INFORMATIVE, NOT_TESTED, mean_ci
from .similarity import METRICS, all_similarities, derangement

Block = tuple[str, list[str]]  # (label, module names)


def find_blocks(model: nn.Module) -> list[Block]:
    """Blocks from the logits down, as the families table (models/families.py) gives them."""
    from ..models.families import describe

    return describe(model).randomization_blocks


def blocks_from_names(model: nn.Module, names: list) -> list[Block]:
    """Named blocks (a recipe's ``audit.blocks``) or ready (label, names) blocks, checked."""
    if all(isinstance(n, tuple) for n in names):
        return list(names)
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(
            f"randomization blocks not found in the model: {missing}. "
            f"Some module names: {', '.join(list(modules)[1:12])}"
        )
    return [(n, [n]) for n in names]


def randomize(model: nn.Module, names: list[str], seed: int) -> nn.Module:
    """Re-initialise every submodule of ``names`` in place, seeded: ``reset_parameters`` where a
    module has it, a truncated normal (std 0.02, as transformers initialise) for the rest."""
    modules = dict(model.named_modules())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in names:
            for sub in modules[name].modules():
                if hasattr(sub, "reset_parameters"):
                    sub.reset_parameters()
                else:  # parameters a module holds itself (tokens, position and bias tables)
                    for p in sub.parameters(recurse=False):
                        nn.init.trunc_normal_(p, std=0.02)
    return model


def randomized_copy(model: nn.Module, blocks: list[Block], seeds: list[int]) -> nn.Module:
    """A deep copy with the given blocks re-initialised; the real model is never touched."""
    clone = copy.deepcopy(model).eval()
    for (_, names), seed in zip(blocks, seeds, strict=True):
        randomize(clone, names, seed)
    return clone


def similarities(ref: Tensor, other: Tensor) -> dict[str, np.ndarray]:
    """Per-image similarity of two N×H×W map stacks, for every metric."""
    per = [all_similarities(ref[i], other[i]) for i in range(len(ref))]
    return {m: np.array([p[m] for p in per]) for m in METRICS}


def random_pair(inp: AuditInput, explainer, images: AuditImages) -> dict[str, np.ndarray]:
    """Similarity between maps of different images under the trained model (per image)."""
    key = ("random_pair", explainer.label, tuple(images.ids))
    if key not in inp.cache:
        maps = trained_maps(inp, explainer, "test", images).maps
        partner = derangement(len(images), inp.generator)
        inp.cache[key] = similarities(maps, maps[partner])
    return inp.cache[key]


def pick_steps(n_blocks: int, max_steps: int) -> list[int]:
    """Cascade depths: the head and the top block (the decisive steps: a frozen backbone's
    maps must already change there), then evenly spaced down to the full model."""
    if n_blocks <= max_steps:
        return list(range(n_blocks))
    spaced = {int(round(v)) for v in np.linspace(0, n_blocks - 1, max(2, max_steps - 1))}
    return sorted(spaced | {0, 1})


# The steps a method's map must not survive (Adebayo et al.: guided backprop's does).
DECISIVE = ((0, "head"), (1, "top_block"))


def _mean(values: np.ndarray) -> float:
    return mean_ci(values)[0]


def _cost_model_randomization(p: dict, per_map: dict[str, float], explainers) -> float:
    steps = p["max_steps"] + 1  # the head, the top block and the evenly spaced depths
    runs = 2 * steps - 1 if p["independent"] else steps  # the head copy serves both
    return p["n"] * runs * affordable_evals(per_map, p["max_method_evals"])


@register_audit("model_randomization", order=30, family="randomization",
                quick=True, cost=_cost_model_randomization)
def model_randomization(
    inp: AuditInput,
    figures_dir: Path,
    n_images: int | None = None,
    max_steps: int = 4,
    independent: bool = False,
    margin: float = 0.1,
    survival: float = 0.5,
    max_random_pair: float = 0.5,
    max_method_evals: int = 64,
    batch_size: int = 2,
) -> AuditResult:
    """Cascading and independent re-initialisation, judged at every decisive step."""
    title = f"Model randomization (cascading{' and independent' if independent else ''})"
    images = stratified(inp.splits["test"], n_images)
    if len(images) < 2:
        return skipped("model_randomization", title, "needs at least 2 test images (random pairs)")
    start = time.perf_counter()
    blocks = blocks_from_names(inp.model, inp.blocks) if inp.blocks else find_blocks(inp.model)
    if not blocks:
        return skipped("model_randomization", title, "the model has no parameterised blocks")
    seeds = [fork_seed(inp.generator) for _ in blocks]
    depths = pick_steps(len(blocks), max_steps)
    summary: dict = {"blocks": [b[0] for b in blocks], "cascade_steps": [blocks[d][0] for d in depths],
                     "margin": margin, "survival": survival, "max_random_pair": max_random_pair,
                     "skipped_methods": {}}
    methods, refs, pairs = [], {}, {}
    for explainer in inp.explainers:
        trained = trained_maps(inp, explainer, "test", images)
        why = over_budget(trained, len(images), max_method_evals)
        if why:  # stated in the summary and the scorecard, never silent
            summary["skipped_methods"][explainer.label] = why
            continue
        methods.append(explainer)
        refs[explainer.label] = trained.maps
        pairs[explainer.label] = random_pair(inp, explainer, images)
    runs = [("cascading", d, blocks[: d + 1], seeds[: d + 1]) for d in depths]
    if independent:
        runs += [("independent", d, [blocks[d]], [seeds[d]]) for d in depths]
    rows: list[dict] = []
    cost = {e.label: [0.0, 0] for e in methods}
    cascade: dict[str, list[dict[str, np.ndarray]]] = {e.label: [] for e in methods}
    strips: dict[str, list] = {e.label: [] for e in methods}
    # One randomized copy per step, shared by every method: the copy is the costly part.
    done: dict[tuple, object] = {}  # the head alone, cascading or independent, is one copy
    for mode, d, chosen, chosen_seeds in runs:
        same = (tuple(b[0] for b in chosen), tuple(chosen_seeds))
        reuse = same in done
        model = None if reuse else randomized_copy(inp.model, chosen, chosen_seeds)
        for explainer in methods:
            label = explainer.label
            if reuse:
                m = done[same][label]
            else:
                m = compute_maps(explainer, model, images.x, images.targets, inp.ctx, batch_size,
                                 reference=inp.model, fast=inp.fast)
                cost[label][0] += m.seconds
                cost[label][1] += m.model_evals
                if d == 0:
                    done.setdefault(same, {})[label] = m
            sims = similarities(refs[label], m.maps)
            if mode == "cascading":
                cascade[label].append(sims)
                strips[label].append((f"..{blocks[d][0]}", m.maps[0].numpy()))
            for i, image_id in enumerate(images.ids):
                rows.append({"method": label, "mode": mode, "block": blocks[d][0], "depth": d,
                             "id": image_id, **{k: float(v[i]) for k, v in sims.items()}})
        del model
    cells, figures = [], []
    for explainer in methods:
        label = explainer.label
        pair = pairs[label]
        for i, image_id in enumerate(images.ids):
            rows.append({"method": label, "mode": "random_pair", "block": "", "depth": "",
                         "id": image_id, **{k: float(v[i]) for k, v in pair.items()}})
        cells += _cascade_cells(label, blocks, depths, cascade[label], pair, margin, survival,
                                max_random_pair, *cost[label])
        curves = {k: [_mean(s[k]) for s in cascade[label]] for k in METRICS}
        line = {k: _mean(v) for k, v in pair.items()}
        summary[label] = {"random_pair": line, "cascade": curves}
        if not is_control(label):  # a control's curves are in the table and the summary
            figures.append(plots.plot_randomization(
                figures_dir / f"audit_model_randomization_{safe_name(label)}.png",
                images.pixels[0].permute(1, 2, 0).numpy(),
                [("trained", refs[label][0].numpy()), *strips[label]],
                [f"..{blocks[d][0]}" for d in depths], curves, line,
                f"{label}: cascading randomization (blocks re-initialised down to ...)",
                {index: threshold for _, index, _, threshold in ruled_steps(
                    blocks, depths, line["spearman_abs"], margin, survival)},
            ))
    for label, why in summary["skipped_methods"].items():
        cells.append(Cell(label, "model_randomization", "cascade_head_spearman_abs", np.array([]),
                          False, None, "left out for cost", forced=NOT_TESTED, note=why))
    text = (
        left_out_text(summary["skipped_methods"])
        + "Blocks of a copy of the model are re-initialised from the logits down; a method that "
        "explains the model must give maps that stop resembling the trained model's maps. The "
        "dotted lines are the random-pair baseline (maps of two different images under the trained "
        f"model). Rules: after the head's and the top block's re-initialisation the map must have "
        f"lost at least {1 - survival:.0%} of its distance from that line (guided backprop's "
        f"does not), and at full randomization its Spearman(|map|) must fall below the line + "
        f"{margin:g}; where the line itself is at or above {max_random_pair:g}, the test is not "
        "informative."
    )
    total_evals = sum(c[1] for c in cost.values())
    return AuditResult("model_randomization", title, text, rows, cells, figures, summary,
                       time.perf_counter() - start, total_evals)


def step_threshold(line: float, survival: float) -> float:
    """The similarity a map may keep after a decisive step: the random-pair level plus
    ``survival`` of the way from it to 1 (an unchanged map)."""
    return float(line) + survival * (1.0 - float(line))


def uninformative(mean: float, line: float, max_random_pair: float) -> tuple[str | None, str]:
    """(NOT_INFORMATIVE, why) when a similarity rule cannot tell methods apart, else (None, "")."""
    if not np.isfinite(mean) or not np.isfinite(line):
        return NOT_INFORMATIVE, "the map is constant: its similarity is undefined"
    if line >= max_random_pair:
        return NOT_INFORMATIVE, (
            f"maps of different images already agree at {line:.2f} (>= {max_random_pair:g}): "
            "'below it' cannot separate a map that follows the model from one that does not")
    return None, ""


def ruled_steps(blocks: list[Block], depths: list[int], line: float, margin: float,
                survival: float) -> list[tuple[str, int, str, float | None]]:
    """(metric, index into ``depths``, block, threshold) of every ruled cascade step: the
    decisive steps, then full randomization; Spearman(|map|) must be below the threshold."""
    steps = [(f"cascade_{name}_spearman_abs", depths.index(d), blocks[d][0],
              step_threshold(line, survival))
             for d, name in DECISIVE if d in depths and d != depths[-1]]
    steps.append(("cascade_final_spearman_abs", len(depths) - 1, "all blocks", limit(line, margin)))
    return steps


def _cascade_cells(label: str, blocks: list[Block], depths: list[int],
                   cascade: list[dict[str, np.ndarray]], pair: dict[str, np.ndarray],
                   margin: float, survival: float, max_random_pair: float, seconds: float,
                   evals: int) -> list[Cell]:
    """The ruled cells of one method: the decisive steps and the full re-initialisation."""
    line = _mean(pair["spearman_abs"])
    cells = []
    for k, (metric, index, block, threshold) in enumerate(
            ruled_steps(blocks, depths, line, margin, survival)):
        values = cascade[index]["spearman_abs"]
        mean = _mean(values)
        if metric == "cascade_final_spearman_abs":
            rule = f"Spearman(|map|) at full randomization < random-pair ({line:.2f}) + {margin:g}"
        else:
            rule = (f"Spearman(|map|) after re-initialising down to {block} < random-pair "
                    f"({line:.2f}) + {survival:g} × (1 − random-pair) = {threshold:.2f}")
        forced, note = uninformative(mean, line, max_random_pair)
        passed = bool(mean < threshold) if np.isfinite(mean) and threshold is not None else None
        # The cost goes with the first cell, so that the scorecard does not count it thrice.
        cells.append(Cell(label, "model_randomization", metric, values, False, passed, rule,
                          seconds if k == 0 else 0.0, evals if k == 0 else 0,
                          threshold=threshold, forced=forced, note=note))
    final = cascade[-1]
    cells.append(Cell(label, "model_randomization", "cascade_final_ssim", final["ssim"], False,
                      None, "no rule (reported for ranking)"))
    return cells


def _cost_label_randomization(p: dict, per_map: dict[str, float], explainers) -> float:
    return p["n"] * sum(per_map.values())  # plus the retrain, which is not counted here


@register_audit("label_randomization", order=40, family="randomization",
                needs="a run that can retrain", cost=_cost_label_randomization)
def label_randomization(
    inp: AuditInput,
    figures_dir: Path,
    n_images: int | None = None,
    margin: float = 0.1,
    batch_size: int = 2,
) -> AuditResult:
    """Maps of a model retrained on shuffled labels against the real model's."""
    title = "Label randomization (data randomization test)"
    if inp.retrain_shuffled is None:
        return skipped("label_randomization", title,
                       "no way to retrain on shuffled labels was provided for this run")
    images = stratified(inp.splits["test"], n_images)
    if len(images) < 2:
        return skipped("label_randomization", title, "needs at least 2 test images (random pairs)")
    start = time.perf_counter()
    seed = fork_seed(inp.generator)
    t0 = time.perf_counter()
    shuffled = inp.retrain_shuffled(seed).eval()
    train_seconds = time.perf_counter() - t0
    rows, cells = [], []
    summary: dict = {"seed": seed, "retrain_seconds": round(train_seconds, 3), "margin": margin}
    total_evals = 0
    for explainer in inp.explainers:
        ref = trained_maps(inp, explainer, "test", images).maps
        pair = random_pair(inp, explainer, images)
        m = compute_maps(explainer, shuffled, images.x, images.targets, inp.ctx, batch_size,
                         reference=inp.model, fast=inp.fast)
        total_evals += m.model_evals
        sims = similarities(ref, m.maps)
        for i, image_id in enumerate(images.ids):
            rows.append({"method": explainer.label, "id": image_id,
                         **{f"{k}": float(v[i]) for k, v in sims.items()},
                         **{f"random_pair_{k}": float(v[i]) for k, v in pair.items()}})
        line = _mean(pair["spearman_abs"])
        value = _mean(sims["spearman_abs"])
        passed = bool(value < line + margin) if np.isfinite(value) else None
        cells.append(Cell(explainer.label, "label_randomization", "spearman_abs_vs_shuffled",
                          sims["spearman_abs"], False, passed,
                          f"Spearman(|map|) with the shuffled-label model's map < random-pair "
                          f"({line:.2f}) + {margin:g}", m.seconds, m.model_evals,
                          threshold=limit(line, margin)))
        summary[explainer.label] = {"random_pair": {k: _mean(v) for k, v in pair.items()},
                                    "shuffled": {k: _mean(v) for k, v in sims.items()}}
    text = (
        "The recipe's model is retrained on shuffled training labels; it has learnt nothing true "
        "about the classes, so a method that explains what the model learnt must give different "
        f"maps for it. Rule: Spearman(|map|) between the two models' maps below the random-pair "
        f"line + {margin:g}."
    )
    return AuditResult("label_randomization", title, text, rows, cells, [], summary,
                       time.perf_counter() - start, total_evals)


def limit(line: float, margin: float) -> float | None:
    """The randomization rules' threshold: the random-pair level plus the margin."""
    value = float(line) + float(margin)
    return value if np.isfinite(value) else None
