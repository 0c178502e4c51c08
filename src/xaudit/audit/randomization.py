"""Sanity checks (Adebayo et al. 2018): maps must change when the weights or the labels do.

Model randomization re-initialises blocks of a copy of the model in a cascade (from the
logits down, or from the input up) or one at a time (independent); label randomization
compares with a model trained on shuffled labels. The yardstick, per image, is its
random-pair level: the mean similarity of its trained map to every other image's
(``excess.py``); eMPRT's is the map's own complexity.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError, echo
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
    skipped,
    stratified,
    trained_maps,
)
from .complexity import complexity_rise
from .controls import is_control
from .excess import (
    DELTA,
    REPLACED,
    excess,
    excess_over_midpoint,
    pair_levels,
    point_passed,
    uninformative,
)
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
    """Per image, the similarity of its trained map to the trained maps of other images.

    Spearman (of |maps| and of signed maps), the ruled metrics: the mean over every other
    image. SSIM and HOG, reported only: one drawn partner per image (every pair would cost
    N² of them)."""
    key = ("random_pair", explainer.label, tuple(images.ids))
    if key not in inp.cache:
        maps = trained_maps(inp, explainer, "test", images).maps
        partner = derangement(len(images), inp.generator)
        drawn = similarities(maps, maps[partner])
        inp.cache[key] = {"spearman_abs": pair_levels(maps, absolute=True),
                          "spearman_signed": pair_levels(maps, absolute=False),
                          "ssim": drawn["ssim"], "hog_pearson": drawn["hog_pearson"]}
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
# Top-down (the default): from the logits, so that the head and the top block are the first
# steps and Adebayo's failure (a map that survives them) is ruled. Bottom-up (Hedström et
# al. 2023, Binder et al. 2023): from the input, the early steps' intact upper layers cannot
# keep the map's shape; it has no decisive steps. Full randomization is the same model in
# both orders.
ORDERS = ("top_down", "bottom_up")


def cascade(blocks: list[Block], seeds: list[int], depth: int, order: str
            ) -> tuple[list[Block], list[int], str]:
    """The blocks (and their seeds) re-initialised at cascade step ``depth`` and its label."""
    if order == "top_down":
        return blocks[: depth + 1], seeds[: depth + 1], f"..{blocks[depth][0]}"
    first = len(blocks) - 1 - depth
    return blocks[first:], seeds[first:], f"{blocks[first][0]}.."


def _mean(values: np.ndarray) -> float:
    return mean_ci(values)[0]


def _cost_model_randomization(p: dict, per_map: dict[str, float], explainers) -> float:
    steps = p["max_steps"] + 1  # the head, the top block and the evenly spaced depths
    runs = 2 * steps - 1 if p["independent"] else steps  # the head copy serves both
    return p["n"] * runs * affordable_evals(per_map, p["max_method_evals"])


@register_audit("model_randomization", order=30, family="randomization",
                quick=True, cost=_cost_model_randomization, replaced=REPLACED)
def model_randomization(
    inp: AuditInput,
    figures_dir: Path,
    n_images: int | None = None,
    max_steps: int = 4,
    independent: bool = False,
    order: str = "top_down",
    max_method_evals: int = 64,
    batch_size: int = 2,
) -> AuditResult:
    """Cascading (and independent) re-initialisation: the paired excess similarity at the
    decisive steps and at full randomization, and eMPRT's complexity rise."""
    if order not in ORDERS:
        raise ConfigError(f"audit.audits: model_randomization.order must be one of "
                          f"{', '.join(ORDERS)}, got {echo(order)}")
    title = (f"Model randomization (cascading {order.replace('_', '-')}"
             f"{', and independent' if independent else ''})")
    images = stratified(inp.splits["test"], n_images)
    if len(images) < 2:
        return skipped("model_randomization", title, "needs at least 2 test images (random pairs)")
    start = time.perf_counter()
    blocks = blocks_from_names(inp.model, inp.blocks) if inp.blocks else find_blocks(inp.model)
    if not blocks:
        return skipped("model_randomization", title, "the model has no parameterised blocks")
    seeds = [fork_seed(inp.generator) for _ in blocks]
    depths = pick_steps(len(blocks), max_steps)
    steps = [cascade(blocks, seeds, d, order) for d in depths]
    summary: dict = {"blocks": [b[0] for b in blocks], "order": order,
                     "cascade_steps": [label for _, _, label in steps],
                     "delta": DELTA, "skipped_methods": {}}
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
    runs = [("cascading", d, chosen, chosen_seeds)
            for d, (chosen, chosen_seeds, _) in zip(depths, steps, strict=True)]
    if independent:
        runs += [("independent", d, [blocks[d]], [seeds[d]]) for d in depths]
    rows: list[dict] = []
    cost = {e.label: [0.0, 0] for e in methods}
    curves_of: dict[str, list[dict[str, np.ndarray]]] = {e.label: [] for e in methods}
    final: dict[str, Tensor] = {}  # the fully randomized model's maps, for eMPRT
    # One randomized copy per step, shared by every method: the copy is the costly part.
    done: dict[tuple, dict] = {}  # a one-block copy, cascading or independent, is one copy
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
                if len(chosen) == 1:
                    done.setdefault(same, {})[label] = m
            sims = similarities(refs[label], m.maps)
            if mode == "cascading":
                curves_of[label].append(sims)
                if d == depths[-1]:
                    final[label] = m.maps
            for i, image_id in enumerate(images.ids):
                rows.append({"method": label, "mode": mode, "block": blocks[d][0], "depth": d,
                             "id": image_id, **{k: float(v[i]) for k, v in sims.items()}})
        del model
    cells, figures = [], []
    drawn: dict[str, tuple] = {}
    for explainer in methods:
        label = explainer.label
        pair = pairs[label]
        for i, image_id in enumerate(images.ids):
            rows.append({"method": label, "mode": "random_pair", "block": "", "depth": "",
                         "id": image_id, **{k: float(v[i]) for k, v in pair.items()}})
        ruled = ruled_steps(blocks, depths, order)
        cells += _cascade_cells(label, ruled, curves_of[label], pair["spearman_abs"],
                                images.ids, *cost[label])
        rise = complexity_rise(refs[label], final[label])
        cells.append(_emprt_cell(label, rise, refs[label], images.ids))
        curves = {k: [_mean(s[k]) for s in curves_of[label]] for k in METRICS}
        line = {k: _mean(v) for k, v in pair.items()}
        summary[label] = {"random_pair": line, "cascade": curves,
                          "excess": {c.metric: _mean(c.values) for c in cells
                                     if c.method == label and c.check}}
        if not is_control(label):  # a control's curves are in the table and the summary
            bars = {index: line["spearman_abs"] if how == "level"
                    else (1.0 + line["spearman_abs"]) / 2 for _, index, _, how in ruled}
            drawn[label] = (curves, line, bars)
    if drawn:  # one figure for the family: every method's curves side by side
        figures.append(plots.plot_randomization(
            figures_dir / "audit_model_randomization.png", [s[2] for s in steps], drawn,
            f"Cascading randomization {order.replace('_', '-')}: mean similarity per method"))
    for label, why in summary["skipped_methods"].items():
        # Ruled like the cells it stands for, so that the verdict counts it as not tested.
        cells.append(Cell(label, "model_randomization", "cascade_final_spearman_abs", np.array([]),
                          False, None, "left out for cost", threshold=0.0, forced=NOT_TESTED,
                          note=why, check="noninferior", min_difference=DELTA))
    text = (
        left_out_text(summary["skipped_methods"])
        + f"Blocks of a copy of the model are re-initialised {ORDER_TEXT[order]}; a method that "
        "explains the model must give maps that stop resembling the trained model's maps. The "
        "yardstick, per image, is the random-pair level: the mean similarity of its trained map "
        "to the trained maps of every other image (dotted). The rules are paired, image by image: "
        "at full randomization Spearman(|map|) must not exceed the image's random-pair level "
        + ("(by more than the smallest difference that matters); after the head's and the top "
           "block's re-initialisation the map must be nearer that level than its unchanged self "
           "(guided backprop's is not). " if order == "top_down" else
           "(by more than the smallest difference that matters); the bottom-up order has no "
           "decisive steps (the default, top-down, has). ")
        + "eMPRT (Hedström et al. 2023): the entropy of |map| must rise from the trained to the "
        "fully randomized model (the same maps, no extra model evaluations). A map that hardly "
        "depends on the image makes the test not informative."
    )
    total_evals = sum(c[1] for c in cost.values())
    return AuditResult("model_randomization", title, text, rows, cells, figures, summary,
                       time.perf_counter() - start, total_evals)


