"""Attention rollout (Abnar & Zuidema 2020) and Chefer et al.'s gradient-weighted relevance
(ICCV 2021, "generic attention-model explainability") for vision transformers.

Both multiply one token-to-token matrix per block, input to output, and read the row of the
tokens the head reads (the class token; class and distillation tokens averaged; or the mean
of the patch rows under average pooling) at the patch columns: one value per patch, on the
patch grid, bilinearly upsampled to the input. Which modules hold the attention, how many
prefix tokens (class, distillation, registers) lead the sequence and what the head reads
come from the families table. A model without global self-attention is refused.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from ...errors import MethodRefused
from ..base import ExplainContext, Explainer, register
from ..cam.hooks import target_scores
from ..cam.template import upsample_to
from .capture import AttentionCapture

HEAD_FUSIONS = ("mean", "max", "min")


def rollout_relevance(probs: list[torch.Tensor], head_fusion: str = "mean") -> torch.Tensor:
    """Abnar & Zuidema: Π_l normalise(0.5·fuse_h(A_l) + 0.5·I), the last block leftmost."""
    rel = None
    for a in probs:
        fused = getattr(a.float(), head_fusion)(dim=1)
        fused = fused.values if head_fusion != "mean" else fused
        eye = torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
        step = 0.5 * fused + 0.5 * eye  # the residual connection, as an identity
        step = step / step.sum(dim=-1, keepdim=True)
        rel = step if rel is None else step @ rel
    return rel


def chefer_relevance(probs: list[torch.Tensor], grads: list[torch.Tensor]) -> torch.Tensor:
    """Chefer et al. (2021), eq. 5-6: R ← R + Ā·R from R = I, Ā = E_h[(∇A ⊙ A)⁺]."""
    rel = None
    for a, g in zip(probs, grads, strict=True):
        bar = (g.float() * a.float()).clamp(min=0).mean(dim=1)
        if rel is None:
            rel = torch.eye(bar.shape[-1], dtype=bar.dtype, device=bar.device).expand_as(bar)
        rel = rel + bar @ rel
    return rel


def attention_reading(model: nn.Module, method: str) -> tuple[list[nn.Module], tuple[int, ...] | str, int]:
    """The attention modules, the tokens the head reads and the prefix tokens, or a refusal."""
    from ...models.families import describe

    anatomy = describe(model)
    if not anatomy.attention:
        why = anatomy.no_attention or (
            "it has no global self-attention that xaudit knows of (timm ViT/DeiT, torchvision "
            "ViT, transformers ViT/DeiT)"
        )
        raise MethodRefused(
            f"{method} cannot explain {type(model).__name__} (family {anatomy.family}): {why}. "
            "Use grad_cam, integrated_gradients or occlusion instead."
        )
    if isinstance(anatomy.readout, str) and anatomy.readout != "avg":
        raise MethodRefused(
            f"{method}: the head reads {anatomy.readout}; attention relevance is defined for a "
            "class token (or class and distillation tokens) or the mean of the patch tokens"
        )
    modules = [model.get_submodule(n) for n in anatomy.attention]
    return modules, anatomy.readout, anatomy.prefix_tokens


def patch_map(rel: torch.Tensor, readout: tuple[int, ...] | str, prefix: int, method: str) -> torch.Tensor:
    """N×L×L relevance -> N×1×h×w: the readout rows at the patch columns."""
    rows = rel[:, prefix:] if readout == "avg" else rel[:, list(readout)]
    values = rows.mean(dim=1)[:, prefix:]
    n, patches = values.shape
    side = math.isqrt(patches)
    if side * side != patches:
        raise MethodRefused(
            f"{method}: {rel.shape[-1]} tokens less {prefix} prefix tokens are not a square grid "
            "of patches"
        )
    return values.reshape(n, 1, side, side)


class AttentionExplainer(Explainer):
    """One forward (and, with gradients, one backward) per batch, the attention kept."""

    kind = "attention"
    needs_gradients: ClassVar[bool] = False

    def relevance(self, probs: list[torch.Tensor], grads: list[torch.Tensor] | None) -> torch.Tensor:
        raise NotImplementedError

    def attribute(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, ctx: ExplainContext
    ) -> torch.Tensor:
        modules, readout, prefix = attention_reading(model, self.name)
        grads = None
        with AttentionCapture(modules) as cap:
            if self.needs_gradients:
                with torch.enable_grad():
                    # x in the graph, so frozen weights still give the attention a gradient
                    logits = model(x.detach().requires_grad_(True))
                    probs = cap.kept()
                    grads = torch.autograd.grad(target_scores(logits, target).sum(), probs)
            else:
                with torch.no_grad():
                    model(x)
                probs = cap.kept()
        rel = self.relevance([p.detach() for p in probs], grads)
        return upsample_to(patch_map(rel, readout, prefix, self.name), x).detach().float()


@register("attention_rollout")
class AttentionRollout(AttentionExplainer):
    def __init__(self, head_fusion: str = "mean"):
        if head_fusion not in HEAD_FUSIONS:
            raise ValueError(f"head_fusion must be one of {', '.join(HEAD_FUSIONS)}, got {head_fusion!r}")
        self.head_fusion = head_fusion

    @property
    def label(self) -> str:
        return self.name if self.head_fusion == "mean" else f"{self.name}_{self.head_fusion}"

    def relevance(self, probs, grads):
        return rollout_relevance(probs, self.head_fusion)


@register("chefer")
class Chefer(AttentionExplainer):
    needs_gradients: ClassVar[bool] = True

    def __init__(self) -> None:
        pass

    def relevance(self, probs, grads):
        return chefer_relevance(probs, grads)
