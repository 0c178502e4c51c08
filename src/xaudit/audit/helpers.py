"""Small helpers the audits share: image sampling, seeds, names, JSON-ready values."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch

from .types import AuditImages


def stratified(images: AuditImages, n: int | None) -> AuditImages:
    """At most ``n`` images, taken round-robin over classes (deterministic, keeps order)."""
    if n is None or n >= len(images):
        return images
    return images.subset(stratified_index(images.labels.tolist(), n))


def stratified_index(labels: list[int], n: int) -> list[int]:
    """The sorted positions of at most ``n`` of ``labels``, round-robin over classes."""
    return sorted(round_robin(labels, n))


def round_robin(keys: Sequence[Hashable], n: int) -> list[int]:
    """Positions of at most ``n`` items, one class (``keys``) after another in sorted order,
    each class's items in their given order: the one stratified draw of pools and samples."""
    by_class: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        by_class.setdefault(key, []).append(i)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < n and any(depth < len(v) for v in by_class.values()):
        for key in sorted(by_class):
            if depth < len(by_class[key]) and len(chosen) < n:
                chosen.append(by_class[key][depth])
        depth += 1
    return chosen


def fork_seed(generator: torch.Generator) -> int:
    """A fresh seed drawn from ``generator`` (for forked RNG state and sub-generators)."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())


def sub_generator(generator: torch.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(fork_seed(generator))


def nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def plain(value: Any) -> Any:
    """JSON-ready copy: numpy scalars and arrays to Python, NaN and inf to None."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        value = value.item()
    return nan_to_none(value)
