"""The audit stage: gathers the pipeline's images, model and methods into an AuditInput."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .audit import AuditImages, AuditInput, run_audits
from .audit.checkpoint import STATE_DIR, clear_audit_state
from .data.base import Record
from .distributed import claim, clear_claims, step
from .explain import validate_method_specs
from .explain.engine import resolve_targets
from .run import fingerprint

if TYPE_CHECKING:
    from .pipeline import Pipeline


def _pool(rows: list[dict], n: int, seed: int) -> list[dict]:
    """Up to ``n`` correct and ``n`` incorrect predictions, round-robin over true classes."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(rows), generator=gen).tolist()
    shuffled = [rows[i] for i in order]
    picked: list[dict] = []
    for want_correct in (1, 0):
        by_class: dict[str, list[dict]] = {}
        for r in shuffled:
            if int(r["correct"]) == want_correct:
                by_class.setdefault(r["true"], []).append(r)
        taken, depth = 0, 0
        while taken < n and any(depth < len(v) for v in by_class.values()):
            for cls in sorted(by_class):
                if depth < len(by_class[cls]) and taken < n:
                    picked.append(by_class[cls][depth])
                    taken += 1
            depth += 1
    return picked


def _images(pipe: Pipeline, model: nn.Module, records: list[Record], targets: list[int] | None) -> AuditImages:
    store, pre = pipe.store(), pipe.preprocessing()
    raw = store.batch(records)
    x = pre.normalize(raw)
    with torch.no_grad():
        preds = torch.cat([model(x[i : i + 32].to(pipe.device)).argmax(1).cpu() for i in range(0, len(x), 32)])
    labels = torch.tensor([r.label for r in records])
    return AuditImages(
        x=x,
        pixels=raw.float() / 255.0,
        labels=labels,
        preds=preds,
        targets=torch.tensor(targets) if targets is not None else preds.clone(),
        ids=[r.id for r in records],
        masks=store.masks(records, "mask", partial=True),
        mask_missing=store.mask_missing(records, "mask"),
        object_masks=store.masks(records, "object_mask"),
    )


def _stratified_records(records: list[Record], n: int, seed: int) -> list[Record]:
    gen = torch.Generator().manual_seed(seed)
    shuffled = [records[i] for i in torch.randperm(len(records), generator=gen).tolist()]
    by_class: dict[int, list[Record]] = {}
    for r in shuffled:
        by_class.setdefault(r.label, []).append(r)
    out: list[Record] = []
    depth = 0
    while len(out) < n and any(depth < len(v) for v in by_class.values()):
        for label in sorted(by_class):
            if depth < len(by_class[label]) and len(out) < n:
                out.append(by_class[label][depth])
        depth += 1
    return out


def make_retrain_shuffled(pipe: Pipeline):
    """seed -> the recipe's model retrained on training labels shuffled with that seed."""
    from . import train as training
    from .models import build_model, configure_trainable

    r = pipe.recipe
    if r.train.skip:
        return None

    def retrain(seed: int) -> nn.Module:
        bundle, store, pre = pipe.dataset(), pipe.store(), pipe.preprocessing()
        gen = torch.Generator().manual_seed(seed)
        train_records = bundle.splits["train"]
        perm = torch.randperm(len(train_records), generator=gen)
        shuffled_labels = torch.tensor([train_records[int(i)].label for i in perm])
        built = build_model(r.model.name, len(bundle.classes), r.model.weights, seed=seed)
        trained = configure_trainable(built, r.model.mode, r.model.n_blocks)
        if r.model.mode == "frozen":
            # Features from channels-last weights, as training computes them, so a cache built
            # here equals the one training left behind when both ran in one process.
            built.model.to(pipe.device).to(memory_format=torch.channels_last)
            if pipe._feature_cache is None:
                pipe._feature_cache = training.build_feature_cache(
                    built, store, train_records, bundle.splits["val"], pre, r.train, pipe.device,
                    torch.Generator().manual_seed(r.seed),
                )
            cache = pipe._feature_cache
            head = built.model.get_submodule(built.head)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                training.fit_head(head, cache, r.train, gen, labels=shuffled_labels)
            return built.model.eval().to(pipe.device)  # channels-last, as the audits run
        relabelled = [copy.copy(rec) for rec in train_records]
        for rec, lab in zip(relabelled, shuffled_labels.tolist(), strict=True):
            rec.label = lab
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            training.fit_full(built, trained, store, relabelled, bundle.splits["val"], pre, r.train, pipe.device, gen)
        return built.model.eval()

    return retrain


def run_audit_stage(pipe: Pipeline) -> dict:
    r = pipe.recipe
    bundle, model = pipe.dataset(), pipe.model()
    # Audits run with channels-last weights (as the explain stage does, ~1.2-1.3x faster than
    # NCHW on CPU here), set here so that a fresh, resumed or separate `xaudit audit` run
    # computes the same numbers to the last bit.
    model.to(memory_format=torch.channels_last)
    specs = list(r.audit.audits)
    n = max([r.audit.n_images] + [int(s.get("n_images") or 0) for s in specs if isinstance(s, dict)])
    rows = pipe.explained_rows_all()
    pool = _pool(rows, n, r.seed + 2)
    by_id = {rec.id: rec for rec in bundle.splits["test"]}
    test_records = [by_id[row["id"]] for row in pool]
    targets = resolve_targets(pool, r.explain.target, bundle.classes)
    splits = {"test": _images(pipe, model, test_records, targets)}
    if bundle.splits["train"]:
        train_records = _stratified_records(bundle.splits["train"], n, r.seed + 3)
        images = _images(pipe, model, train_records, None)
        if r.explain.target == "true":
            images.targets = images.labels.clone()
        splits["train"] = images
    classes = bundle.classes
    inp = AuditInput(
        model=model,
        explainers=validate_method_specs(r.explain.methods),
        ctx=pipe.explain_context(model, seed_offset=4),
        classes=classes,
        splits=splits,
        generator=torch.Generator().manual_seed(r.seed + 5),
        retrain_shuffled=make_retrain_shuffled(pipe),
        blocks=r.audit.blocks,
        regions=r.audit.regions,
    )
    pipe.log(f"auditing {len(inp.explainers)} methods on {len(test_records)} test images")
    world, state = pipe.world, _state_key(pipe)

    def audits(claim=None) -> dict:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(r.seed + 6)
            return run_audits(inp, specs, pipe.run, r.audit.n_images, state=state, log=pipe.log, claim=claim)

    if world.size > 1:
        # Every rank claims whole audits and saves them; rank 0 then reloads them all.
        state_dir = Path(pipe.run.root) / STATE_DIR
        step(world, lambda: clear_claims(state_dir), main_only=True)
        step(world, lambda: audits(claim=lambda name: claim(state_dir, name)))
        if not world.is_main:
            return {}
    summary = audits()
    pipe.run.update_summary(audits=summary)
    clear_audit_state(pipe.run)
    return summary


def _state_key(pipe: Pipeline) -> str:
    """What saved audit results depend on: the recipe up to the audit stage, the trained
    model and the predictions it made (a retrained model invalidates them)."""
    files = [pipe.run.model_dir / "model.safetensors", pipe.run.table("predictions")]
    return fingerprint({"stage": pipe.fingerprints["audit"], "files": [_digest(f) for f in files]})


def _digest(path: Path) -> str:
    if not path.is_file():
        return ""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
