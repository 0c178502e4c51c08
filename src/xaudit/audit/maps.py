"""Maps for the audits: an explainer on a (possibly randomized) copy of the model, counted."""

from __future__ import annotations

import dataclasses
import time

import torch
from torch import Tensor, nn

from ..explain.base import ExplainContext, Explainer
from ..explain.counting import count_model_evals
from .types import AuditImages, AuditInput, Maps


def ctx_for(model: nn.Module, reference: nn.Module, ctx: ExplainContext) -> ExplainContext:
    """``ctx`` with its layers pointing into ``model`` (a copy of ``reference``), by name."""
    if model is reference:
        return ctx
    names = {id(m): n for n, m in reference.named_modules()}
    modules = dict(model.named_modules())

    def remap(layer: nn.Module | None) -> nn.Module | None:
        if layer is None:
            return None
        name = names.get(id(layer))
        return modules.get(name, layer) if name is not None else layer

    return dataclasses.replace(
        ctx,
        target_layer=remap(ctx.target_layer),
        layers={k: remap(v) for k, v in ctx.layers.items()},
    )


def compute_maps(
    explainer: Explainer,
    model: nn.Module,
    x: Tensor,
    targets: Tensor,
    ctx: ExplainContext,
    batch_size: int = 2,
    with_delta: bool = False,
    reference: nn.Module | None = None,
) -> Maps:
    """Run ``explainer`` in batches; record seconds and model evaluations.

    Small batches by default: a path method expands each image n_steps times, and the
    audits re-run methods on CPU next to other work (2 images × 32 steps at 224 px ≈ 2 GB).

    ``reference``: the model ``ctx``'s layers belong to, when ``model`` is a copy of it.
    """
    ctx = ctx_for(model, reference if reference is not None else model, ctx)
    parts, deltas = [], []
    start = time.perf_counter()
    with count_model_evals(model) as count:
        for i in range(0, len(x), batch_size):
            xb, tb = x[i : i + batch_size], targets[i : i + batch_size]
            if with_delta:
                attr, delta = explainer.attribute_with_delta(model, xb, tb, ctx)
                deltas.append(None if delta is None else delta.detach().reshape(-1).cpu())
            else:
                attr = explainer.attribute(model, xb, tb, ctx)
            parts.append(attr.detach().float().cpu())
    seconds = time.perf_counter() - start
    delta_t = torch.cat(deltas) if deltas and all(d is not None for d in deltas) else None
    return Maps(torch.cat(parts), seconds, count.n, delta_t)


def trained_maps(inp: AuditInput, explainer: Explainer, split: str, images: AuditImages) -> Maps:
    """Maps of the trained model, cached per (method, split, image): every audit reads the one
    pool's maps, whatever subset of it it audits, and each map is computed once."""
    keys = [("maps", explainer.label, split, image_id) for image_id in images.ids]
    missing = [n for n, key in enumerate(keys) if key not in inp.cache]
    if missing:
        sub = images.subset(missing)
        m = compute_maps(explainer, inp.model, sub.x, sub.targets, inp.ctx)
        share = 1 / len(missing)  # cost per image, so that any subset reports its own share
        for j, n in enumerate(missing):
            inp.cache[keys[n]] = Maps(m.attributions[j : j + 1], m.seconds * share,
                                      m.model_evals * share)
    parts = [inp.cache[key] for key in keys]
    return Maps(torch.cat([p.attributions for p in parts]), sum(p.seconds for p in parts),
                sum(p.model_evals for p in parts))


@torch.no_grad()
def class_scores(
    model: nn.Module, x: Tensor, targets: Tensor, batch_size: int = 32, kind: str = "prob"
) -> Tensor:
    """Softmax probability (or logit) of ``targets`` for each image, batched."""
    out = []
    for i in range(0, len(x), batch_size):
        logits = model(x[i : i + batch_size]).float()
        scores = logits.softmax(dim=1) if kind == "prob" else logits
        out.append(scores.gather(1, targets[i : i + batch_size].view(-1, 1)).squeeze(1).cpu())
    return torch.cat(out) if out else torch.zeros(0)
