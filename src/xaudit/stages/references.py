"""Training images for the methods that draw their baselines from them (expected_gradients),
and the training set's mean colour (the ``mean`` baseline)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..data.base import Record
from ..data.transforms import DecodedStore

# A uniform draw from the train split: enough distinct baselines for n_samples draws per image,
# small enough to keep in memory beside the model (128 × 3 × 224² bytes = 18 MiB as uint8)
REFERENCE_IMAGES = 128


def train_references(explainers: Sequence[object], train: Sequence[Record], store: DecodedStore,
                     seed: int) -> torch.Tensor | None:
    """Up to ``REFERENCE_IMAGES`` training images (uint8), drawn with ``seed``; None when no
    method needs them or the run has no train split."""
    if not train or not any(getattr(e, "needs_references", False) for e in explainers):
        return None
    return store.batch(_draw(train, seed))


def train_mean_colour(train: Sequence[Record], store: DecodedStore, seed: int) -> torch.Tensor | None:
    """(C,) mean pixel colour in [0, 1] of the same draw of training images; None without a
    train split (the ``mean`` baseline then takes the normalisation mean, as documented)."""
    if not train:
        return None
    return store.batch(_draw(train, seed)).float().mean(dim=(0, 2, 3)) / 255.0


def _draw(train: Sequence[Record], seed: int) -> list[Record]:
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return [train[i] for i in pick[:REFERENCE_IMAGES].tolist()]
