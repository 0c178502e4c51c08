"""Timing helpers, the benchmark model, and the plain-forward(/backward) limits."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torchvision
from torch import nn

from xaudit.explain.fastpath import FastModel


@dataclass
class Results:
    """Ratios with their targets; printed as one table at the end."""

    rows: list[tuple[str, float, float | None, str, bool]] = field(default_factory=list)

    def add(self, name: str, ratio: float, target: float | None = None, note: str = "",
            lower: bool = False) -> None:
        """``lower``: the ratio's target is a ceiling (e.g. overhead over pure model work)."""
        self.rows.append((name, ratio, target, note, lower))
        print(f"  {line(name, ratio, target, note, lower)}", flush=True)

    def table(self) -> str:
        return "\n".join(line(*row) for row in self.rows)


def line(name: str, ratio: float, target: float | None, note: str, lower: bool = False) -> str:
    met = ratio <= target if lower else ratio >= target if target is not None else None
    verdict = "" if target is None else ("  MET" if met else "  NOT MET")
    goal = "" if target is None else f"  (target {'<=' if lower else '>='} {target:g})"
    return f"{name:<58} {ratio:7.2f}{goal}{verdict}{'  ' + note if note else ''}"


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def resnet18(num_classes: int = 1000) -> nn.Module:
    """Random-init ResNet-18 (ImageNet weights are not available offline; speed does not
    depend on the values)."""
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=num_classes).eval()


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def limit_forward_backward(model: nn.Module, x1: torch.Tensor, samples: int, batch: int,
                           bf16: bool = False, channels_last: bool = False) -> float:
    """Seconds for ``samples`` plain forward+backward passes (input gradient) at ``batch``."""
    net = FastModel(model, bf16, channels_last)
    x = x1[:1].expand(batch, -1, -1, -1).contiguous()
    run = lambda: net(x.clone().requires_grad_(True))[:, 0].sum().backward()  # noqa: E731
    run()  # warm-up
    full, rest = divmod(samples, batch)
    t0 = time.perf_counter()
    for _ in range(full):
        run()
    if rest:
        net(x[:rest].clone().requires_grad_(True))[:, 0].sum().backward()
    return time.perf_counter() - t0


def limit_forward(model: nn.Module, x1: torch.Tensor, samples: int, batch: int,
                  bf16: bool = False, channels_last: bool = False) -> float:
    """Seconds for ``samples`` plain inference forwards at ``batch``."""
    net = FastModel(model, bf16, channels_last)
    x = x1[:1].expand(batch, -1, -1, -1).contiguous()
    with torch.inference_mode():
        net(x)
        full, rest = divmod(samples, batch)
        t0 = time.perf_counter()
        for _ in range(full):
            net(x)
        if rest:
            net(x[:rest])
    return time.perf_counter() - t0


def to_standard_layout(model: nn.Module) -> nn.Module:
    return model.to(memory_format=torch.contiguous_format)
