"""Incremental occlusion: recompute only what a window changes (Krypton, Nakandala et al. 2019).

An occluding window changes only a local region of the early layers' activations. The
network's leading chain of local stages (the *prefix*) runs once on the clean image; for
each window every prefix stage runs only on a crop around the changed region (aligned to
the stage's stride, wide enough for its receptive field), and the crop's valid interior
replaces that region of the cached activation; the rest of the network (the *suffix*, the
model's own ``forward`` with the prefix replaced) runs on the patched activations, batched
over windows. In fp32 this equals the full forward up to float reassociation.

The prefix and each stage's geometry come from ``prefix.py``; the whole is checked on the
actual input against full forwards before use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .fastpath import with_replaced
from .prefix import Axis, Stage, find_prefix

# ---------------------------------------------------------------- window geometry


@dataclass
class Step:
    """One stage along one axis, for every window position."""

    crop: list[int] | None  # crop start per position (None: pointwise, the box itself)
    crop_len: int
    box_in: list[int]  # the incoming box's offset inside the crop
    out_at: list[int]  # the outgoing box's offset in the crop's output
    box: list[int]  # outgoing box start, full coordinates
    box_len: int


def window_starts(n: int, window: int, stride: int) -> list[int]:
    """Captum's window positions: 0, stride, ... up to ceil((n - window) / stride) shifts."""
    return [k * stride for k in range(math.ceil((n - window) / stride) + 1)]


