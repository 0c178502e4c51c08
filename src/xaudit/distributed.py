"""Explaining across processes (torchrun): disjoint shards of images, one index merged by rank 0.

Under ``torchrun --nproc_per_node K`` every process runs the same code. Each rank takes
every K-th image of the selection, writes its own chunks (``chunk_rank<r>_*.safetensors``
with ``index.rank<r>.json``), and after a barrier rank 0 writes the method's
``index.json`` over all shards. An image's map does not depend on the batch it is in, so
the merged store holds the maps a single process would have written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .data.base import Record
from .explain.base import ExplainContext, Explainer
from .explain.engine import MapStore, explain_dataset
from .explain.fastpath import FastPath, ForwardCache


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def part(self) -> str | None:
        return None if self.size == 1 else f"rank{self.rank}"


def init_from_env(backend: str | None = None) -> World:
    """Join the process group torchrun describes in the environment (a no-op without one)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    return current_world()


def current_world() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def shard(items: Sequence, world: World) -> list:
    """This rank's items: every ``size``-th one from position ``rank`` (balanced by class)."""
    return list(items[world.rank :: world.size])


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def explain_sharded(
    model: torch.nn.Module,
    explainers: Sequence[Explainer],
    records: Sequence[Record],
    targets: Sequence[int],
    batch_fn: Callable[[Sequence[Record]], torch.Tensor],
    ctx: ExplainContext,
    root,
    batch_size: int,
    chunk_size: int,
    device: torch.device,
    *,
    fast: FastPath | None = None,
    forwards: ForwardCache | None = None,
    world: World | None = None,
) -> dict[str, dict]:
    """``explain_dataset`` over this rank's shard; rank 0 merges the index when all are done.

    Returns this rank's cost per method; on rank 0 the stores under ``root`` then hold
    every image's map.
    """
    world = world or current_world()
    mine = shard(list(zip(records, targets, strict=True)), world)
    stores = [MapStore(root, e.label, world.part()) for e in explainers]
    stats = explain_dataset(
        model, explainers, [r for r, _ in mine], [t for _, t in mine], batch_fn, ctx, stores,
        batch_size, chunk_size, device, fast=fast, forwards=forwards,
    )
    barrier(world)
    if world.size > 1 and world.is_main:
        parts = [f"rank{r}" for r in range(world.size)]
        for e in explainers:
            MapStore(root, e.label).merge_parts(parts)
    barrier(world)
    return stats
