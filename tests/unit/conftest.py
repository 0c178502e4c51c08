"""Fixtures shared by the audit-family unit tests."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.audit_toys import (
    SIZE,
    FunctionExplainer,
    GradientExplainer,
    TinyNet,
    TwiceGradient,
    images_for,
)


@pytest.fixture(scope="module")
def cnn():
    """A seeded tiny CNN (Softplus, so gradients move smoothly with the input), 3 classes."""
    torch.manual_seed(0)
    model = TinyNet(n_classes=3, smooth=True).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, SIZE, SIZE, generator=g) + 0.2
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    model = TinyNet(n_classes=2, smooth=True)
    images = images_for(model, n=4, size=16)
    blind = FunctionExplainer(lambda xx, t: xx.mean(1), label="blind")
    return model, images, [GradientExplainer(), blind, TwiceGradient()]
