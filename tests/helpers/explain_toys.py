"""Tiny analytic models, images and contexts with known answers, shared by the explainer tests."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import SqueezeExcitation

from xaudit.explain import ExplainContext

MEAN = torch.tensor([0.485, 0.456, 0.406])
STD = torch.tensor([0.229, 0.224, 0.225])


def context(
    model: nn.Module, target_layer: nn.Module | None = None, seed: int = 0
) -> ExplainContext:
    return ExplainContext(
        mean=MEAN,
        std=STD,
        target_layer=target_layer,
        layers=dict(model.named_modules()),
        generator=torch.Generator().manual_seed(seed),
    )


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


class LinearNet(nn.Module):
    def __init__(self, size: int = 8, classes: int = 4):
        super().__init__()
        self.fc = nn.Linear(3 * size * size, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))

    def weight(self, target: int) -> torch.Tensor:
        return (
            self.fc.weight[target]
            .detach()
            .view(1, 3, *[int((self.fc.in_features // 3) ** 0.5)] * 2)
        )


class TinyCNN(nn.Module):
    """ReLU only, so every method (guided ones, DeepLift) applies."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(6, 8, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)  # a module, so LRP's rules see the pooling
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def seeded(model: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for p in model.parameters():
        nn.init.normal_(p, std=0.5)
    return model.eval()


class ReusedRelu6(nn.Module):
    """One ReLU6 module called twice (as torchvision's ResNet blocks do with ReLU)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.ReLU6(inplace=True)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv2(self.act(self.conv1(x))))
        return self.fc(h.mean(dim=(2, 3)))


class WithSqueezeExcitation(TinyCNN):
    def __init__(self):
        super().__init__()
        self.se = SqueezeExcitation(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.se(self.features(x)).mean(dim=(2, 3)))
