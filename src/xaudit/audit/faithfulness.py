"""Faithfulness: deletion / insertion (RISE), ROAD MoRF / LeRF, infidelity and max-sensitivity.

Every method is compared, image by image, with maps that never look at the model: the negative
controls, or without them a random map and the Sobel edge magnitude of the image. A method
whose mean deletion or insertion AUC is not ahead of the edge map's is listed in the section's
text as what it is, a comparison of means; the paired tests decide the cells.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from torch import Tensor

from ..errors import ConfigError, echo
from ..explain.base import Explainer, make_baseline
from ..explain.counting import count_model_evals
from . import plots
from .base import (
    AuditInput,
    AuditResult,
    Cell,
    class_scores,
    register_audit,
    skipped,
    stratified,
    sub_generator,
    trained_maps,
)
from .captum_metrics import _explain_fn, infidelity_scores, sensitivity_scores  # noqa: F401
from .controls import control_label, is_control
from .curves import (  # noqa: F401
    adaptive_reveal,
    auc,
    coarse_steps,
    discretisation,
    interval_tolerance,
    relevance_ranks,
    reveal_curve,
)
from .draws import image_seeds
from .informative import (  # noqa: F401  (shared names)
    EARLY,
    baseline_keeps_class,
    informative_images,
    min_change,
    uninformative,
)
from .references import centre_map, random_map, sobel_map  # noqa: F401  (shared names)
from .road import linear_impute, noisy_linear_impute, road_curves, solve_seconds  # noqa: F401
from .scorecard import NOT_INFORMATIVE, mean_ci

RANDOM = "random (reference)"
EDGE = "edge (reference)"
CONTROL_RANDOM, CONTROL_EDGE = control_label("random"), control_label("edge")

# --------------------------------------------------------------------------- the audit


def _cost_faithfulness(p: dict, per_map: dict[str, float], explainers) -> float:
    """Forward passes per map: two curves (their first two levels: finer ones only where a
    curve bends; both ends are shared by every map), two ROAD orders, infidelity; the
    reference maps too, unless the controls are them; plus the re-explanations of
    max-sensitivity."""
    infid = p["infidelity_samples"] + 1 if p["infidelity_samples"] > 0 else 0  # + f(x) itself
    points = p["steps"] + 1 if p["tolerance"] == 0 else min(p["steps"], 2 * coarse_steps(p["steps"])) + 1
    forwards = 2 * (points - 2) + 2 * len(p["road_percentages"]) + infid
    sens = sum(v * p["sensitivity_samples"] for v in per_map.values()  # x itself: the stored map
               if p["sensitivity_samples"] > 0 and v <= p["sensitivity_max_evals"])
    return p["n"] * (3 + forwards * (len(per_map) + _own_references(per_map)) + sens)


def _own_references(labels) -> int:
    """The reference maps faithfulness scores besides the audited ones (none with controls)."""
    return (CONTROL_RANDOM not in labels) + (CONTROL_EDGE not in labels)


def _road_seconds(p: dict, inp: AuditInput, explainers) -> float:
    """ROAD's solves: both orders, every percentage, for each image and scored map."""
    maps = len(explainers) + _own_references({e.label for e in explainers})
    one = solve_seconds(inp.splits["test"].pixels[0], [float(q) for q in p["road_percentages"]])
    return p["n"] * maps * 2 * one


@register_audit("faithfulness", order=50, family="faithfulness",
                quick=True, cost=_cost_faithfulness, other_seconds=_road_seconds)
