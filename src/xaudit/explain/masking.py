"""Batched masked forwards: the one expensive step of RISE, LIME and KernelSHAP.

Every method here scores f(x ⊙ m + b ⊙ (1 − m))[target] for many masks m. This module
builds those inputs chunk by chunk (never all masks at once), packs the masks of every
image of a batch into the same forward passes, and runs them in inference mode.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

# masks(start, stop) -> (1 | N) × (stop − start) × H × W masks in [0, 1], on x's device
MaskFn = Callable[[int, int], torch.Tensor]


def masked_scores(
    model: nn.Module,
    x: torch.Tensor,
    baselines: torch.Tensor,
    target: torch.Tensor,
    masks: MaskFn,
    n_masks: int,
    per_pass: int,
    reduce: Callable[[int, int, torch.Tensor, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """N × n_masks target scores, ``per_pass`` perturbed images per forward.

    A mask chunk is shared by all images of the batch (first dimension 1) or given per image
    (first dimension N). ``reduce(start, stop, scores, chunk)`` sees each chunk's scores
    (N × c) and masks while they are in memory, so callers can accumulate without keeping
    every mask.
    """
    n = len(x)
    step = max(1, per_pass // n)
    out = torch.empty(n, n_masks, dtype=torch.float32)
    rows = torch.arange(n, device=x.device)
    with torch.inference_mode():
        for start in range(0, n_masks, step):
            stop = min(n_masks, start + step)
            chunk = masks(start, stop).to(x)
            m = chunk.unsqueeze(2)  # (1|N) × c × 1 × H × W
            inputs = baselines.unsqueeze(1) + (x - baselines).unsqueeze(1) * m
            logits = model(inputs.flatten(0, 1)).float().view(n, stop - start, -1)
            scores = logits[rows, :, target]
            out[:, start:stop] = scores.cpu()
            if reduce is not None:
                reduce(start, stop, scores, chunk)
    return out


def slic_segments(
    pixels: torch.Tensor, n_segments: int, compactness: float, sigma: float
) -> torch.Tensor:
    """SLIC superpixels of one C×H×W image in [0, 1]: H×W long labels 0..M−1."""
    from skimage.segmentation import slic

    image = pixels.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy().astype(np.float64)
    channel_axis = -1 if image.shape[-1] > 1 else None
    labels = slic(
        image if channel_axis is not None else image[..., 0],
        n_segments=n_segments,
        compactness=compactness,
        sigma=sigma,
        start_label=0,
        channel_axis=channel_axis,
    )
    _, dense = np.unique(labels, return_inverse=True)  # labels 0..M−1 with none missing
    return torch.from_numpy(dense.reshape(labels.shape).astype(np.int64))


def binary_to_masks(z: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """Superpixel on/off vectors (N × c × M) to pixel masks (N × c × H × W) via labels (N × H × W)."""
    n, c, _ = z.shape
    flat = segments.flatten(1).to(z.device)  # N × HW
    picked = torch.gather(z, 2, flat.unsqueeze(1).expand(n, c, -1))
    return picked.view(n, c, *segments.shape[1:]).float()


def check_segmentation(n_segments: object, compactness: object, sigma: object) -> None:
    if isinstance(n_segments, bool) or not isinstance(n_segments, int) or n_segments < 2:
        raise ValueError(f"n_segments must be an integer >= 2, got {n_segments!r}")
    for key, value in (("compactness", compactness), ("sigma", sigma)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{key} must be a number >= 0, got {value!r}")
    if not compactness:
        raise ValueError("compactness must be > 0, got 0")
