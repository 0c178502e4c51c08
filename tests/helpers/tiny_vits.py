"""Tiny vision transformers of each family (timm, torchvision, transformers) and images for
them, shared by the attention-method tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import xaudit
from xaudit.explain import build_explainer
from xaudit.explain.base import context_for

SMALL = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 48, "num_heads": 2}


def timm_vit(name: str = "vit_small_patch16_224", **extra) -> xaudit.Classifier:
    torch.manual_seed(0)
    return xaudit.Classifier.from_timm(name, pretrained=False, classes=["a", "b", "c"],
                                       model_args={**SMALL, **extra})


def images(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def explain(clf: xaudit.Classifier, name: str, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return build_explainer(name).attribute(clf.module, x, t, context_for(clf))


def transformers_vit(teacher: bool = False, implementation: str = "sdpa") -> xaudit.Classifier:
    transformers = pytest.importorskip("transformers")
    from xaudit.data.transforms import Preprocessing

    torch.manual_seed(0)
    kind = "DeiT" if teacher else "ViT"
    config = getattr(transformers, f"{kind}Config")(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=3)
    config._attn_implementation = implementation
    cls = "DeiTForImageClassificationWithTeacher" if teacher else "ViTForImageClassification"
    model = getattr(transformers, cls)(config).eval()
    return xaudit.Classifier.from_transformers(
        model, preprocessing=Preprocessing(32, 32, (0.5,) * 3, (0.5,) * 3))


def torchvision_vit() -> xaudit.Classifier:
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    tv = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                           mlp_dim=32, num_classes=3).eval()
    nn.init.normal_(tv.heads.head.weight)  # torchvision starts the head at zero: no gradient
    return xaudit.Classifier.from_module(tv, ["a", "b", "c"], image_size=32)


MODELS = {
    "timm-vit": timm_vit,
    "timm-deit-distilled": lambda: timm_vit("deit_tiny_distilled_patch16_224"),
    "timm-vit-avg-pool": lambda: timm_vit(global_pool="avg", class_token=False),
    "torchvision-vit": torchvision_vit,
    "transformers-vit": transformers_vit,
    "transformers-deit-teacher": lambda: transformers_vit(teacher=True),
}
