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
    compute_maps,
    fork_seed,
    register_audit,
    safe_name,
    skipped,
    stratified,
    trained_maps,
)
from .scorecard import mean_ci
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
    """Evenly spaced cascade depths, always including the first and the full model."""
    if n_blocks <= max_steps:
        return list(range(n_blocks))
    return sorted({int(round(v)) for v in np.linspace(0, n_blocks - 1, max_steps)})


def _mean(values: np.ndarray) -> float:
    return mean_ci(values)[0]


@register_audit("model_randomization")
def model_randomization(
    inp: AuditInput,
    figures_dir: Path,
    n_images: int | None = None,
    max_steps: int = 4,
    independent: bool = True,
    margin: float = 0.1,
    max_method_evals: int = 64,
    batch_size: int = 2,
) -> AuditResult:
    """Cascading and independent re-initialisation; pass if the map decorrelates fully."""
    title = "Model randomization (cascading and independent)"
    images = stratified(inp.splits["test"], n_images)
    if len(images) < 2:
        return skipped("model_randomization", title, "needs at least 2 test images (random pairs)")
    start = time.perf_counter()
    blocks = blocks_from_names(inp.model, inp.blocks) if inp.blocks else find_blocks(inp.model)
    if not blocks:
        return skipped("model_randomization", title, "the model has no parameterised blocks")
    seeds = [fork_seed(inp.generator) for _ in blocks]
    depths = pick_steps(len(blocks), max_steps)
    rows, cells, figures = [], [], []
    summary: dict = {"blocks": [b[0] for b in blocks], "cascade_steps": [blocks[d][0] for d in depths],
                     "margin": margin, "skipped_methods": {}}
    total_evals = 0
    for explainer in inp.explainers:
        trained = trained_maps(inp, explainer, "test", images)
        per_image = trained.model_evals / len(images)
        if per_image > max_method_evals:  # stated in the summary, never silent
            summary["skipped_methods"][explainer.label] = (
                f"costs {per_image:.0f} model evaluations per image, above max_method_evals="
                f"{max_method_evals}; raise it to include this method"
            )
            continue
        ref = trained.maps
        pair = random_pair(inp, explainer, images)
        seconds, evals = 0.0, 0
        cascade: list[dict[str, np.ndarray]] = []
        strip = []
        runs = [("cascading", d, blocks[: d + 1], seeds[: d + 1]) for d in depths]
        if independent:
            runs += [("independent", d, [blocks[d]], [seeds[d]]) for d in depths]
        for mode, d, chosen, chosen_seeds in runs:
            model = randomized_copy(inp.model, chosen, chosen_seeds)
            m = compute_maps(explainer, model, images.x, images.targets, inp.ctx, batch_size,
                             reference=inp.model)
            seconds += m.seconds
            evals += m.model_evals
            sims = similarities(ref, m.maps)
            if mode == "cascading":
                cascade.append(sims)
                strip.append((f"..{blocks[d][0]}", m.maps[0].numpy()))
            for i, image_id in enumerate(images.ids):
                rows.append({"method": explainer.label, "mode": mode, "block": blocks[d][0],
                             "depth": d, "id": image_id,
                             **{k: float(v[i]) for k, v in sims.items()}})
        for i, image_id in enumerate(images.ids):
            rows.append({"method": explainer.label, "mode": "random_pair", "block": "", "depth": "",
                         "id": image_id, **{k: float(v[i]) for k, v in pair.items()}})
        total_evals += evals
        final = cascade[-1]
        line = _mean(pair["spearman_abs"])
        final_mean = _mean(final["spearman_abs"])
        passed = bool(final_mean < line + margin) if np.isfinite(final_mean) else None
        rule = (f"cascading Spearman(|map|) at full randomization < random-pair "
                f"({line:.2f}) + {margin:g}")
        cells.append(Cell(explainer.label, "model_randomization", "cascade_final_spearman_abs",
                          final["spearman_abs"], False, passed, rule, seconds, evals,
                          threshold=_limit(line, margin)))
        cells.append(Cell(explainer.label, "model_randomization", "cascade_final_ssim",
                          final["ssim"], False, None, "no rule (reported for ranking)"))
        summary[explainer.label] = {
            "random_pair": {k: _mean(v) for k, v in pair.items()},
            "cascade": {k: [_mean(s[k]) for s in cascade] for k in METRICS},
        }
        steps_labels = [f"..{blocks[d][0]}" for d in depths]
        figures.append(plots.plot_randomization(
            figures_dir / f"audit_model_randomization_{safe_name(explainer.label)}.png",
            images.pixels[0].permute(1, 2, 0).numpy(),
            [("trained", ref[0].numpy()), *strip],
            steps_labels,
            {k: [_mean(s[k]) for s in cascade] for k in METRICS},
            {k: _mean(v) for k, v in pair.items()},
            f"{explainer.label}: cascading randomization (blocks re-initialised down to ...)",
        ))
    text = (
        ("Not run (too costly, see max_method_evals): "
         + ", ".join(summary["skipped_methods"]) + ". " if summary["skipped_methods"] else "")
        + "Blocks of a copy of the model are re-initialised from the logits down; a method that "
        "explains the model must give maps that stop resembling the trained model's maps. The "
        "dotted lines are the random-pair baseline (maps of two different images under the trained "
        f"model). Rule: at full randomization the Spearman(|map|) must fall below that line + {margin:g}."
    )
    return AuditResult("model_randomization", title, text, rows, cells, figures, summary,
                       time.perf_counter() - start, total_evals)


@register_audit("label_randomization")
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
                         reference=inp.model)
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
                          threshold=_limit(line, margin)))
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


def _limit(line: float, margin: float) -> float | None:
    """The randomization rules' threshold: the random-pair level plus the margin."""
    value = float(line) + float(margin)
    return value if np.isfinite(value) else None
