"""The prefix of incremental occlusion: a model's leading chain of spatially local stages.

The candidates are the model's ``named_children()`` (``nn.Sequential`` expanded) in call
order, kept as long as each is called once on the previous one's output. Each stage's
geometry (which input rows and columns every output reads) is probed by propagating NaN
rows/columns, so it holds whatever the weights.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from weakref import WeakKeyDictionary

import torch
from torch import nn

Chain = list[tuple[str, nn.Module]]



def stage_candidates(model: nn.Module) -> Chain:
    """The model's children in definition order, ``nn.Sequential`` containers expanded."""
    out: Chain = []

    def walk(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, nn.Sequential) and len(child) > 0:
                walk(f"{prefix}{name}.", child)
            else:
                out.append((f"{prefix}{name}", child))

    walk("", model)
    return out


@dataclass
class Axis:
    """One stage's dependence along one axis: output o reads inputs lo[o]..hi[o]."""

    n_in: int
    n_out: int
    stride: int
    lo: list[int]
    hi: list[int]

    @property
    def pointwise(self) -> bool:
        return self.n_in == self.n_out and self.lo == self.hi == list(range(self.n_in))


@dataclass
class Stage:
    name: str
    module: nn.Module
    rows: Axis
    cols: Axis
    macs: int  # multiply-accumulates of its convolutions/linears, one full image


@dataclass
class Prefix:
    stages: list[Stage]
    total_macs: int  # the whole model, one image
    reason: str  # why the chain stops where it does


def _macs(module: nn.Module, out: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        return module.weight.numel() * out.shape[-1] * out.shape[-2]
    if isinstance(module, nn.Linear):
        return module.weight.numel() * (out.numel() // out.shape[0] // out.shape[-1])
    return 0


def trace_chain(model: nn.Module, x1: torch.Tensor) -> tuple[Chain, list[torch.Size], list[int], int, str]:
    """Stages called in a chain from the input, their input shapes and MACs; total MACs."""
    cands = stage_candidates(model)
    calls: list[tuple[int, torch.Tensor, object]] = []
    counts: Counter[int] = Counter()
    current: list[int] = []
    macs: Counter[int] = Counter()
    handles = []

    def leave(i):
        def hook(_m, args, out):
            current.pop()
            counts[i] += 1
            calls.append((i, args[0] if args else None, out))
        return hook

    def count_macs(m, _a, out):
        if isinstance(out, torch.Tensor) and out.dim() > 1:
            macs[current[-1] if current else -1] += _macs(m, out)

    for mod in model.modules():  # before the stage hooks: a stage may itself be a conv
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            handles.append(mod.register_forward_hook(count_macs))
    for i, (_name, mod) in enumerate(cands):
        handles += [mod.register_forward_pre_hook(lambda _m, _a, i=i: current.append(i)),
                    mod.register_forward_hook(leave(i))]
    try:
        with torch.inference_mode(), torch.autocast(x1.device.type, enabled=False):
            model(x1)
    finally:
        for h in handles:
            h.remove()
    chain: Chain = []
    shapes: list[torch.Size] = []
    reason = "the whole model is a chain of stages"
    prev: object = None
    for k, (i, inp, out) in enumerate(calls):
        name, mod = cands[i]
        first_ok = k == 0 and isinstance(inp, torch.Tensor) and inp.shape == x1.shape and torch.equal(inp, x1)
        if not (first_ok or (k > 0 and inp is prev)):
            reason = f"{name} does not take the previous stage's output (or the model input)"
            break
        if counts[i] != 1 or not (isinstance(out, torch.Tensor) and out.dim() == 4):
            reason = f"{name} is called {counts[i]} times or does not return an N×C×H×W tensor"
            break
        chain.append((name, mod))
        shapes.append(inp.shape[1:])
        prev = out
    return chain, shapes, [macs[i] for i, _, _ in calls[: len(chain)]], sum(macs.values()), reason


def probe_axis(module: nn.Module, shape: torch.Size, dim: int, device: torch.device) -> Axis | None:
    """Which outputs along ``dim`` (2 rows, 3 columns) each input line reaches (NaN propagation)."""
    c, h, w = shape
    n = (h, w)[dim - 2]
    thin = min((w, h)[dim - 2], 32)
    probe = torch.zeros((n, c, n, thin) if dim == 2 else (n, c, thin, n), device=device)
    idx = torch.arange(n)
    if dim == 2:
        probe[idx, :, idx, :] = float("nan")
    else:
        probe[idx, :, :, idx] = float("nan")
    with torch.inference_mode(), torch.autocast("cpu", enabled=False):
        out = module(probe)
    if not isinstance(out, torch.Tensor) or out.dim() != 4:
        return None
    hit = out.isnan().any(dim=(1, 5 - dim)).cpu()  # input line × output line
    if not bool(hit.any(0).all()):
        return None
    lo = [int(hit[:, o].nonzero()[0]) for o in range(hit.shape[1])]
    hi = [int(hit[:, o].nonzero()[-1]) for o in range(hit.shape[1])]
    inner = [o for o in range(len(lo)) if lo[o] > 0 and hi[o] < n - 1]
    if len(inner) < 2:
        return None  # global (or too small to tell): no local stage
    steps = {lo[o + 1] - lo[o] for o in inner[:-1] if o + 1 in inner}
    if len(steps) != 1 or min(steps) < 1:
        return None
    return Axis(n, len(lo), steps.pop(), lo, hi)


_PROBES: WeakKeyDictionary = WeakKeyDictionary()


def find_prefix(model: nn.Module, x1: torch.Tensor, owner: nn.Module | None = None) -> Prefix:
    """The model's leading chain of local stages for inputs shaped like ``x1``.

    Cached on ``owner`` (default ``model``; a folded copy passes its original) by input shape
    and the stages' names and types; the cached geometry is bound to ``model``'s modules.
    """
    cands = stage_candidates(model)
    key = (tuple(x1.shape[1:]), tuple((n, type(m).__name__) for n, m in cands))
    cached = _PROBES.setdefault(owner if owner is not None else model, {})
    if key not in cached:
        chain, shapes, macs, total, reason = trace_chain(model, x1[:1])
        stages: list[Stage] = []
        for (name, mod), shape, mac in zip(chain, shapes, macs, strict=True):
            try:
                rows, cols = probe_axis(mod, shape, 2, x1.device), probe_axis(mod, shape, 3, x1.device)
            except (RuntimeError, ValueError, IndexError) as err:
                rows = cols = None
                reason = f"{name} cannot be probed ({type(err).__name__})"
            if rows is None or cols is None:
                reason = reason if "probed" in reason else f"{name} is not spatially local"
                break
            stages.append(Stage(name, mod, rows, cols, mac))
        cached[key] = Prefix(stages, total, reason)
    found, mods = cached[key], dict(cands)
    return Prefix([replace(s, module=mods[s.name]) for s in found.stages], found.total_macs, found.reason)