def faithfulness(
    inp: AuditInput,
    figures_dir: Path,
    n_images: int | None = None,
    steps: int = 64,
    tolerance: float | str = "auto",
    score: str = "prob",
    road_percentages: list[float] = (0.2, 0.4, 0.6, 0.8),
    infidelity_samples: int = 4,
    infidelity_std: float = 0.1,
    sensitivity_samples: int = 2,
    sensitivity_radius: float = 0.02,
    sensitivity_max_evals: int = 64,
    deletion_baseline: str = "black",
    max_early_share: float = 0.8,
    batch_size: int = 32,
) -> AuditResult:
    """Deletion/insertion AUC, ROAD, infidelity and max-sensitivity, against edge and random."""
    title = "Faithfulness: does removing the top-ranked pixels change the prediction?"
    images = stratified(inp.splits["test"], n_images)
    if len(images) == 0:
        return skipped("faithfulness", title, "no test images to audit")
    if score not in ("prob", "logit"):
        raise ConfigError(f"faithfulness.score: expected 'prob' or 'logit', got {score!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"faithfulness.steps: expected a whole number >= 1, got {steps!r}")
    if tolerance != "auto" and (isinstance(tolerance, bool) or not isinstance(tolerance, (int, float))
                                or not 0 <= tolerance < 1):
        raise ConfigError(f"faithfulness.tolerance: expected 'auto' or a number in [0, 1), got {echo(tolerance)}")
    tol = interval_tolerance if tolerance == "auto" else float(tolerance)
    # Imputing every pixel leaves ROAD's linear system without a known value to fill from.
    if not all(isinstance(p, (int, float)) and 0 <= p < 1 for p in road_percentages):
        raise ConfigError(f"faithfulness.road_percentages: expected fractions in [0, 1), got {road_percentages!r}")
    if deletion_baseline not in DELETION_BASELINES:
        raise ConfigError(f"faithfulness.deletion_baseline: expected one of "
                          f"{', '.join(DELETION_BASELINES)}, got {echo(deletion_baseline)}")
    if not 0 < max_early_share <= 1:
        raise ConfigError(f"faithfulness.max_early_share: expected a fraction in (0, 1], got {echo(max_early_share)}")
    start_time = time.perf_counter()
    gen = inp.generator
    model, ctx = inp.model, inp.ctx
    n, _, h, w = images.x.shape
    fractions = np.linspace(0.0, 1.0, steps + 1)
    black = make_baseline(deletion_baseline, images.x, ctx)
    blurred = make_baseline("blur", images.x, ctx)
    percentages = [float(p) for p in road_percentages]

    methods: dict[str, tuple[Tensor, Explainer | None, float, int]] = {}
    for explainer in inp.explainers:
        m = trained_maps(inp, explainer, "test", images)
        methods[explainer.label] = (m.attributions, explainer, m.seconds, m.model_evals)
    # The references every method must beat: the random and edge controls when they run (no
    # map is scored twice), else maps of their own, scored as references only.
    rand_ref = CONTROL_RANDOM if CONTROL_RANDOM in methods else RANDOM
    edge_ref = CONTROL_EDGE if CONTROL_EDGE in methods else EDGE
    if rand_ref == RANDOM:
        methods[RANDOM] = (random_map((n, 1, h, w), sub_generator(gen)), None, 0.0, 0)
    if edge_ref == EDGE:
        methods[EDGE] = (sobel_map(images.pixels).unsqueeze(1), None, 0.0, 0)

    # Common random numbers: each image's tie breaks, imputation noise, infidelity noise and
    # noisy copies are drawn once (one seed per image and kind) and replayed for every map, so
    # maps are compared on the same perturbations (and two equal maps score alike).
    seeds = {kind: image_seeds(gen, n) for kind in ("ties", "morf", "lerf", "infidelity", "sensitivity")}
    summary: dict = {"references": [rand_ref, edge_ref], "flagged_no_better_than_edge": [],
                     "sensitivity_skipped": []}
    per_method: dict[str, dict[str, np.ndarray]] = {}
    curves: dict[str, dict[str, np.ndarray]] = {}
    costs: dict[str, tuple[float, int]] = {}
    used_tolerance: dict[str, dict[str, float]] = {}
    # Fractions 0 and 1 of both curves are the image, the deletion baseline and the blurred
    # image whatever the map: scored once here for every map.
    with count_model_evals(model) as count:
        score_x, score_black, score_blurred = (
            class_scores(model, v, images.targets, batch_size, score).numpy()
            for v in (images.x, black, blurred))
    total_evals = curve_evals = count.n
    # An image whose curve ends score the class alike cannot inform that curve: its area is
    # NaN for every map (the ends are the same images for every map).
    least = min_change(score, [score_x, score_black, score_blurred])
    informs = {"deletion": informative_images(score_x, score_black, least),
               "insertion": informative_images(score_blurred, score_x, least)}
    for label, (attr, explainer, map_seconds, map_evals) in methods.items():
        t0 = time.perf_counter()
        maps2d = attr.sum(dim=1)
        ranks = relevance_ranks(maps2d, seeds["ties"])
        with count_model_evals(model) as count:
            dele = adaptive_reveal(model, black, images.x, ranks, images.targets, steps, tol,
                                   batch_size, score, ends=(score_x, score_black))
            ins = adaptive_reveal(model, images.x, blurred, ranks, images.targets, steps, tol,
                                  batch_size, score, ends=(score_blurred, score_x))
            morf = road_curves(model, images.pixels, ranks, images.targets, percentages, ctx,
                               seeds["morf"], True, batch_size, score)
            lerf = road_curves(model, images.pixels, ranks, images.targets, percentages, ctx,
                               seeds["lerf"], False, batch_size, score)
            infid = (
                infidelity_scores(model, images.x, attr, images.targets, seeds["infidelity"],
                                  infidelity_samples, infidelity_std, batch_size)
                if infidelity_samples > 0
                else np.full(n, np.nan)
            )
            sens = np.full(n, np.nan)
            too_costly = map_evals / n > sensitivity_max_evals
            if too_costly:
                summary["sensitivity_skipped"].append(label)
            if sensitivity_samples > 0 and label != RANDOM and not too_costly:
                fn = _explain_fn(explainer, model, ctx, inp.fast)
                sens = sensitivity_scores(fn, images.x, images.targets, seeds["sensitivity"],
                                          sensitivity_samples, sensitivity_radius,
                                          maps=attr if explainer is not None else None)
        total_evals += count.n
        curve_evals += dele.evals + ins.evals
        used_tolerance[label] = {"deletion": dele.tolerance, "insertion": ins.tolerance}
        costs[label] = (time.perf_counter() - t0 + map_seconds, count.n + map_evals)
        per_method[label] = {
            "deletion_start": np.array([v[0] for v in dele.values]),
            "deletion_end": np.array([v[-1] for v in dele.values]),
            "deletion_auc": np.where(informs["deletion"], dele.auc, np.nan),
            "insertion_auc": np.where(informs["insertion"], ins.auc, np.nan),
            "deletion_auc_error": np.where(informs["deletion"], dele.error, np.nan),
            "insertion_auc_error": np.where(informs["insertion"], ins.error, np.nan),
            "road_morf": morf.mean(axis=1),
            "road_lerf": lerf.mean(axis=1),
            "road_gap": lerf.mean(axis=1) - morf.mean(axis=1),
            "infidelity": infid,
            "max_sensitivity": sens,
        }
        curves[label] = {
            "deletion": dele.on(fractions).mean(axis=0),
            "insertion": ins.on(fractions).mean(axis=0),
            "morf": morf.mean(axis=0),
            "lerf": lerf.mean(axis=0),
        }

    rows = []
    correct = (images.preds == images.labels).tolist()
    for label, metrics in per_method.items():
        for i in range(n):
            rows.append(
                {
                    "method": label,
                    "id": images.ids[i],
                    "target": inp.classes[int(images.targets[i])],
                    "correct": correct[i],
                    **{k: float(v[i]) for k, v in metrics.items()},
                    "deletion_informative": bool(informs["deletion"][i]),
                    "insertion_informative": bool(informs["insertion"][i]),
                }
            )

    def mean_of(label: str, metric: str) -> float:
        return mean_ci(per_method[label][metric])[0]

    informative = {"deletion_auc": uninformative(curves[rand_ref]["deletion"], fractions, max_early_share),
                   "insertion_auc": uninformative(curves[rand_ref]["insertion"], fractions, max_early_share)}
    left_out = _left_out_images(informs, images.ids, least, deletion_baseline)
    for curve, entry in left_out.items():
        if entry["n"] == n and not informative[f"{curve}_auc"]:
            informative[f"{curve}_auc"] = f"no image's class score moves by {least:.3g} or more"
    summary["not_informative"] = {k: v for k, v in informative.items() if v}
    summary["uninformative_images"] = {**left_out, "min_change": least}
    summary["deletion_baseline"] = deletion_baseline
    summary["discretisation"] = {**discretisation(per_method, steps, tolerance, used_tolerance), "model_evals": curve_evals}
    summary["baseline_keeps_class"] = baseline_keeps_class(score_x, score_black, images.targets.numpy(),
                                                           inp.classes)
    cells: list[Cell] = []
    specs = [
        ("deletion_auc", False, True),
        ("insertion_auc", True, True),
        ("road_gap", True, True),
        ("infidelity", False, True),
        ("max_sensitivity", False, False),
    ]
    for label in per_method:
        reference = label in (RANDOM, EDGE)  # own references; controls are judged
        for metric, higher, ruled in specs:
            values = per_method[label][metric]
            passed, threshold = None, None
            rule = "reference: no rule" if reference else "no rule (reported for ranking)"
            if ruled and not reference:
                better = (lambda a, b: a > b) if higher else (lambda a, b: a < b)
                word = "above" if higher else "below"
                mine = mean_of(label, metric)
                edge, rand = mean_of(edge_ref, metric), mean_of(rand_ref, metric)
                if metric == "infidelity":
                    passed = bool(better(mine, edge)) if np.isfinite(mine) else None
                    rule = "mean infidelity below the edge detector's"
                    threshold = edge
                else:
                    passed = bool(better(mine, edge) and better(mine, rand))
                    rule = f"mean {metric} {word} both the edge detector's and the random map's"
                    # Beating both means beating the stricter of the two.
                    threshold = max(edge, rand) if higher else min(edge, rand)
            seconds, evals = costs[label]
            note = informative.get(metric) or ""
            cells.append(Cell(label, "faithfulness", metric, values, higher, passed, rule, seconds,
                              evals, threshold=_finite_or_none(threshold),
                              forced=NOT_INFORMATIVE if note and passed is not None else None,
                              note=note, check="controls" if ruled and not reference else "",
                              ids=list(images.ids)))
        if not reference and not is_control(label):
            beats_del = mean_of(label, "deletion_auc") < mean_of(edge_ref, "deletion_auc")
            beats_ins = mean_of(label, "insertion_auc") > mean_of(edge_ref, "insertion_auc")
            if not (beats_del and beats_ins):  # no informative image: not shown better either
                summary["flagged_no_better_than_edge"].append(label)

    # One figure for the family: deletion and insertion above, ROAD below.
    figures = [
        plots.plot_curves(
            figures_dir / "audit_faithfulness.png",
            [
                (f"deletion (to {deletion_baseline})", "fraction of pixels removed", fractions,
                 {k: v["deletion"] for k, v in curves.items()}),
                ("insertion (into blur)", "fraction of pixels inserted", fractions,
                 {k: v["insertion"] for k, v in curves.items()}),
                ("ROAD most relevant first", "fraction imputed (noisy linear)",
                 np.asarray(percentages), {k: v["morf"] for k, v in curves.items()}),
                ("ROAD least relevant first", "fraction imputed (noisy linear)",
                 np.asarray(percentages), {k: v["lerf"] for k, v in curves.items()}),
            ],
            f"Faithfulness: mean curves over {n} test images ({score})",
        ),
    ]
    summary["n_images"] = n
    flagged = summary["flagged_no_better_than_edge"]
    warn = "".join(f" {e['n']} of {n} images not informative for {curve}: {e['why']}."
                   for curve, e in left_out.items() if e["n"])
    kept = [c for c, keeps in summary["baseline_keeps_class"].items() if keeps]
    if kept:
        warn += (f" The {deletion_baseline} baseline keeps most of the class score of {', '.join(kept)} "
                 "(it resembles that class's evidence): deletion to it says little there; try "
                 "deletion_baseline: blur or mean.")
    coarse = [k for k, v in summary["discretisation"]["maps"].items() if v["above_interval"]]
    if coarse:
        warn += (f" The areas of {', '.join(coarse)} carry a discretisation error not below their "
                 f"interval's half-width even at {steps} steps: raise faithfulness.steps.")
    if summary["not_informative"]:
        warn += " Not informative here: " + "; ".join(
            f"{k}: {v}" for k, v in summary["not_informative"].items()) + "."
    text = (
        f"Deletion replaces the most relevant pixels by {deletion_baseline} (lower area = more faithful); insertion "
        "reveals them in a blurred image (higher = more faithful); ROAD imputes pixels instead so the "
        "model is not fooled by the artefact (gap = LeRF − MoRF, higher = better). Each method is "
        "compared image by image with maps that see no model (the negative controls; without "
        "them a random and a Sobel edge map); the grid gives those paired tests' outcome"
        + (f". Mean areas not ahead of the edge map's on both deletion and insertion (a "
           f"comparison of means on these images, not a test): {', '.join(flagged)}."
           if flagged else ".")
        + warn
    )
    return AuditResult(
        name="faithfulness",
        title=title,
        text=text,
        rows=rows,
        cells=cells,
        figures=figures,
        summary=summary,
        seconds=time.perf_counter() - start_time,
        model_evals=total_evals,
    )


DELETION_BASELINES = ("black", "blur", "mean")


def _left_out_images(informs: dict[str, np.ndarray], ids: list[str], least: float,
                     baseline: str) -> dict[str, dict]:
    """Per curve: how many images (and which) its areas leave out, and why."""
    keeps = {"deletion": f"the {baseline} baseline", "insertion": "the blurred image"}
    return {curve: {"n": int((~ok).sum()), "ids": [i for i, good in zip(ids, ok, strict=True) if not good],
                    "why": f"{keeps[curve]} keeps the class score (it moves by less than {least:.3g})"}
            for curve, ok in informs.items()}


def _finite_or_none(value: float | None) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None
