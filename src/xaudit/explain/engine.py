"""Dataset-scale explanation: choose images, batch them, stream maps to disk in chunks.

Maps are stored per method under ``maps/<label>/`` as safetensors chunks
(``chunk_00000.safetensors``: ``maps`` N×H×W float32 signed, channel-summed; ``targets``;
``delta`` for path methods) plus ``index.json`` listing each chunk's image ids. The index
is rewritten atomically after each chunk, so a killed run resumes at the first chunk that
is not in it, and memory stays flat in the number of images.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from ..data.base import Record
from ..errors import XauditError, echo
from ..run import atomic_path, write_json
from ..safety import safe_name
from ..stored import read_map_chunk, read_map_index
from .base import ExplainContext, Explainer
from .counting import count_model_evals
from .fastpath import (
    FastModel,
    FastPath,
    ForwardCache,
    activation_bytes,
    default_budget_bytes,
    prepare_model,
    record_path,
    relative_error,
    samples_per_pass,
    step_ladder,
    target_outputs,
    unique_forward,
    with_backoff,
)
from .gradient import PathExplainer, captum_call


def select_ids(rows: list[dict], cfg, seed: int) -> list[str]:
    """Test images to explain, from the predictions table, per the recipe's ``select``."""
    if cfg.all:
        return [r["id"] for r in rows]
    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    known = {r["id"] for r in rows}
    for rid in cfg.ids:
        if rid not in known:
            raise XauditError(f"explain.select.ids: {echo(rid)} is not a test image id")
        chosen.append(rid)
    by_class: dict[str, list[dict]] = {}
    for r in rows:
        by_class.setdefault(r["true"], []).append(r)
    for cls in sorted(by_class):
        group = list(by_class[cls])
        rng.shuffle(group)
        if cfg.correct in ("any",):
            picks = group[: cfg.per_class]
        elif cfg.correct == "correct":
            picks = [r for r in group if r["correct"]][: cfg.per_class]
        elif cfg.correct == "incorrect":
            picks = [r for r in group if not r["correct"]][: cfg.per_class]
        else:  # both: up to per_class right and per_class wrong
            picks = [r for r in group if r["correct"]][: cfg.per_class]
            picks += [r for r in group if not r["correct"]][: cfg.per_class]
        chosen += [r["id"] for r in picks]
    if cfg.top_losses:
        worst = sorted(rows, key=lambda r: -float(r["loss"]))[: cfg.top_losses]
        chosen += [r["id"] for r in worst]
    seen: set[str] = set()
    return [i for i in chosen if not (i in seen or seen.add(i))]


def resolve_targets(rows: list[dict], target: str, classes: list[str]) -> list[int]:
    if target == "predicted":
        return [int(r["pred_idx"]) for r in rows]
    if target == "true":
        return [int(r["true_idx"]) for r in rows]
    if target in classes:
        return [classes.index(target)] * len(rows)
    raise XauditError(
        f"explain.target: {echo(target)} is not allowed. Allowed: predicted, true, or a class name "
        f"({', '.join(classes)})"
    )


