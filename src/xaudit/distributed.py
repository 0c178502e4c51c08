"""Running across processes (torchrun): disjoint shards of images and of audits.

Under ``torchrun --nproc_per_node K xaudit run recipe.yaml`` every process runs the same
command. Rank 0 runs the stages up to evaluation while the others wait; then

- **explain**: each rank takes every K-th image of the selection and writes its own
  chunks (``chunk_rank<r>_*.safetensors`` with ``index.rank<r>.json``); after a barrier
  rank 0 writes the method's ``index.json`` over all shards. An image's map does not
  depend on the batch it is in, so the merged store holds the maps one process writes.
- **audit**: the ranks claim whole audits one at a time (an exclusive file per audit) and
  save each result as the resumable checkpoint a single process would have written; rank 0
  then runs what needs the others' results (correctness), reloads the rest and writes the
  tables, scorecard and summary. Each audit draws from its own seed, so its numbers do not
  depend on the process that ran it. The audit is the unit, not the image: its statistics
  pair and rank images across the whole sample.
- **report**: rank 0.

If one rank fails, the others stop at the next synchronisation point with a message
that points to that rank's error.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from .data.base import Record
from .errors import XauditError
from .explain.base import ExplainContext, Explainer
from .explain.engine import MapStore, explain_dataset
from .explain.fastpath import FastPath, ForwardCache
from .run import read_json, write_json

T = TypeVar("T")
# Rank 0 may train for hours while the others wait at the first synchronisation point; torchrun
# stops every process when one fails, so a long timeout does not leave processes hanging.
TIMEOUT = datetime.timedelta(hours=12)
_CONTROL: dict[str, Any] = {}  # a gloo group for control messages when the main backend is NCCL


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def part(self) -> str | None:
        return None if self.size == 1 else f"rank{self.rank}"


class OtherRankFailed(XauditError):
    """Another process of the same torchrun job stopped with an error."""


def init_from_env(backend: str | None = None) -> World:
    """Join the process group torchrun describes in the environment (a no-op without one)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=TIMEOUT)
        if backend != "gloo":
            _CONTROL["group"] = dist.new_group(backend="gloo", timeout=TIMEOUT)
    return current_world()


def leave() -> None:
    """Leave the process group (at the end of a command under torchrun)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        _CONTROL.clear()


def current_world() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def local_device(device: torch.device) -> torch.device:
    """This rank's GPU under torchrun (``LOCAL_RANK``); ``device`` itself otherwise."""
    if device.type == "cuda" and device.index is None and current_world().size > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def shard(items: Sequence[T], world: World) -> list[T]:
    """This rank's items: every ``size``-th one from position ``rank`` (balanced by class)."""
    return list(items[world.rank :: world.size])


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier(group=_CONTROL.get("group"))


def gather(world: World, value: Any) -> list[Any]:
    """``value`` of every rank, in rank order (``[value]`` in one process)."""
    if world.size == 1:
        return [value]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, value, group=_CONTROL.get("group"))
    return out


def step(world: World, fn: Callable[[], T], *, main_only: bool = False) -> T | None:
    """Run ``fn`` (on every rank, or on rank 0 alone) and wait until every rank is done.

    An error on this rank is raised here after the others have been told; an error on
    another rank raises ``OtherRankFailed``, so no process waits forever for a failed one.
    """
    result, error = None, None
    if world.is_main or not main_only:
        try:
            result = fn()
        except BaseException as err:  # re-raised below, after the others know
            if world.size == 1:
                raise
            error = err
    failed = [r for r, ok in enumerate(gather(world, error is None)) if not ok]
    if error is not None:
        raise error
    if failed:
        raise OtherRankFailed(
            f"rank {failed[0]} of this torchrun job stopped with an error (its message is above); "
            f"rank {world.rank} stops too. Finished work is kept: run the same command again to resume."
        )
    return result


# ---------------------------------------------------------------- stored maps of one method

KEY_FILE = "key.json"  # what the stored maps were computed with (method, model, targets, precision)


def keep_or_reset_maps(root: Path, label: str, key: str, shards: Sequence[Sequence[str]]) -> bool:
    """Keep a method's stored maps for a resumed run, or delete them; True if kept.

    They are kept only if they were computed with ``key`` and each shard's stored ids are
    among the ids that shard is given now (``shards``: one list of ids per rank, a single
    list in one process). Anything else (another method setting, model or target; another
    number of processes) deletes them, so no map of another setting is ever reused.
    """
    store = MapStore(root, label)
    keep = stored_maps_key(root, label) == key and _shards_fit(root, label, shards)
    if not keep:
        store.reset()
        write_json(store.dir / KEY_FILE, {"label": label, "key": key})
    return keep


