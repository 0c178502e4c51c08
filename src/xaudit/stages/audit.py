"""The audit stage: the pipeline's images, classifier and methods into one AuditInput."""

from __future__ import annotations

import copy
import shlex
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..audit import AuditImages, AuditInput, run_audits
from ..audit.checkpoint import STATE_DIR, clear_audit_state
from ..audit.helpers import round_robin
from ..audit.inputs import audit_images
from ..audit.types import Maps
from ..data.base import DatasetBundle, Record
from ..data.transforms import DecodedStore
from ..distributed import claim, clear_claims, step
from ..explain import validate_method_specs
from ..explain.base import context_for
from ..explain.engine import MapStore, resolve_targets
from ..explain.fastpath import FastPath
from ..models import Classifier
from ..run import file_sha256, fingerprint
from .explain import Where
from .references import train_mean_colour, train_references


def _pool(rows: list[dict], n: int, seed: int) -> list[dict]:
    """Up to ``n`` correct and ``n`` incorrect predictions, round-robin over true classes.

    Drawn from the predictions alone, not from the explained images: the audit's numbers
    must not depend on ``explain.select`` (which re-runs only the explain stage).
    """
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(rows), generator=gen).tolist()
    shuffled = [rows[i] for i in order]
    picked: list[dict] = []
    for want_correct in (1, 0):
        group = [r for r in shuffled if int(r["correct"]) == want_correct]
        picked += [group[i] for i in round_robin([r["true"] for r in group], n)]
    return picked


def _images(clf: Classifier, store: DecodedStore, records: list[Record],
            targets: list[int] | None) -> AuditImages:
    return audit_images(
        clf, store.batch(records), torch.tensor([r.label for r in records]),
        torch.tensor(targets) if targets is not None else None, [r.id for r in records],
        store.masks(records, "mask", partial=True), store.masks(records, "object_mask"),
        mask_missing=store.mask_missing(records, "mask"),
    )


def _stratified_records(records: list[Record], n: int, seed: int) -> list[Record]:
    gen = torch.Generator().manual_seed(seed)
    shuffled = [records[i] for i in torch.randperm(len(records), generator=gen).tolist()]
    return [shuffled[i] for i in round_robin([r.label for r in shuffled], n)]


def make_retrain_shuffled(recipe, bundle: DatasetBundle, store: DecodedStore,
                          pre, device: torch.device, cache_box: dict,
                          trust_code: bool | str = False) -> Callable[[int], nn.Module] | None:
    """seed -> the recipe's model retrained on training labels shuffled with that seed.

    ``cache_box["cache"]``: the frozen-mode feature cache, shared with training when both ran
    in this process (built here otherwise, and kept there for the next retrain).
    ``trust_code``: as for ``build_classifier``.
    """
    from .. import train as training
    from ..models import configure_trainable
    from ..models.sources import build_classifier

    r = recipe
    if r.train.skip:
        return None

    def retrain(seed: int) -> nn.Module:
        gen = torch.Generator().manual_seed(seed)
        train_records = bundle.splits["train"]
        perm = torch.randperm(len(train_records), generator=gen)
        shuffled_labels = torch.tensor([train_records[int(i)].label for i in perm])
        clf = build_classifier(r.model, bundle.classes, skip=False, seed=seed,
                               trust_code=trust_code)
        trained = configure_trainable(clf, r.model.mode, r.model.n_blocks)
        if r.model.mode == "frozen":
            # Features from channels-last weights, as training computes them, so a cache built
            # here equals the one training left behind when both ran in one process.
            clf.module.to(device).to(memory_format=torch.channels_last)
            if cache_box.get("cache") is None:
                cache_box["cache"] = training.build_feature_cache(
                    clf, store, train_records, bundle.splits["val"], pre, r.train, device,
                    torch.Generator().manual_seed(r.seed),
                )
            head = clf.module.get_submodule(clf.head)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                training.fit_head(head, cache_box["cache"], r.train, gen, labels=shuffled_labels)
            return clf.module.eval().to(device)  # channels-last, as the audits run
        relabelled = [copy.copy(rec) for rec in train_records]
        for rec, lab in zip(relabelled, shuffled_labels.tolist(), strict=True):
            rec.label = lab
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            training.fit_full(clf, trained, store, relabelled, bundle.splits["val"], pre, r.train, device, gen)
        return clf.module.eval()

    return retrain


