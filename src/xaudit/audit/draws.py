"""Common random numbers: the random draws of a per-image metric, made once per image and
replayed for every map.

A metric that perturbs an image (infidelity's noise, ROAD's imputation noise, a sensitivity's
noisy copies, relevance ties) compares maps fairly only if every map of that image sees the
same perturbations; otherwise two equal maps score differently and the paired comparison of
a method with a control carries the noise of two draws. Each image gets one seed per kind of
draw, drawn from the audit's generator; every map replays it from a fresh generator.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .helpers import fork_seed

# A generator (one seed per image is drawn from it: fresh draws, as for a single map) or the
# seeds themselves (shared draws: the same seeds for every map of the images).
Draws = torch.Generator | Sequence[int]


def image_seeds(draws: Draws, n: int) -> list[int]:
    """One seed per image: drawn from ``draws`` if it is a generator, else ``draws`` itself."""
    if isinstance(draws, torch.Generator):
        return [fork_seed(draws) for _ in range(n)]
    seeds = [int(s) for s in draws]
    if len(seeds) != n:
        raise ValueError(f"expected one seed per image ({n}), got {len(seeds)}")
    return seeds


def image_generators(draws: Draws, n: int) -> list[torch.Generator]:
    """Fresh generators, one per image, at the seeds ``image_seeds`` gives."""
    return [torch.Generator().manual_seed(s) for s in image_seeds(draws, n)]


def per_image(shape: Sequence[int], generators: list[torch.Generator], kind: str = "randn",
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``shape`` = (N, ...): row i drawn from ``generators[i]`` (standard normal or uniform [0, 1))."""
    if kind not in ("randn", "rand"):
        raise ValueError(f"kind: expected 'randn' or 'rand', got {kind!r}")
    draw = torch.randn if kind == "randn" else torch.rand
    if shape[0] != len(generators):
        raise ValueError(f"expected one generator per row ({shape[0]}), got {len(generators)}")
    return torch.stack([draw(tuple(shape[1:]), generator=g, dtype=dtype) for g in generators])
