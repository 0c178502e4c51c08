"""Tiny models, images and explainers with known answers, shared by the audit tests."""

from __future__ import annotations

import torch
from torch import nn

from xaudit.audit import AuditImages, AuditInput
from xaudit.explain.base import ExplainContext, Explainer


class TinyNet(nn.Module):
    """Two convolutions, global pooling and a linear head: 16-32 px inputs in milliseconds."""

    def __init__(self, n_classes: int = 2, smooth: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act1 = nn.Softplus() if smooth else nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.act2 = nn.Softplus() if smooth else nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, n_classes)

    def forward(self, x):
        x = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.fc(self.pool(x).flatten(1))


class LinearNet(nn.Module):
    """logit_c = w_c · x: exact attributions are w_c ⊙ (x − baseline)."""

    def __init__(self, size: int, weight: torch.Tensor):
        super().__init__()
        self.fc = nn.Linear(3 * size * size, weight.shape[0], bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(weight.view(weight.shape[0], -1))

    def forward(self, x):
        return self.fc(x.flatten(1))


def plain_ctx(generator: torch.Generator | None = None) -> ExplainContext:
    """Identity normalisation: input space = pixel space, black = 0."""
    return ExplainContext(mean=torch.zeros(3), std=torch.ones(3), generator=generator)


class FunctionExplainer(Explainer):
    """Returns ``fn(x, target)`` (N×H×W or N×C×H×W) as the attribution; sees no model."""

    name = "function"
    kind = "gradient"

    def __init__(self, fn, label: str = "function"):
        self.fn = fn
        self._label = label

    @property
    def label(self) -> str:
        return self._label

    def attribute(self, model, x, target, ctx):
        out = self.fn(x, target)
        return out.unsqueeze(1) if out.dim() == 3 else out


class GradientExplainer(Explainer):
    """Plain input gradient of the target logit (signed)."""

    name = "toy_gradient"
    kind = "gradient"

    def attribute(self, model, x, target, ctx):
        x = x.clone().requires_grad_(True)
        out = model(x).gather(1, target.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(out, x)
        return grad.detach()


def images_for(
    model: nn.Module,
    n: int = 4,
    size: int = 16,
    seed: int = 0,
    masks: bool = True,
) -> AuditImages:
    """Random images; masks = central square (evidence) and central disc (object)."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(n, 3, size, size, generator=g)
    with torch.no_grad():
        preds = model(pixels).argmax(1)
    labels = torch.arange(n) % 2
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    square = (yy >= size // 4) & (yy < 3 * size // 4) & (xx >= size // 4) & (xx < 3 * size // 4)
    c = (size - 1) / 2
    disc = (yy - c) ** 2 + (xx - c) ** 2 <= (0.35 * size) ** 2
    return AuditImages(
        x=pixels.clone(),
        pixels=pixels,
        labels=labels,
        preds=preds,
        targets=preds.clone(),
        ids=[f"img{i}" for i in range(n)],
        masks=square.expand(n, size, size).clone() if masks else None,
        object_masks=disc.expand(n, size, size).clone() if masks else None,
    )


def audit_input(model: nn.Module, explainers: list[Explainer], images: AuditImages, **kw) -> AuditInput:
    gen = torch.Generator().manual_seed(0)
    return AuditInput(
        model=model.eval(),
        explainers=explainers,
        ctx=plain_ctx(torch.Generator().manual_seed(1)),
        classes=["a", "b"],
        splits=kw.pop("splits", {"test": images}),
        generator=gen,
        **kw,
    )


# ---------------------------------------------------------------- the audit-family tests

SIZE = 32


def gradient(model):
    explainer = GradientExplainer()
    return lambda x, t: explainer.attribute(model, x, t, plain_ctx())


class TwiceGradient(GradientExplainer):
    """The gradient, computed twice: 2 model evaluations per image."""

    name = "twice_gradient"

    def attribute(self, model, x, target, ctx):
        super().attribute(model, x, target, ctx)
        return super().attribute(model, x, target, ctx)