def audit_stage(clf: Classifier, bundle: DatasetBundle, store: DecodedStore, rows: list[dict],
                recipe, state: str, where: Where,
                retrain: Callable[[int], nn.Module] | None, upstream: str = "") -> dict:
    """Every audit of ``recipe.audit`` on a pool drawn from the predictions ``rows``;
    ``state``: the key saved audit results are kept under (resume); ``upstream``: the key
    part of the explain stage's stored maps, which the audits reuse where they match."""
    r = recipe
    model = clf.module
    # Audits run with channels-last weights (as the explain stage does, ~1.2-1.3x faster than
    # NCHW on CPU here), set here so that a fresh, resumed or separate `xaudit audit` run
    # computes the same numbers to the last bit.
    model.to(memory_format=torch.channels_last)
    specs = list(r.audit.audits)
    n = max([r.audit.n_images] + [int(s.get("n_images") or 0) for s in specs if isinstance(s, dict)])
    fast = FastPath.from_config(r.explain)
    explainers = validate_method_specs(r.explain.methods)
    stored = _stored_ids(where.run.maps, explainers, upstream, r.explain.target, fast)
    # One pool per round, each drawn from the predictions left by the ones before: round k's
    # images never depend on how many rounds follow (a run continued later audits the same).
    pools, left = [], list(rows)
    for _ in range(r.audit.max_rounds):
        block = _pool(left, n, r.seed + 2)
        if not block:
            break
        pools.append([row["id"] for row in block])
        taken = set(pools[-1])
        left = [row for row in left if row["id"] not in taken]
    pool = [row for row in rows if row["id"] in {i for p in pools for i in p}]
    order = {i: k for k, i in enumerate(i for p in pools for i in p)}
    pool.sort(key=lambda row: order[row["id"]])
    by_id = {rec.id: rec for rec in bundle.splits["test"]}
    test_records = [by_id[row["id"]] for row in pool]
    targets = resolve_targets(pool, r.explain.target, clf.classes)
    splits = {"test": _images(clf, store, test_records, targets)}
    if bundle.splits["train"]:
        train_records = _stratified_records(bundle.splits["train"], n, r.seed + 3)
        images = _images(clf, store, train_records, None)
        if r.explain.target == "true":
            images.targets = images.labels.clone()
        splits["train"] = images
    inp = AuditInput(
        model=model,
        explainers=explainers,
        # the explain stage's seed: a stochastic method draws the same samples per image as
        # in the stored maps, so a recomputed map differs from them only by the model
        ctx=context_for(clf, torch.Generator().manual_seed(r.seed + 1),
                        references=train_references(explainers, bundle.splits["train"],
                                                    store, r.seed),
                        dataset_mean=train_mean_colour(bundle.splits["train"], store, r.seed)),
        classes=clf.classes,
        splits=splits,
        generator=torch.Generator().manual_seed(r.seed + 5),
        retrain_shuffled=retrain,
        blocks=r.audit.blocks or clf.anatomy.randomization_blocks,
        regions=r.audit.regions,
        fast=fast,
    )
    reused_keys = _reuse_stored_maps(inp, where.run.maps, stored)
    inp.map_costs = _explain_costs(where.run.summary().get("explanations") or {}, stored)
    reused = len(reused_keys)
    where.log(f"auditing {len(inp.explainers)} methods on {len(pools[0]) if pools else 0} test images"
              + (f" (up to {len(pools)} rounds from a pool of {len(test_records)})"
                 if len(pools) > 1 else "")
              + (f" ({reused} maps of the explain stage at hand)" if reused else ""))
    world, run = where.world, where.run

    def audits(claim=None) -> dict:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(r.seed + 6)
            return run_audits(inp, specs, run, r.audit.n_images, state=state, log=where.log,
                              claim=claim, preset=r.audit.preset, controls=r.audit.controls,
                              alpha=r.audit.alpha, min_effect=r.audit.min_effect,
                              rounds=r.audit.max_rounds, pools=pools,
                              budget_seconds=(r.audit.budget_minutes * 60
                                              if r.audit.budget_minutes else None),
                              continue_hint=lambda k: (f"xaudit audit {shlex.quote(str(run.root))} "
                                                       f"--set audit.max_rounds={k}"))

    if world.size > 1:
        # Every rank claims whole audits and saves them; rank 0 then reloads them all.
        state_dir = Path(run.root) / STATE_DIR
        step(world, lambda: clear_claims(state_dir), main_only=True)
        step(world, lambda: audits(claim=lambda name: claim(state_dir, name)))
        if not world.is_main:
            return {}
    summary = audits()
    # the stored maps of the images the rounds did audit (later pools may go unused)
    audited = {i for look in (summary.get("rounds") or {}).get("looks") or [] for i in look["ids"]}
    summary["reused_maps"] = sum(i in audited for _, i in reused_keys)
    _keep_audited_maps(inp, run, [i for i in inp.splits["test"].ids if i in audited])
    run.update_summary(audits=summary)
    if not summary.get("undecided"):
        # kept while a verdict is open: `xaudit audit` with more rounds continues from them
        clear_audit_state(run)
    return summary