ORDER_TEXT = {"top_down": "from the logits down (top-down, the default: the head and the top "
                          "block come first, the steps where Adebayo et al. found guided "
                          "backprop's map survives)",
              "bottom_up": "from the input up (bottom-up, as Hedström et al. 2023 recommend)"}


def ruled_steps(blocks: list[Block], depths: list[int], order: str = "top_down"
                ) -> list[tuple[str, int, str, str]]:
    """(metric, index into ``depths``, block, yardstick) of every ruled cascade step: top-down,
    the decisive steps against the half-way point; then full randomization against the
    random-pair level."""
    steps = []
    if order == "top_down":
        steps = [(f"cascade_{name}_spearman_abs", depths.index(d), blocks[d][0], "midpoint")
                 for d, name in DECISIVE if d in depths and d != depths[-1]]
    steps.append(("cascade_final_spearman_abs", len(depths) - 1, "all blocks", "level"))
    return steps


def _cascade_cells(label: str, ruled: list[tuple[str, int, str, str]],
                   curves: list[dict[str, np.ndarray]], levels: np.ndarray, ids: list[str],
                   seconds: float, evals: int) -> list[Cell]:
    """The ruled cells of one method: per image, the excess similarity at each ruled step."""
    cells = []
    for k, (metric, index, block, how) in enumerate(ruled):
        sims = curves[index]["spearman_abs"]
        if how == "level":
            values, room = excess(sims, levels), 1.0
            rule = ("Spearman(|map|) at full randomization minus the image's random-pair level "
                    f"(mean {_mean(levels):.2f}): no more than 0, paired per image")
        else:
            values, room = excess_over_midpoint(sims, levels), 0.5
            rule = (f"Spearman(|map|) after re-initialising down to {block} minus half-way "
                    f"between the image's random-pair level (mean {_mean(levels):.2f}) and 1: "
                    "no more than 0, paired per image")
        forced, note = uninformative(levels, sims, room)
        # The cost goes with the first cell, so that the scorecard does not count it thrice.
        cells.append(Cell(label, "model_randomization", metric, values, False,
                          point_passed(values), rule, seconds if k == 0 else 0.0,
                          evals if k == 0 else 0, threshold=0.0, forced=forced, note=note,
                          check="noninferior", min_difference=DELTA, ids=list(ids)))
    cells.append(Cell(label, "model_randomization", "cascade_final_ssim", curves[-1]["ssim"], False,
                      None, "no rule (reported for ranking)", ids=list(ids)))
    return cells


