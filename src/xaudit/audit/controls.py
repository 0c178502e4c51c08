"""Negative controls: maps that know nothing of what the model computes.

Every method audit scores them as extra rows of the scorecard. A check a control passes
cannot by itself show that a method explains the model (Binder et al., CVPR 2023: noise
passes model-randomization tests easily); the verdict must never trust one.

- ``random``: uniform noise, redrawn whenever the model's weights change (so it "decorrelates"
  under randomization, as Binder et al.'s random maps do), fixed for one model and image;
- ``blurred random``: the same noise blurred (σ = side/20), a smooth blob map;
- ``edge``: the Sobel magnitude of the image (Adebayo et al.'s edge detector);
- ``centre``: a centred Gaussian (σ = a quarter of each side), the centre prior;
- ``constant``: the same value everywhere.
"""

from __future__ import annotations

import hashlib
from typing import ClassVar

import torch
from torch import nn

from ..explain.base import ExplainContext, Explainer, gaussian_blur
from .references import centre_map, sobel_map

PREFIX = "control: "
KINDS = ("random", "blurred random", "edge", "centre", "constant")


def is_control(label: str) -> bool:
    return label.startswith(PREFIX)


def control_label(which: str) -> str:
    """The scorecard label of control ``which`` (one of ``KINDS``)."""
    return PREFIX + which


def weights_digest(model: nn.Module) -> bytes:
    """A digest of the model's parameters: the random controls' seed changes with them."""
    h = hashlib.blake2b(digest_size=8)
    for p in model.parameters():
        h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.digest()


def _noise(model: nn.Module, x: torch.Tensor, ctx: ExplainContext) -> torch.Tensor:
    """N×H×W uniform noise seeded by (context seed, weights, image): reproducible, resumable."""
    base = str(ctx.generator.initial_seed() if ctx.generator is not None else 0).encode()
    weights = weights_digest(model)
    data = x.detach().to("cpu", torch.float32).contiguous().numpy()
    out = []
    for image in data:
        seed = int.from_bytes(hashlib.blake2b(image.tobytes() + weights, digest_size=8,
                                              key=base).digest(), "little") >> 1
        gen = torch.Generator().manual_seed(seed)
        out.append(torch.rand(image.shape[-2:], generator=gen))
    return torch.stack(out)


class ControlMap(Explainer):
    """One negative control, run by the audits like a method (no model evaluations, except
    that the random ones read the weights to reseed)."""

    kind: ClassVar[str] = "control"
    needs_gradients: ClassVar[bool] = False

    def __init__(self, which: str) -> None:
        if which not in KINDS:
            raise ValueError(f"control: expected one of {', '.join(KINDS)}, got {which!r}")
        self.which = which

    @property
    def label(self) -> str:
        return control_label(self.which)

    def attribute(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                  ctx: ExplainContext) -> torch.Tensor:
        n, _, h, w = x.shape
        if self.which == "random":
            m = _noise(model, x, ctx)
        elif self.which == "blurred random":
            m = gaussian_blur(_noise(model, x, ctx).unsqueeze(1), max(h, w) / 20)[:, 0]
        elif self.which == "edge":
            m = sobel_map(ctx.input_to_pixel(x.detach().cpu().float()))
        elif self.which == "centre":
            m = centre_map(n, h, w)
        else:
            m = torch.ones(n, h, w)
        return m.unsqueeze(1).float()


def control_explainers() -> list[ControlMap]:
    return [ControlMap(k) for k in KINDS]