def axis_steps(axes: list[Axis], starts: list[int], window: int) -> list[Step]:
    """Boxes (changed regions, fixed size, moved inward at the borders) and crops per stage."""
    n = axes[0].n_in if axes else 0
    box, box_len = [min(s, n - window) for s in starts], window
    steps = []
    for ax in axes:
        if ax.pointwise:
            steps.append(Step(None, box_len, [0] * len(box), [0] * len(box), box, box_len))
            continue
        hit = [(min(o for o in range(ax.n_out) if ax.hi[o] >= b),
                max(o for o in range(ax.n_out) if ax.lo[o] <= b + box_len - 1)) for b in box]
        out_len = max(e1 - e0 + 1 for e0, e1 in hit)
        out = [min(e0, ax.n_out - out_len) for e0, _ in hit]
        need = [(min(ax.lo[o], b), max(ax.hi[o + out_len - 1] + 1, b + box_len))
                for o, b in zip(out, box, strict=True)]
        c0 = [lo // ax.stride * ax.stride for lo, _ in need]
        crop_len = max(end - c for c, (_, end) in zip(c0, need, strict=True))
        if crop_len < ax.n_in:  # the last crop ends at the border and starts on the stride
            crop_len = ax.n_in - (ax.n_in - crop_len) // ax.stride * ax.stride
        crop_len = min(crop_len, ax.n_in)
        c0 = [min(c, ax.n_in - crop_len) for c in c0]
        steps.append(Step(c0, crop_len, [b - c for b, c in zip(box, c0, strict=True)],
                          [o - c // ax.stride for o, c in zip(out, c0, strict=True)], out, out_len))
        box, box_len = out, out_len
    return steps


def work_fraction(stages: list[Stage], rows: list[Step], cols: list[Step], total: int) -> float:
    """Estimated MACs per window with this prefix, relative to a full forward."""
    crops = sum(s.macs * (1 - r.crop_len * c.crop_len / (s.rows.n_in * s.cols.n_in))
                for s, r, c in zip(stages, rows, cols, strict=True))
    return 1 - crops / max(total, 1)


# ---------------------------------------------------------------- the suffix


class Injected(nn.Module):
    """Stands in for the prefix's first stage: returns the patched activations."""

    def __init__(self) -> None:
        super().__init__()
        self.value: torch.Tensor | None = None

    def forward(self, _x: torch.Tensor) -> torch.Tensor:
        return self.value


# ---------------------------------------------------------------- planning and running


@dataclass
class Plan:
    stages: list[Stage]  # the prefix used
    rows: list[Step]
    cols: list[Step]
    row_starts: list[int]
    col_starts: list[int]
    window: int
    work: float  # estimated MACs per window relative to a full forward
    suffix: nn.Module
    inject: Injected


def make_plan(model: nn.Module, x: torch.Tensor, window: int, stride: int, split: str = "auto",
              owner: nn.Module | None = None) -> Plan | str:
    """The cheapest prefix (or the one ending at ``split``); a reason string when none helps."""
    prefix = find_prefix(model, x[:1], owner)
    if not prefix.stages:
        return f"no local prefix: {prefix.reason}"
    names = [s.name for s in prefix.stages]
    rs, cs = window_starts(x.shape[-2], window, stride), window_starts(x.shape[-1], window, stride)
    rows = axis_steps([s.rows for s in prefix.stages], rs, window)
    cols = axis_steps([s.cols for s in prefix.stages], cs, window)
    work = [work_fraction(prefix.stages[:k], rows[:k], cols[:k], prefix.total_macs)
            for k in range(1, len(names) + 1)]
    if split == "auto":  # the shortest prefix within 0.05 of the least work: crops cost copies too
        k = next(n for n, w in enumerate(work) if w <= min(work) + 0.05) + 1
    else:
        ends = [n for n, name in enumerate(names) if name == split or name.startswith(split + ".")]
        if not ends:
            return f"split {split!r} is not in the local prefix ({', '.join(names)}; {prefix.reason})"
        k = ends[-1] + 1
    if split == "auto" and work[k - 1] > 0.9:
        return f"the local prefix ({names[-1]}) would save < 10 % per window"
    inject = Injected()
    suffix = with_replaced(model, {n: inject if i == 0 else nn.Identity() for i, n in enumerate(names[:k])})
    return Plan(prefix.stages[:k], rows[:k], cols[:k], rs, cs, window, work[k - 1], suffix, inject)


def _index(t: torch.Tensor, ys, ly: int, xs, lx: int) -> tuple[torch.Tensor, ...]:
    """Advanced indices of boxes ys×xs (one per window) of size ly×lx in a B×H×W×C tensor."""
    r = torch.as_tensor(ys, device=t.device)[:, None] + torch.arange(ly, device=t.device)
    c = torch.as_tensor(xs, device=t.device)[:, None] + torch.arange(lx, device=t.device)
    return torch.arange(len(r), device=t.device)[:, None, None], r[:, :, None], c[:, None, :]


def _gather(t: torch.Tensor, ys, ly: int, xs, lx: int) -> torch.Tensor:
    """Those boxes (B×ly×lx×C) from B×H×W×C, or from one H×W×C for every window."""
    b, r, c = _index(t, ys, ly, xs, lx)
    return t[r, c] if t.dim() == 3 else t[b, r, c]


def _put(t: torch.Tensor, ys, xs, box: torch.Tensor) -> None:
    t.index_put_(_index(t, ys, box.shape[1], xs, box.shape[2]), box.to(t.dtype))


def _nchw(t: torch.Tensor) -> torch.Tensor:  # B×H×W×C viewed as channels-last N×C×H×W
    return t.permute(0, 3, 1, 2)


def _nhwc(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 2, 3, 1)


class Image:
    """One image's clean activations and logits under a plan."""

    def __init__(self, plan: Plan, x1: torch.Tensor, base1: torch.Tensor):
        self.plan, self.x1 = plan, x1
        self.img, self.base = _nhwc(x1)[0], _nhwc(base1)[0]
        h, self.clean = x1.contiguous(memory_format=torch.channels_last), []
        for stage in plan.stages:
            self.clean.append(_nhwc(h)[0])
            h = stage.module(h)
        self.split = _nhwc(h)[0]
        self.logits = self.suffix(self.split[None])[0]

    def suffix(self, patched: torch.Tensor) -> torch.Tensor:
        self.plan.inject.value = _nchw(patched)
        try:
            return self.plan.suffix(self.x1.expand(len(patched), -1, -1, -1)).float()
        finally:
            self.plan.inject.value = None

    def windows(self, ri: list[int], cj: list[int]) -> torch.Tensor:
        """Logits of the image occluded by windows (row position ri[b], column position cj[b])."""
        p, w = self.plan, self.plan.window
        h, wd = self.img.shape[:2]
        rs, cs = [p.row_starts[i] for i in ri], [p.col_starts[j] for j in cj]
        by, bx = [min(s, h - w) for s in rs], [min(s, wd - w) for s in cs]
        ar = torch.arange(w, device=self.img.device)
        inside_r = (ar[None] + torch.as_tensor(by)[:, None].to(ar)) >= torch.as_tensor(rs).to(ar)[:, None]
        inside_c = (ar[None] + torch.as_tensor(bx)[:, None].to(ar)) >= torch.as_tensor(cs).to(ar)[:, None]
        mask = (inside_r[:, :, None] & inside_c[:, None, :])[..., None]
        box = torch.where(mask, _gather(self.base, by, w, bx, w), _gather(self.img, by, w, bx, w))
        for stage, sr, sc, clean in zip(p.stages, p.rows, p.cols, self.clean, strict=True):
            if sr.crop is None and sc.crop is None:
                box = _nhwc(stage.module(_nchw(box)))
                continue
            crop = _gather(clean, [sr.crop[i] for i in ri], sr.crop_len, [sc.crop[j] for j in cj], sc.crop_len)
            _put(crop, [sr.box_in[i] for i in ri], [sc.box_in[j] for j in cj], box)
            out = _nhwc(stage.module(_nchw(crop)))
            box = _gather(out, [sr.out_at[i] for i in ri], sr.box_len, [sc.out_at[j] for j in cj], sc.box_len)
        patched = self.split.expand(len(ri), -1, -1, -1).clone()
        _put(patched, [p.rows[-1].box[i] for i in ri], [p.cols[-1].box[j] for j in cj], box)
        return self.suffix(patched)


def coverage(starts: list[int], window: int, n: int) -> torch.Tensor:
    """positions × n: 1 where the window at that position covers the pixel (truncated at n)."""
    m = torch.zeros(len(starts), n, dtype=torch.float64)
    for k, s in enumerate(starts):
        m[k, s : min(s + window, n)] = 1
    return m


def attribution_map(plan: Plan, diffs: torch.Tensor, channels: int, shape: tuple[int, int]) -> torch.Tensor:
    """Captum's map: per pixel the mean of f(x) - f(occluded) over the windows covering it."""
    mr = coverage(plan.row_starts, plan.window, shape[0])
    mc = coverage(plan.col_starts, plan.window, shape[1])
    total = mr.T @ diffs.double().cpu() @ mc
    count = torch.outer(mr.sum(0), mc.sum(0))
    out = torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total)).float()
    return out.expand(channels, -1, -1)


def verify(model: nn.Module, plan: Plan, x1: torch.Tensor, base1: torch.Tensor) -> str | None:
    """None when the incremental logits equal full forwards on a few windows of ``x1`` (fp32)."""
    n_r, n_c = len(plan.row_starts), len(plan.col_starts)
    picks = sorted({(0, 0), (n_r - 1, n_c - 1), (n_r // 2, n_c // 2), (0, n_c - 1), (n_r - 1, 0)})
    ri, cj = [i for i, _ in picks], [j for _, j in picks]
    with torch.inference_mode(), torch.autocast(x1.device.type, enabled=False):
        image = Image(plan, x1, base1)
        inc = torch.cat([image.logits[None], image.windows(ri, cj)])
        occluded = x1.repeat(len(picks) + 1, 1, 1, 1)
        for b, (i, j) in enumerate(picks, start=1):
            r0, c0 = plan.row_starts[i], plan.col_starts[j]
            win = (slice(None), slice(r0, r0 + plan.window), slice(c0, c0 + plan.window))
            occluded[b][win] = base1[0][win]
        full = model(occluded.contiguous(memory_format=torch.channels_last)).float()
    err = float((inc - full).abs().max())
    allowed = 1e-5 * float(full.abs().max()) + 1e-3 * float((full[1:] - full[:1]).abs().max())
    if not err <= allowed:
        return f"incremental logits differ from full forwards by {err:.2e} (allowed {allowed:.2e})"
    return None


def occlusion(
    model: nn.Module, x: torch.Tensor, baselines: torch.Tensor, target: torch.Tensor,
    window: int, stride: int, per_pass: int, *, bf16: bool = False, split: str = "auto",
) -> tuple[torch.Tensor | None, dict]:
    """Captum-equivalent occlusion maps (N×C×H×W) by incremental inference, and a report.

    The result is checked against ``model``'s own full forwards (``verify``). Batch norms
    are not folded into the convolutions before them: it saved 5-7 % per window, but which
    convolutions it folded depended on tensor ids, and so did the last bits of the maps.

    The map is None when the incremental path does not apply; the report says why.
    """
    plan = make_plan(model, x, window, stride, split)
    report = {"path": "plain", "images": len(x)}
    if isinstance(plan, str):
        return None, {**report, "reason": plan}
    try:
        problem = verify(model, plan, x[:1], baselines[:1])
    except (RuntimeError, IndexError, ValueError) as err:
        if "out of memory" in str(err).lower() or isinstance(err, torch.OutOfMemoryError):
            raise
        problem = f"the incremental forward failed ({type(err).__name__}: {str(err)[:80]})"
    if problem is not None:
        return None, {**report, "reason": problem}
    n_r, n_c = len(plan.row_starts), len(plan.col_starts)
    grid = [(i, j) for i in range(n_r) for j in range(n_c)]
    attr = torch.zeros(x.shape, dtype=torch.float32)
    with torch.inference_mode(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        for n in range(len(x)):
            image = Image(plan, x[n : n + 1], baselines[n : n + 1])
            t = int(target[n])
            diffs = []
            for start in range(0, len(grid), max(1, per_pass)):
                part = grid[start : start + max(1, per_pass)]
                out = image.windows([i for i, _ in part], [j for _, j in part])
                diffs.append(image.logits[t] - out[:, t])
            d = torch.cat(diffs).view(n_r, n_c)
            attr[n] = attribution_map(plan, d, x.shape[1], tuple(x.shape[-2:]))
    return attr, {"path": "incremental", "images": len(x), "split": plan.stages[-1].name,
                  "work": plan.work, "windows": len(grid)}


