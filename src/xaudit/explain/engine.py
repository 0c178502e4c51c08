"""Dataset-scale explanation: choose images, batch them, stream maps to disk in chunks.

Maps are stored per method under ``maps/<label>/`` as safetensors chunks
(``chunk_00000.safetensors``: ``maps`` N×H×W float32 signed, channel-summed; ``targets``;
``delta`` for path methods) plus ``index.json`` listing each chunk's image ids. The index
is rewritten atomically after each chunk, so a killed run resumes at the first chunk that
is not in it, and memory stays flat in the number of images.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..data.base import Record
from ..errors import XauditError
from ..run import atomic_path, read_json, write_json
from ..safety import safe_name
from .base import ExplainContext, Explainer
from .counting import count_model_evals


def select_ids(rows: list[dict], cfg, seed: int) -> list[str]:
    """Test images to explain, from the predictions table, per the recipe's ``select``."""
    if cfg.all:
        return [r["id"] for r in rows]
    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    known = {r["id"] for r in rows}
    for rid in cfg.ids:
        if rid not in known:
            raise XauditError(f"explain.select.ids: {rid!r} is not a test image id")
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
        f"explain.target: {target!r} is not allowed. Allowed: predicted, true, or a class name "
        f"({', '.join(classes)})"
    )


class MapStore:
    """Chunked attribution maps of one method, with an index by image id."""

    def __init__(self, root: Path, label: str):
        self.label = label
        self.dir = root / safe_name(label)
        self.index_path = self.dir / "index.json"

    def index(self) -> dict:
        if self.index_path.is_file():
            return read_json(self.index_path)
        return {"label": self.label, "chunks": []}

    def done_ids(self) -> set[str]:
        return {i for c in self.index()["chunks"] for i in c["ids"]}

    def reset(self) -> None:
        if self.dir.is_dir():
            for f in self.dir.iterdir():
                f.unlink()

    def write_chunk(self, ids: list[str], maps: torch.Tensor, targets: torch.Tensor, delta: torch.Tensor | None) -> None:
        index = self.index()
        name = f"chunk_{len(index['chunks']):05d}.safetensors"
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
            data = load_file(str(self.dir / chunk["file"]))
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


def explain_records(
    model: torch.nn.Module,
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
) -> dict:
    """Explain ``records`` in batches, writing chunks; skip chunks already stored."""
    done = maps.done_ids()
    todo = [(r, t) for r, t in zip(records, targets, strict=True) if r.id not in done]
    if hasattr(explainer, "internal_batch_size") and explainer.internal_batch_size is None:
        explainer.internal_batch_size = default_internal_batch(_size(batch_fn, records))
    seconds, evals = 0.0, 0
    pending: dict[str, list] = {"ids": [], "maps": [], "targets": [], "delta": []}
    n_done = len(records) - len(todo)
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        recs = [r for r, _ in batch]
        x = batch_fn(recs).to(device)
        target = torch.tensor([t for _, t in batch], dtype=torch.long, device=device)
        t0 = time.perf_counter()
        with count_model_evals(model) as count, warnings.catch_warnings():
            # Captum notes that it switched requires_grad on for the inputs: expected here.
            warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")
            attr, delta = explainer.attribute_with_delta(model, x, target, ctx)
        seconds += time.perf_counter() - t0
        evals += count.n
        pending["ids"] += [r.id for r in recs]
        pending["maps"].append(attr.detach().float().sum(dim=1).cpu())
        pending["targets"].append(target.cpu())
        if delta is not None:
            pending["delta"].append(delta.detach().float().reshape(-1).cpu())
        while len(pending["ids"]) >= chunk_size:
            _flush(maps, pending, chunk_size)
        n_done += len(recs)
        if progress is not None:
            progress(explainer.label, n_done, len(records))
    if pending["ids"]:
        _flush(maps, pending, chunk_size)
    return {"seconds": seconds, "model_evals": evals, "n_new": len(todo)}


def _size(batch_fn, records) -> int:
    return int(batch_fn(records[:1]).shape[-1]) if records else 224


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