def stored_maps_key(root: Path, label: str) -> str | None:
    """The key a method's stored maps were computed with; None when none is recorded."""
    key_path = MapStore(root, label).dir / KEY_FILE
    return read_json(key_path).get("key") if key_path.is_file() else None


def _shards_fit(root: Path, label: str, shards: Sequence[Sequence[str]]) -> bool:
    main = MapStore(root, label)
    if len(shards) == 1:
        return not list(main.dir.glob("index.rank*.json")) and main.done_ids() <= set(shards[0])
    part_files: set[str] = set()
    for path in main.dir.glob("index.rank*.json"):
        rank = path.name[len("index.rank") : -len(".json")]
        if not rank.isdigit() or int(rank) >= len(shards):
            return False
        part = MapStore(root, label, f"rank{rank}")
        if not part.done_ids() <= set(shards[int(rank)]):
            return False
        part_files |= {c["file"] for c in part.index()["chunks"]}
    return {c["file"] for c in main.index()["chunks"]} <= part_files


def explain_method_sharded(
    compute: Callable[[list[Record], list[int], MapStore], dict],
    root: Path,
    label: str,
    key: str,
    records: Sequence[Record],
    targets: Sequence[int],
    world: World,
) -> dict | None:
    """One method over this rank's shard into its own chunks; rank 0 merges the index.

    ``compute(records, targets, store)`` explains into ``store`` and returns its cost
    (``explain_records``). Returns on rank 0 the cost over all ranks (evaluations and
    recomputes summed, seconds of the slowest rank); ``None`` on the others.
    """
    pairs = list(zip(records, targets, strict=True))
    shards = [[r.id for r, _ in shard(pairs, World(rank, world.size))] for rank in range(world.size)]
    step(world, lambda: keep_or_reset_maps(root, label, key, shards), main_only=True)
    mine = shard(pairs, world)
    stats = step(world, lambda: compute([r for r, _ in mine], [t for _, t in mine],
                                        MapStore(root, label, world.part())))
    every = gather(world, stats)
    if not world.is_main:
        return None
    merge_index(root, label, world)
    return merge_stats(every)


# Per-rank figures that are not added up: the slowest rank's time, settings every rank shares.
_NOT_SUMMED = ("seconds", "samples_per_pass", "work_per_window")


def merge_index(root: Path, label: str, world: World) -> None:
    """Rank 0: the method's ``index.json`` over every rank's chunks (from the shards alone)."""
    parts = [World(r, world.size).part() for r in range(world.size)]
    MapStore(root, label, world.part()).merge_parts(parts)


def merge_stats(parts: Sequence[dict]) -> dict:
    """The cost of one method over all ranks: counts summed, seconds of the slowest rank,
    differing descriptions (e.g. occlusion's path) joined."""
    out = dict(parts[0])
    for key, value in parts[0].items():
        values = [p.get(key, 0) for p in parts]
        if isinstance(value, str):
            out[key] = " | ".join(dict.fromkeys(str(v) for v in values if v))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = max(values) if key in _NOT_SUMMED else sum(values)
    out["ranks"] = len(parts)
    return out


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
    root = Path(root)
    mine = shard(list(zip(records, targets, strict=True)), world)
    stores = [MapStore(root, e.label, world.part()) for e in explainers]
    stats = step(world, lambda: explain_dataset(
        model, explainers, [r for r, _ in mine], [t for _, t in mine], batch_fn, ctx, stores,
        batch_size, chunk_size, device, fast=fast, forwards=forwards,
    ))
    if world.size > 1 and world.is_main:
        for e in explainers:
            merge_index(root, e.label, world)
    barrier(world)
    return stats


# ---------------------------------------------------------------- audits


def claim(state_dir: Path, name: str) -> bool:
    """Take audit ``name`` for this process: True for exactly one process of the job."""
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(state_dir / f"{name}.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(f"rank {current_world().rank}\n")
    return True


def clear_claims(state_dir: Path) -> None:
    """Forget the claims of an earlier, interrupted job (its finished audits stay saved)."""
    for path in state_dir.glob("*.claim") if state_dir.is_dir() else []:
        path.unlink(missing_ok=True)
