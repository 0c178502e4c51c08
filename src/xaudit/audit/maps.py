"""Maps for the audits: an explainer on a (possibly randomized) copy of the model, counted."""

from __future__ import annotations

import dataclasses
import time

import torch
from torch import Tensor, nn

from ..explain.base import ExplainContext, Explainer
from ..explain.engine import Runner, pass_size_for
from ..explain.fastpath import FastPath, ForwardCache, activation_bytes
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
    fast: FastPath | None = None,
) -> Maps:
    """Run ``explainer`` through the explain engine (``fast``: its precision, adaptive steps
    and memory budget) in batches of ``batch_size`` images; record seconds and evaluations.

    The maps are summed over channels, as the explain stage stores them and the report
    shows them. Small batches by default: the audits run next to other work on CPU.

    ``reference``: the model ``ctx``'s layers belong to, when ``model`` is a copy of it.
    """
    fast = fast or FastPath()
    ctx = ctx_for(model, reference if reference is not None else model, ctx)
    runner = Runner(model, explainer, ctx, fast, ForwardCache(),
                    pass_size_for(model, explainer, x[:1], fast, x.device, _per_sample(model, x)))
    parts, deltas = [], []
    start = time.perf_counter()
    for i in range(0, len(x), batch_size):
        xb, tb = x[i : i + batch_size], targets[i : i + batch_size]
        attr, delta = runner.run(xb, tb, [str(n) for n in range(i, i + len(xb))])
        parts.append(attr.detach().float().sum(dim=1, keepdim=True).cpu())
        deltas.append(None if delta is None else delta.detach().reshape(-1).cpu())
    seconds = time.perf_counter() - start
    delta_t = (torch.cat(deltas) if with_delta and deltas and all(d is not None for d in deltas)
               else None)
    return Maps(torch.cat(parts), seconds, runner.stats.model_evals, delta_t)


_ACTIVATIONS: dict[tuple, int] = {}


def _per_sample(model: nn.Module, x: Tensor) -> int:
    """Activation bytes of one sample, measured once per architecture and input shape (the
    randomized copies of a model share them)."""
    key = (type(model).__qualname__, sum(p.numel() for p in model.parameters()),
           tuple(x.shape[1:]), x.dtype)
    if key not in _ACTIVATIONS:
        _ACTIVATIONS[key] = activation_bytes(model, x[:1])
    return _ACTIVATIONS[key]


def trained_maps(inp: AuditInput, explainer: Explainer, split: str, images: AuditImages,
                 whole: bool = True) -> Maps:
    """Maps of the trained model, cached per (method, split, image): every audit reads the one
    pool's maps, whatever subset of it it audits, and each map is computed once.

    ``whole``: the first request computes every missing map of the split's pool, in one run,
    so that the batches (and the evaluations they cost) do not depend on which audit asked
    first, nor on which audits a resumed run or another rank still had to run.
    """
    keys = [("maps", explainer.label, split, image_id) for image_id in images.ids]
    if any(key not in inp.cache for key in keys):
        pool = inp.splits.get(split)
        source = pool if whole and pool is not None and set(images.ids) <= set(pool.ids) else images
        source_keys = [("maps", explainer.label, split, image_id) for image_id in source.ids]
        missing = [n for n, key in enumerate(source_keys) if key not in inp.cache]
        sub = source.subset(missing)
        m = compute_maps(explainer, inp.model, sub.x, sub.targets, inp.ctx, fast=inp.fast)
        share = 1 / len(missing)  # cost per image, so that any subset reports its own share
        for j, n in enumerate(missing):
            inp.cache[source_keys[n]] = Maps(m.attributions[j : j + 1], m.seconds * share,
                                             m.model_evals * share)
    parts = [inp.cache[key] for key in keys]
    return Maps(torch.cat([p.attributions for p in parts]), sum(p.seconds for p in parts),
                sum(p.model_evals for p in parts))


class CountedExplain:
    """``compute_maps`` as an ``(x, targets) -> maps`` callable that adds up its seconds and
    model evaluations; ``model``: a copy of the trained model (randomized) instead of it."""

    def __init__(self, explainer: Explainer, inp: AuditInput, batch_size: int,
                 model: nn.Module | None = None):
        self.explainer, self.inp, self.batch_size = explainer, inp, batch_size
        self.model = inp.model if model is None else model
        self.seconds, self.model_evals = 0.0, 0

    def __call__(self, x: Tensor, targets: Tensor) -> Tensor:
        m = compute_maps(self.explainer, self.model, x, targets, self.inp.ctx, self.batch_size,
                         reference=self.inp.model, fast=self.inp.fast)
        self.seconds += m.seconds
        self.model_evals += m.model_evals
        return m.attributions


def over_budget(trained: Maps, n_images: int, max_method_evals: int) -> str | None:
    """Why a method is left out of a costly audit (stated in its summary, never silent)."""
    per_image = trained.model_evals / n_images
    if per_image <= max_method_evals:
        return None
    return (f"costs {per_image:.0f} model evaluations per image, above max_method_evals="
            f"{max_method_evals}; raise it to include this method")


def affordable_evals(per_map: dict[str, float], max_method_evals: int) -> float:
    """For a cost plan: the evaluations per image of the methods ``over_budget`` keeps."""
    return sum(v for v in per_map.values() if v <= max_method_evals)


def left_out_text(skipped: dict[str, str]) -> str:
    """The sentence that opens an audit's text when ``over_budget`` left methods out."""
    return f"Not run (too costly, see max_method_evals): {', '.join(skipped)}. " if skipped else ""


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