def _keep_audited_maps(inp: AuditInput, run, audited: list[str]) -> None:
    """Store the trained model's maps of the audited images the explain stage did not keep,
    so that each verdict's images can be looked at in the report. Maps the audits did not
    compute in this process (reloaded from a checkpoint) are not kept: the report says so."""
    test = inp.splits["test"]
    position = {image_id: k for k, image_id in enumerate(test.ids)}
    for e in inp.explainers:
        store = MapStore(run.audited_maps, e.label)
        store.reset()
        explained = MapStore(run.maps, e.label).done_ids()
        ids = [i for i in audited if i not in explained and ("maps", e.label, "test", i) in inp.cache]
        if ids:
            maps = torch.cat([inp.cache[("maps", e.label, "test", i)].attributions for i in ids])
            targets = test.targets[[position[i] for i in ids]]
            store.write_chunk(ids, maps, targets, None)


def _stored_ids(root: Path, explainers, upstream: str, target: str, fast: FastPath) -> dict[str, set[str]]:
    """``{label: ids}`` of the explain stage's stored maps computed with exactly this
    setting (method, model, predictions, target, precision); other stored maps are ignored."""
    from ..distributed import stored_maps_key
    from .explain import maps_key

    if not upstream:
        return {}
    return {e.label: MapStore(root, e.label).done_ids() for e in explainers
            if stored_maps_key(root, e.label) == maps_key(upstream, target, e, fast)}


def _reuse_stored_maps(inp: AuditInput, root: Path,
                       stored: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Put the stored maps of the pool's test images into the audits' map cache (cost 0:
    computed once, by the explain stage); returns the (method, image) of each."""
    test = inp.splits["test"]
    pos = {image_id: k for k, image_id in enumerate(test.ids)}
    reused: list[tuple[str, str]] = []
    for e in inp.explainers:
        ids = [i for i in test.ids if i in stored.get(e.label, ())]
        if not ids:
            continue
        data = MapStore(root, e.label).load(ids)
        for j, image_id in enumerate(ids):
            if int(data["targets"][j]) != int(test.targets[pos[image_id]]):
                continue  # another class explained: not the map this audit asks for
            inp.cache[("maps", e.label, "test", image_id)] = Maps(data["maps"][j][None, None], 0.0, 0.0)
            reused.append((e.label, image_id))
    return reused


def _explain_costs(explanations: dict, stored: dict[str, set[str]]) -> dict[str, tuple[float, float]]:
    """``{label: (model evaluations, seconds)}`` per map as the explain stage measured them,
    for the methods whose stored maps the audits reuse (the plan prices those at this)."""
    out = {}
    for label in stored:
        info = explanations.get(label) or {}
        n = info.get("n_images") or 0
        if n and isinstance(info.get("model_evals"), (int, float)) and isinstance(info.get("seconds"), (int, float)):
            out[label] = (info["model_evals"] / n, info["seconds"] / n)
    return out


def state_key(audit_fp: str, run) -> str:
    """What saved audit results depend on: the recipe up to the audit stage (``audit_fp``:
    without the number of rounds and the budget, which only say when to stop), the trained
    model and the predictions it made (a retrained model invalidates them)."""
    files = [run.model_dir / "model.safetensors", run.table("predictions")]
    return fingerprint({"stage": audit_fp, "files": [file_sha256(f) if f.is_file() else "" for f in files]})
