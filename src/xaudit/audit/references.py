"""Reference maps that see the image but not the model: edges, noise, the centre prior."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sobel_map(pixels: Tensor) -> Tensor:
    """N×H×W Sobel gradient magnitude of the grey image (pixels N×C×H×W in [0, 1])."""
    grey = pixels.float().mean(dim=1, keepdim=True)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]).view(1, 1, 3, 3)
    padded = F.pad(grey, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(padded, kx)
    gy = F.conv2d(padded, kx.transpose(2, 3))
    return torch.sqrt(gx**2 + gy**2)[:, 0]


def random_map(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    return torch.rand(shape, generator=generator)


def centre_map(n: int, h: int, w: int) -> Tensor:
    """N×H×W centred Gaussian (sigma = a quarter of each side): the centre-bias baseline."""
    ys = (torch.arange(h, dtype=torch.float32) - (h - 1) / 2) / (h / 4)
    xs = (torch.arange(w, dtype=torch.float32) - (w - 1) / 2) / (w / 4)
    m = torch.exp(-0.5 * (ys.view(-1, 1) ** 2 + xs.view(1, -1) ** 2))
    return m.expand(n, h, w).clone()
