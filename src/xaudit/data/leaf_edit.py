"""Interventions on a synthetic leaf: its lesions as regions, and the same leaf re-drawn
without chosen ones (in distribution), so that a lesion's true importance can be measured."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .leaf_render import TAG_FRACTION, SyntheticLeaf, render_leaf


def lesion_components(lesion_mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Each lesion as one 8-connected region of ``lesion_mask`` (halo included, so touching
    lesions count as one): an H×W int array of region numbers (0: none) and their count."""
    labels, n = ndimage.label(np.asarray(lesion_mask, bool), structure=np.ones((3, 3), bool))
    return labels, int(n)


def render_leaf_without(
    seed: int | np.random.SeedSequence,
    label: int,
    drop: int | set[int] | list[int],
    size: int = 224,
    shortcut: bool = False,
    tag_fraction: float = TAG_FRACTION,
    lesion_strength: float = 1.0,
) -> SyntheticLeaf:
    """The leaf ``render_leaf`` draws with these arguments, with the lesions numbered ``drop``
    (regions of ``lesion_components`` of its lesion mask) never drawn.

    The scene stream never sees the label, so the healthy leaf of the same seed is the same
    leaf pixel for pixel outside the lesion mask: a dropped lesion's pixels are taken from it.
    The result is an image the renderer could have drawn (in distribution), not a deletion.
    """
    leaf = render_leaf(seed, label, size, shortcut, tag_fraction, lesion_strength)
    regions, n = lesion_components(leaf.lesion_mask)
    wanted = {drop} if isinstance(drop, (int, np.integer)) else set(drop)
    bad = sorted(int(d) for d in wanted if not 1 <= d <= n)
    if bad:
        raise ValueError(f"drop: lesions are numbered 1..{n} on this leaf, got {bad}")
    gone = np.isin(regions, sorted(wanted))
    healthy = render_leaf(seed, 0, size, shortcut=False, tag_fraction=tag_fraction)
    image = leaf.image.copy()
    image[gone] = healthy.image[gone]
    return SyntheticLeaf(image, leaf.lesion_mask & ~gone, leaf.leaf_mask, leaf.shortcut_mask)