def _emprt_cell(label: str, rise: np.ndarray, trained: Tensor, ids: list[str]) -> Cell:
    """eMPRT's cell: the complexity of |map| must rise when the model is fully randomized."""
    flat = trained.reshape(len(trained), -1).abs()
    forced, note = None, ""
    if not np.isfinite(rise).any():
        forced, note = NOT_INFORMATIVE, ("the map is zero (trained or fully randomized): its "
                                         "complexity is undefined")
    elif bool((flat.amax(dim=1) == flat.amin(dim=1)).all()):
        forced, note = NOT_INFORMATIVE, ("the map is uniform: its complexity is already the "
                                         "largest there is and cannot rise")
    # Reported, not ruled: a CAM of a randomized network can be more concentrated than the
    # trained one's (Grad-CAM on Adebayo's model falls), which would contradict the known
    # answer that Grad-CAM passes randomization; every control fails it (docs/audits.md).
    return Cell(label, "model_randomization", "emprt_complexity_rise", rise, True, None,
                "reported: log(entropy of |map| fully randomized / trained), per image",
                threshold=0.0, forced=forced, note=note, ids=list(ids))


def _cost_label_randomization(p: dict, per_map: dict[str, float], explainers) -> float:
    return p["n"] * sum(per_map.values())  # plus the retrain, which is not counted here


@register_audit("label_randomization", order=40, family="randomization",
                needs="a run that can retrain", cost=_cost_label_randomization,
                replaced={"margin": REPLACED["margin"]})
def label_randomization(
    inp: AuditInput,
    figures_dir: Path,
    n_images: int | None = None,
    batch_size: int = 2,
) -> AuditResult:
    """Maps of a model retrained on shuffled labels against the real model's, paired per image."""
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
    summary: dict = {"seed": seed, "retrain_seconds": round(train_seconds, 3), "delta": DELTA}
    total_evals = 0
    for explainer in inp.explainers:
        ref = trained_maps(inp, explainer, "test", images).maps
        pair = random_pair(inp, explainer, images)
        m = compute_maps(explainer, shuffled, images.x, images.targets, inp.ctx, batch_size,
                         reference=inp.model, fast=inp.fast)
        total_evals += m.model_evals
        sims = similarities(ref, m.maps)
        values = excess(sims["spearman_abs"], pair["spearman_abs"])
        for i, image_id in enumerate(images.ids):
            rows.append({"method": explainer.label, "id": image_id,
                         **{f"{k}": float(v[i]) for k, v in sims.items()},
                         **{f"random_pair_{k}": float(v[i]) for k, v in pair.items()},
                         "excess_spearman_abs": float(values[i])})
        line = _mean(pair["spearman_abs"])
        forced, note = uninformative(pair["spearman_abs"], sims["spearman_abs"])
        cells.append(Cell(explainer.label, "label_randomization", "spearman_abs_vs_shuffled",
                          values, False, point_passed(values),
                          "Spearman(|map|) with the shuffled-label model's map minus the image's "
                          f"random-pair level (mean {line:.2f}): no more than 0, paired per image",
                          m.seconds, m.model_evals, threshold=0.0, forced=forced, note=note,
                          check="noninferior", min_difference=DELTA, ids=list(images.ids)))
        summary[explainer.label] = {"random_pair": {k: _mean(v) for k, v in pair.items()},
                                    "shuffled": {k: _mean(v) for k, v in sims.items()},
                                    "excess": _mean(values)}
    text = (
        "The recipe's model is retrained on shuffled training labels; it has learnt nothing true "
        "about the classes, so a method that explains what the model learnt must give different "
        "maps for it. Rule, paired per image: Spearman(|map|) between the two models' maps no "
        "higher than the image's random-pair level (the mean similarity of its map to every other "
        "image's map). A map that hardly depends on the image makes the test not informative."
    )
    return AuditResult("label_randomization", title, text, rows, cells, [], summary,
                       time.perf_counter() - start, total_evals)
