"""The explain stage: the selected test images × the recipe's methods, maps to disk, figures.

Under torchrun each rank explains its shard of the images (``distributed``); rank 0 then
writes the summary, the tables and the figures.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from functools import partial

import torch

from ..data.base import Record
from ..data.transforms import DecodedStore
from ..distributed import World, explain_method_sharded, keep_or_reset_maps
from ..errors import MethodRefused, XauditError, echo
from ..explain import Explainer, validate_method_specs
from ..explain.base import context_for
from ..explain.engine import MapStore, explain_records, resolve_targets
from ..explain.fastpath import FastPath, ForwardCache
from ..models import Classifier
from ..run import RunDir, fingerprint, read_csv, write_csv
from ..safety import safe_name, unique_names
from .references import train_mean_colour, train_references


@dataclass
class Where:
    """Where a stage runs: the run folder, this process's rank and device, its reporting."""

    run: RunDir
    world: World
    device: torch.device
    progress: object
    log: object


def explain_stage(clf: Classifier, rows: list[dict], test: list[Record], store: DecodedStore,
                  recipe, upstream: str, where: Where, train: list[Record] | None = None) -> None:
    """The recipe's methods on the selected ``rows`` of the predictions table; ``upstream``:
    the fingerprint of what made the model and predictions (part of the stored maps' key);
    ``train``: the split expected_gradients draws its baselines from."""
    r, run = recipe, where.run
    model, pre = clf.module, clf.preprocessing
    targets = resolve_targets(rows, r.explain.target, clf.classes)
    by_id = {rec.id: rec for rec in test}
    records = [by_id[row["id"]] for row in rows]
    explainers = validate_method_specs(r.explain.methods)
    ctx = context_for(clf, torch.Generator().manual_seed(r.seed + 1),
                      references=train_references(explainers, train or [], store, r.seed),
                      dataset_mean=train_mean_colour(train or [], store, r.seed))
    top_losses_method(explainers, r.explain.top_losses_method)  # a wrong label fails before any work
    fast, forwards = FastPath.from_config(r.explain), ForwardCache()
    stats, refused = {}, {}

    def compute(explainer, recs, tgts, maps):
        ctx.generator = torch.Generator().manual_seed(r.seed + 1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(r.seed + 1)
            return explain_records(
                model, explainer, recs, tgts, lambda batch: pre.normalize(store.batch(batch)),
                ctx, maps, r.explain.batch_size, r.explain.chunk_size, where.device,
                where.progress, fast=fast, forwards=forwards,
            )

    for explainer in explainers:
        where.log(f"explaining {len(records)} images with {explainer.label}")
        key = maps_key(upstream, r.explain.target, explainer, fast)
        try:
            if where.world.size > 1:
                res = explain_method_sharded(partial(compute, explainer), run.maps,
                                             explainer.label, key, records, targets, where.world)
                if res is None:  # not rank 0: rank 0 writes the tables and figures
                    continue
            else:
                keep_or_reset_maps(run.maps, explainer.label, key, [[rec.id for rec in records]])
                res = compute(explainer, records, targets, MapStore(run.maps, explainer.label))
        except MethodRefused as err:
            # The model is outside the method's rules: that method is left out, said so in the
            # summary and the report; the others' maps are not lost with it.
            refused[explainer.label] = str(err)
            where.log(f"warning: {explainer.label} is not explained: {err}")
            continue
        stored = MapStore(run.maps, explainer.label).load([row["id"] for row in rows])
        info = {
            "n_images": len(records),
            "seconds": round(res["seconds"], 3),
            "model_evals": res["model_evals"],
            "params": explainer.params(),
            "kind": explainer.kind,
            "precision": fast.precision,
            "fp32_recomputed": res["fp32_recomputed"],
            "refined": res["refined"],
        }
        if "delta" in stored:
            info["mean_abs_delta"] = float(stored["delta"].abs().mean())
        bad = int((~torch.isfinite(stored["maps"])).flatten(1).any(1).sum())
        zero = int((stored["maps"].flatten(1).abs().amax(1) == 0).sum())
        info["maps_non_finite"], info["maps_all_zero"] = bad, zero
        for key in ("path", "incremental_images", "work_per_window", "ranks"):  # occlusion; torchrun
            if key in res:
                info[key] = res[key]
        stats[explainer.label] = info
    if refused and len(refused) == len(explainers):
        raise XauditError("every method refused this model: " + "; ".join(refused.values()))
    if not where.world.is_main:
        return
    explained = [e for e in explainers if e.label not in refused]
    true_class = _true_class_maps(compute, explained, rows, records, r.explain.target,
                                  lambda e: maps_key(upstream, "true", e, fast), where)
    _explain_figures(run, r.report.max_figures, rows, records, explained, store, clf.classes)
    top = _top_losses_maps(compute, explained, r.explain, by_id, clf.classes, store,
                           lambda e: maps_key(upstream, "predicted", e, fast), where)
    run.update_summary(explanations=stats, explanations_refused=refused,
                       explain_target=r.explain.target, explanations_true_class=true_class,
                       explanations_top_losses=top)


def _true_class_maps(compute, explainers, rows, records, target: str, key_of,
                     where: Where) -> dict[str, int]:
    """Each method's map of the true class for the wrongly predicted images, beside the
    predicted class's (the explorer shows both): the predicted class's map alone cannot show
    what the model missed. Rank 0 only; returns {method: images}."""
    root = where.run.true_class_maps
    wrong = [i for i, row in enumerate(rows) if not row["correct"]]
    if target != "predicted" or not wrong or not explainers:
        shutil.rmtree(root, ignore_errors=True)  # none belong to this selection
        return {}
    recs = [records[i] for i in wrong]
    targets = [int(rows[i]["true_idx"]) for i in wrong]
    for explainer in explainers:
        # a line per method: a slow one (occlusion) would otherwise run minutes unannounced
        where.log(f"explaining the true class of {len(recs)} wrong predictions with {explainer.label}")
        keep_or_reset_maps(root, explainer.label, key_of(explainer), [[rec.id for rec in recs]])
        compute(explainer, recs, targets, MapStore(root, explainer.label))
    return {e.label: len(recs) for e in explainers}


def top_losses_method(explainers: list[Explainer], chosen: str | None) -> Explainer | None:
    """The method whose map the top-losses figure shows: ``chosen`` (a method label), else
    Grad-CAM when the recipe has it (one backward pass an image), else the first method."""
    by_label = {e.label: e for e in explainers}
    if chosen is not None:
        if chosen not in by_label:
            raise XauditError(f"explain.top_losses_method: {echo(chosen)} is not one of the "
                              f"recipe's methods. Allowed: {', '.join(by_label) or 'none'}")
        return by_label[chosen]
    return by_label.get("grad_cam") or (explainers[0] if explainers else None)


def _top_losses_maps(compute, explained, cfg, by_id, classes, store, key_of,
                     where: Where) -> dict:
    """The evaluate stage's highest-loss test images with one method's map of the predicted
    class (``top_losses_maps.png``), as fastai's ``plot_top_losses`` shows Grad-CAM: what did
    the model take for the wrong class? Maps of images the stage already explained for the
    predicted class are reused; the rest are stored under ``maps_top_losses/``."""
    from ..report import map_figures

    run = where.run
    figure, root = run.figure("top_losses_maps"), run.top_losses_maps
    table = run.table("top_losses")
    worst = [row for row in (read_csv(table) if table.is_file() else []) if row["id"] in by_id]
    chosen = cfg.top_losses_method  # checked against the recipe's methods before any work
    if chosen is not None and chosen not in {e.label for e in explained}:
        where.log(f"warning: no top-losses maps: {chosen} refused this model")
        explainer = None
    else:
        explainer = top_losses_method(explained, chosen)
    if not worst or explainer is None:
        figure.unlink(missing_ok=True)
        shutil.rmtree(root, ignore_errors=True)
        return {}
    ids, pred = [row["id"] for row in worst], {row["id"]: row["pred"] for row in worst}
    shown, extra = MapStore(run.maps, explainer.label), MapStore(root, explainer.label)
    reuse = shown.done_ids() if cfg.target == "predicted" else set()
    rest = [i for i in ids if i not in reuse]
    if rest:
        where.log(f"explaining the {len(rest)} highest-loss test images with {explainer.label}")
        keep_or_reset_maps(root, explainer.label, key_of(explainer), [rest])
        compute(explainer, [by_id[i] for i in rest], [classes.index(pred[i]) for i in rest], extra)
    else:
        shutil.rmtree(root, ignore_errors=True)
    maps = {}
    for source, part in ((shown, [i for i in ids if i in reuse]), (extra, rest)):
        if part:
            maps.update(zip(part, source.load(part)["maps"].numpy(), strict=True))
    images = [store.get(by_id[i]).image.permute(1, 2, 0).numpy() for i in ids]
    map_figures.top_losses_maps(images, [maps[i] for i in ids], worst, explainer.label, figure)
    return {"method": explainer.label, "n_images": len(ids), "reused": len(ids) - len(rest)}


def maps_key(upstream: str, target: str, explainer: Explainer, fast: FastPath) -> str:
    """What a method's stored maps depend on: the model and predictions (the stages up
    to evaluation), the method and its settings, the class explained and the precision."""
    return fingerprint({
        "upstream": upstream,
        "method": [type(explainer).__name__, explainer.label, explainer.params()],
        "target": target,
        "fast": [fast.precision, fast.tolerance, fast.adaptive_steps, fast.channels_last],
    })


def _explain_figures(run: RunDir, max_figures: int, rows, records, explainers, store,
                     classes: list[str]) -> None:
    from ..report import map_figures

    for f in run.figures.glob("*.png"):
        if f.name.startswith(("explain_", "grid_", "cvi_")):
            f.unlink()
    labels = [e.label for e in explainers]
    ids = [row["id"] for row in rows]
    stored = {lab: MapStore(run.maps, lab).load(ids) for lab in labels}
    maps = {lab: stored[lab]["maps"].numpy() for lab in labels}
    targets = stored[labels[0]]["targets"].tolist() if labels else []
    signed = {lab for lab in labels if (maps[lab] < 0).any()}  # the others are never negative
    images = [store.get(rec).image.permute(1, 2, 0).numpy() for rec in records]
    table = []
    for i, row in enumerate(rows):
        title = (f"{row['id']} | true: {row['true']} | pred: {row['pred']} ({row['prob']:.2f}) | "
                 f"explained: {classes[int(targets[i])]}")
        table.append({"id": row["id"], "true": row["true"], "pred": row["pred"], "prob": row["prob"],
                      "correct": row["correct"]})
        if i < max_figures:
            map_figures.explanation_panel(
                images[i], {lab: maps[lab][i] for lab in labels}, title,
                run.figure(f"explain_{i:03d}_{safe_name(row['id'], 60)}"), mode="both",
                signed=signed, wrong=not row["correct"],
            )
    write_csv(run.table("explained_images"), table)
    # Distinct stems: "rust spot" and "rust_spot" would otherwise share one file name.
    class_stem = dict(zip(classes, unique_names(list(classes), 40), strict=True))
    method_stem = dict(zip(labels, unique_names(labels, 40), strict=True))
    for lab in labels:
        for cls in sorted({row["true"] for row in rows}):
            idx = [i for i, row in enumerate(rows) if row["true"] == cls]
            map_figures.method_grid(
                [images[i] for i in idx], [maps[lab][i] for i in idx],
                [f"pred {rows[i]['pred']} ({rows[i]['prob']:.2f})" for i in idx],
                run.figure(f"grid_{method_stem[lab]}_class_{class_stem.get(cls) or safe_name(cls, 40)}"),
                mode="absolute",
            )
        right = [(images[i], maps[lab][i], f"{rows[i]['true']} → {rows[i]['pred']}") for i, row in enumerate(rows) if row["correct"]]
        wrong = [(images[i], maps[lab][i], f"{rows[i]['true']} → {rows[i]['pred']}") for i, row in enumerate(rows) if not row["correct"]]
        if right and wrong:
            map_figures.correct_vs_incorrect(right[:6], wrong[:6], lab, run.figure(f"cvi_{method_stem[lab]}"))