class MapStore:
    """Chunked attribution maps of one method, with an index by image id."""

    def __init__(self, root: Path, label: str, part: str | None = None):
        self.label = label
        self.part = part  # a shard's own chunks and index (distributed runs), merged later
        self.dir = root / safe_name(label)
        self.index_path = self.dir / ("index.json" if part is None else f"index.{safe_name(part)}.json")

    def index(self) -> dict:
        if self.index_path.is_file():
            return read_map_index(self.index_path, self.label, self.dir.parent)
        return {"label": self.label, "chunks": []}

    def done_ids(self) -> set[str]:
        return {i for c in self.index()["chunks"] for i in c["ids"]}

    def reset(self) -> None:
        if self.dir.is_dir():
            for f in self.dir.iterdir():
                f.unlink()

    def merge_parts(self, parts: Sequence[str]) -> None:
        """Write the main index from the shards' indexes (chunk files stay where they are)."""
        chunks = list(self.index()["chunks"]) if self.part is None else []
        known = {c["file"] for c in chunks}
        for part in parts:
            for chunk in MapStore(self.dir.parent, self.label, part).index()["chunks"]:
                if chunk["file"] not in known:
                    chunks.append(chunk)
                    known.add(chunk["file"])
        write_json(self.dir / "index.json", {"label": self.label, "chunks": chunks})

    def write_chunk(self, ids: list[str], maps: torch.Tensor, targets: torch.Tensor, delta: torch.Tensor | None) -> None:
        index = self.index()
        prefix = "chunk_" if self.part is None else f"chunk_{safe_name(self.part)}_"
        name = f"{prefix}{len(index['chunks']):05d}.safetensors"
        tensors = {"maps": maps.float().contiguous(), "targets": targets.long().contiguous()}
        if delta is not None:
            tensors["delta"] = delta.float().contiguous()
        with atomic_path(self.dir / name) as tmp:
            save_file(tensors, str(tmp))
        index["chunks"].append({"file": name, "ids": list(ids)})
        write_json(self.index_path, index)

    def load(self, ids: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Maps (and targets, delta) in the order of ``ids`` (default: stored order)."""
        parts: dict[str, list[torch.Tensor]] = {}
        order: list[str] = []
        wanted = set(ids) if ids is not None else None
        for chunk in self.index()["chunks"]:
            if wanted is not None and not wanted.intersection(chunk["ids"]):
                continue
            data = read_map_chunk(self.dir / chunk["file"], self.dir.parent)
            for k, v in data.items():
                parts.setdefault(k, []).append(v)
            order += chunk["ids"]
        if not order:
            return {"ids": [], "maps": torch.empty(0)}
        out = {k: torch.cat(v) for k, v in parts.items()}
        if ids is not None:
            pos = {i: n for n, i in enumerate(order)}
            missing = [i for i in ids if i not in pos]
            if missing:
                raise XauditError(f"maps of {self.label}: no stored map for ids {missing[:3]}")
            take = torch.tensor([pos[i] for i in ids], dtype=torch.long)
            out = {k: v[take] for k, v in out.items()}
            order = list(ids)
        out["ids"] = order
        return out


def default_internal_batch(image_size: int) -> int:
    """Images per forward/backward pass inside path methods: ~64 at 224 px."""
    return max(4, int(64 * (224 / image_size) ** 2))


# ---------------------------------------------------------------- running one method on a batch


@dataclass
class MethodStats:
    """Cost and fast-path bookkeeping of one method over a run."""

    seconds: float = 0.0
    model_evals: int = 0  # images through the model (shared forwards included when computed here)
    n_new: int = 0
    fp32_recomputed: int = 0  # images whose bf16 result missed the tolerance and were redone
    refined: int = 0  # images that needed the full step count (adaptive steps)
    steps_used: int = 0  # Σ integration steps over images (path methods)
    samples_per_pass: int = 0
    path: str = ""  # occlusion: "incremental (prefix to <stage>; ...)" and/or "plain (<why>)"
    incremental_images: int = 0  # occlusion: images computed incrementally (fp32 redos included)
    work_per_window: float = 0.0  # occlusion: estimated MACs per window / one full forward

    def as_dict(self) -> dict:
        occlusion = ("path", "incremental_images", "work_per_window")
        return {k: v for k, v in self.__dict__.items() if self.path or k not in occlusion}


@dataclass
class Runner:
    """Runs one explainer on batches with the fast-path settings."""

    model: nn.Module
    explainer: Explainer
    ctx: ExplainContext
    fast: FastPath
    forwards: ForwardCache
    chunk: int  # samples per forward(/backward) pass
    stats: MethodStats = field(default_factory=MethodStats)

    def __post_init__(self) -> None:
        self.fp32 = FastModel(self.model, bf16=False, channels_last=self.fast.channels_last)
        self.fast_model = FastModel(self.model, self.fast.precision == "bf16", self.fast.channels_last)

    @property
    def bf16(self) -> bool:
        return self.fast_model.bf16

    def run(self, x: torch.Tensor, target: torch.Tensor, ids: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        with count_model_evals(self.model) as count, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")
            if isinstance(self.explainer, PathExplainer) and "n_steps" in self.explainer.params():
                attr, delta = self._path(x, target, ids)
            else:
                attr, delta = self._generic(x, target, ids)
        self.stats.model_evals += count.n
        return attr, delta

    # -- path methods: completeness against fp32 endpoints shared with other methods
    def _path(self, x, target, ids):
        e = self.explainer
        kwargs = e.kwargs(x, self.ctx)
        fx = target_outputs(self.forwards.get(self.fp32, ids, x), target)
        gap = fx - unique_forward(self.fp32, kwargs["baselines"], target)
        attr = torch.zeros(x.shape, dtype=torch.float32)
        delta = torch.zeros(len(x))
        pending = torch.arange(len(x))
        ladder = step_ladder(e.n_steps, self.fast.adaptive_steps)
        passes = [(self.fast_model, s) for s in ladder]
        if self.bf16:
            passes.append((self.fp32, e.n_steps))
        for k, (model, steps) in enumerate(passes):
            if k == len(ladder):
                self.stats.fp32_recomputed += len(pending)
            elif k == 1:  # images that needed more than the coarse rung
                self.stats.refined += len(pending)
            sub = self._integrate(model, x[pending], target[pending], kwargs["baselines"][pending], steps)
            self.stats.steps_used += steps * len(pending)
            total = sub.flatten(1).sum(1)
            ok = relative_error(total, gap[pending].cpu()) <= self.fast.tolerance
            last = k == len(passes) - 1
            keep = torch.ones_like(ok) if last else ok
            attr[pending[keep]] = sub[keep]
            delta[pending[keep]] = (total[keep].double() - gap[pending][keep].double().cpu()).float()
            pending = pending[~keep]
            if len(pending) == 0:
                break
        return attr, delta

    def _integrate(self, model, x, target, baselines, steps) -> torch.Tensor:
        e = self.explainer

        def run(chunk: int) -> torch.Tensor:
            with captum_call():
                out = e.captum(model).attribute(
                    x, target=target, baselines=baselines, n_steps=steps, method=e.method,
                    internal_batch_size=max(chunk, len(x)) if e.internal_batch_size is None
                    else e.internal_batch_size,
                )
            return out.detach().float().cpu()

        return with_backoff(run, self.chunk, self._shrink)

    def _shrink(self, chunk: int) -> None:
        self.chunk = chunk

    # -- everything else: run as the explainer does; bf16 guarded by its delta or its logits
    def _generic(self, x, target, ids):
        attr, delta = self._attribute(self.fast_model, x, target)
        if not self.bf16:
            return attr, delta
        if delta is not None:
            gap = attr.flatten(1).sum(1).double() - delta.double().cpu()
            bad = relative_error(attr.flatten(1).sum(1), gap) > self.fast.tolerance
        else:
            ref = self.forwards.get(self.fp32, ids, x).cpu()
            with torch.inference_mode():
                low = self.fast_model(x).float().cpu()
            err = (target_outputs(low, target.cpu()) - target_outputs(ref, target.cpu())).abs()
            if self.explainer.kind == "perturbation":
                # maps are differences of outputs: bf16's output error must be small next to them
                scale = attr.flatten(1).abs().amax(1)
            else:
                scale = ref.amax(1) - ref.amin(1)
            bad = err / scale.clamp_min(1e-12) > self.fast.tolerance
        if bool(bad.any()):
            idx = bad.nonzero().flatten()
            self.stats.fp32_recomputed += len(idx)
            redo, redo_delta = self._attribute(self.fp32, x[idx.to(x.device)], target[idx.to(target.device)])
            attr[idx] = redo
            if delta is not None and redo_delta is not None:
                delta[idx] = redo_delta
        return attr, delta

    def _attribute(self, model, x, target):
        e = self.explainer

        def run(chunk: int):
            # the pass size travels in the context: the explainer's parameters stay as given
            ctx = dataclasses.replace(self.ctx, pass_size=chunk)
            mode = torch.inference_mode() if not e.needs_gradients else contextlib.nullcontext()
            with mode:
                a, d = e.attribute_with_delta(model, x, target, ctx)
            record_path(self.stats, e.take_report() if hasattr(e, "take_report") else None)
            return a.detach().float().cpu(), (None if d is None else d.detach().float().reshape(-1).cpu())

        return with_backoff(run, self.chunk, self._shrink)


def pass_size_for(model: nn.Module, explainer: Explainer, x1: torch.Tensor, fast: FastPath, device,
                per_sample: int | None = None) -> int:
    """Samples per pass under the memory budget; ``per_sample``: the activation bytes of one
    sample when already measured (copies of one architecture share them)."""
    budget = (fast.memory_budget_mb << 20) if fast.memory_budget_mb else default_budget_bytes(device)
    per_sample = per_sample if per_sample is not None else activation_bytes(model, x1)
    if fast.precision == "bf16":
        per_sample //= 2
    return samples_per_pass(per_sample, budget, explainer.needs_gradients)


# ---------------------------------------------------------------- dataset-scale streams


def explain_dataset(
    model: nn.Module,
    explainers: Sequence[Explainer],
    records: Sequence[Record],
    targets: Sequence[int],
    batch_fn: Callable[[Sequence[Record]], torch.Tensor],
    ctx: ExplainContext,
    stores: Sequence[MapStore],
    batch_size: int,
    chunk_size: int,
    device: torch.device,
    progress: Callable[[str, int, int], None] | None = None,
    *,
    fast: FastPath | None = None,
    forwards: ForwardCache | None = None,
) -> dict[str, dict]:
    """Explain N images × M methods as one stream of image batches, writing chunks.

    Each batch is built once and handed to every method that still lacks some of its
    images (chunks already stored are skipped, so a killed run resumes). Returns each
    method's cost: seconds, model evaluations, images computed, fp32 recomputes.
    """
    fast = fast or FastPath()
    forwards = forwards if forwards is not None else ForwardCache()
    if len(stores) != len(explainers):
        raise XauditError(f"explain_dataset: {len(explainers)} methods but {len(stores)} map stores")
    done = [s.done_ids() for s in stores]
    todo_ids = {r.id for r in records if any(r.id not in d for d in done)}
    todo = [(r, t) for r, t in zip(records, targets, strict=True) if r.id in todo_ids]
    runners: list[Runner] = []
    pending = [{"ids": [], "maps": [], "targets": [], "delta": []} for _ in explainers]
    n_done = len(records) - len(todo)
    if todo:
        prepare_model(model, fast)
        x1 = batch_fn([todo[0][0]]).to(device)
        for e in explainers:
            runner = Runner(model, e, ctx, fast, forwards, pass_size_for(model, e, x1, fast, device))
            runner.stats.samples_per_pass = runner.chunk
            runners.append(runner)
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        x_all = batch_fn([r for r, _ in batch]).to(device)
        for m, runner in enumerate(runners):
            keep = [n for n, (r, _) in enumerate(batch) if r.id not in done[m]]
            if not keep:
                continue
            ids = [batch[n][0].id for n in keep]
            x = x_all[keep] if len(keep) < len(batch) else x_all
            target = torch.tensor([batch[n][1] for n in keep], dtype=torch.long, device=device)
            t0 = time.perf_counter()
            attr, delta = runner.run(x, target, ids)
            runner.stats.seconds += time.perf_counter() - t0
            runner.stats.n_new += len(ids)
            buf = pending[m]
            buf["ids"] += ids
            buf["maps"].append(attr.float().sum(dim=1).cpu())
            buf["targets"].append(target.cpu())
            if delta is not None:
                buf["delta"].append(delta.float().reshape(-1).cpu())
            while len(buf["ids"]) >= chunk_size:
                _flush(stores[m], buf, chunk_size)
        n_done += len(batch)
        if progress is not None:
            for e in explainers:
                progress(e.label, n_done, len(records))
    for m, buf in enumerate(pending):
        if buf["ids"]:
            _flush(stores[m], buf, chunk_size)
    out = {}
    for m, e in enumerate(explainers):
        stats = runners[m].stats if runners else MethodStats()
        out[e.label] = {**stats.as_dict(), "shared_forward_evals": forwards.evals,
                        "precision": fast.precision}
    return out


def explain_records(
    model: nn.Module,
    explainer: Explainer,
    records: Sequence[Record],
    targets: Sequence[int],
    batch_fn: Callable[[Sequence[Record]], torch.Tensor],
    ctx: ExplainContext,
    maps: MapStore,
    batch_size: int,
    chunk_size: int,
    device: torch.device,
    progress: Callable[[str, int, int], None] | None = None,
    *,
    fast: FastPath | None = None,
    forwards: ForwardCache | None = None,
) -> dict:
    """Explain ``records`` with one method in batches, writing chunks; skip chunks already stored."""
    return explain_dataset(
        model, [explainer], records, targets, batch_fn, ctx, [maps], batch_size, chunk_size,
        device, progress, fast=fast, forwards=forwards,
    )[explainer.label]


def _flush(maps: MapStore, pending: dict, chunk_size: int) -> None:
    n = min(chunk_size, len(pending["ids"]))
    all_maps = torch.cat(pending["maps"])
    all_targets = torch.cat(pending["targets"])
    all_delta = torch.cat(pending["delta"]) if pending["delta"] else None
    maps.write_chunk(
        pending["ids"][:n], all_maps[:n], all_targets[:n], all_delta[:n] if all_delta is not None else None
    )
    pending["ids"] = pending["ids"][n:]
    pending["maps"] = [all_maps[n:]]
    pending["targets"] = [all_targets[n:]]
    pending["delta"] = [all_delta[n:]] if all_delta is not None else []
