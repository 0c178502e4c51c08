"""Brief, seeded training of the cases' small models, and the Classifier they are audited as."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..models.classifier import Classifier

# The cases' preprocessing: pixels in [0, 1] centred and scaled, so that the black baseline
# (pixel 0) and the zero baseline (input 0) differ, as they do for a real model.
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


def to_input(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float N×3×H×W pixels → the models' input space."""
    x = pixels.float() / 255 if pixels.dtype == torch.uint8 else pixels.float()
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def fit(net: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, steps: int, seed: int,
        lr: float = 3e-3, batch: int = 32) -> float:
    """Adam on cross-entropy for ``steps`` minibatches drawn from ``seed``; returns the
    training accuracy afterwards (the case reports it: a model that learnt nothing
    makes its truths moot)."""
    if steps < 1:
        raise ValueError(f"steps: expected a positive number of training steps, got {steps}")
    x, y = to_input(pixels), labels.long()
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        net.train()
        for _ in range(steps):
            idx = torch.randint(len(x), (min(batch, len(x)),), generator=gen)
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        return float((net(x).argmax(1) == y).float().mean())


def as_classifier(net: nn.Module, classes: Sequence[str], size: int, cam_layer: str) -> Classifier:
    """The case model as xaudit sees any user's module: ``Classifier.from_module``."""
    return Classifier.from_module(net, classes=list(classes), mean=MEAN, std=STD,
                                  image_size=size, cam_layer=cam_layer)
