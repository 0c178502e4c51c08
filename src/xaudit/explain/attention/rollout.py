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


def readout_row(n: int, length: int, readout: tuple[int, ...] | str, prefix: int,
                device: torch.device) -> torch.Tensor:
    """N×1×L: the mean of the one-hot rows of the tokens the head reads."""
    row = torch.zeros(length, device=device)
    if readout == "avg":
        row[prefix:] = 1.0 / (length - prefix)
    else:
        row[list(readout)] = 1.0 / len(readout)
    return row.expand(n, 1, length)


# Both relevances are products of one L×L matrix per block, the last block leftmost; only the
# readout row of the product is read, so it is carried from the left: N·L² work per block,
# not N·L³ for the whole matrix.


def rollout_relevance(probs: list[torch.Tensor], row: torch.Tensor,
                      head_fusion: str = "mean") -> torch.Tensor:
    """Abnar & Zuidema: row · Π_l normalise(0.5·fuse_h(A_l) + 0.5·I), the last block leftmost."""
    for a in reversed(probs):
        fused = getattr(a.float(), head_fusion)(dim=1)
        fused = fused.values if head_fusion != "mean" else fused
        step = 0.5 * fused + 0.5 * torch.eye(fused.shape[-1], device=fused.device)  # the residual
        row = row @ (step / step.sum(dim=-1, keepdim=True))
    return row[:, 0]


def chefer_relevance(probs: list[torch.Tensor], grads: list[torch.Tensor],
                     row: torch.Tensor) -> torch.Tensor:
    """Chefer et al. (2021), eq. 5-6: R ← R + Ā·R from R = I, Ā = E_h[(∇A ⊙ A)⁺]; that is
    R = Π_b (I + Ā_b), read at ``row``."""
    for a, g in zip(reversed(probs), reversed(grads), strict=True):
        row = row + row @ (g.float() * a.float()).clamp(min=0).mean(dim=1)
    return row[:, 0]


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


def patch_map(values: torch.Tensor, prefix: int, method: str) -> torch.Tensor:
    """N×L readout relevance -> N×1×h×w at the patch tokens."""
    values = values[:, prefix:]
    n, patches = values.shape
    side = math.isqrt(patches)
    if side * side != patches:
        raise MethodRefused(
            f"{method}: {patches + prefix} tokens less {prefix} prefix tokens are not a square "
            "grid of patches"
        )
    return values.reshape(n, 1, side, side)


class AttentionExplainer(Explainer):
    """One forward (and, with gradients, one backward) per batch, the attention kept."""

    kind = "attention"
    needs_gradients: ClassVar[bool] = False

    def relevance(self, probs: list[torch.Tensor], grads: list[torch.Tensor] | None,
                  row: torch.Tensor) -> torch.Tensor:
        """N×L: the readout row of the method's token-to-token relevance."""
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
        n, length = probs[0].shape[0], probs[0].shape[-1]
        row = readout_row(n, length, readout, prefix, probs[0].device)
        rel = self.relevance([p.detach() for p in probs], grads, row)
        return upsample_to(patch_map(rel, prefix, self.name), x).detach().float()


@register("attention_rollout")
class AttentionRollout(AttentionExplainer):
    def __init__(self, head_fusion: str = "mean"):
        if head_fusion not in HEAD_FUSIONS:
            raise ValueError(f"head_fusion must be one of {', '.join(HEAD_FUSIONS)}, got {head_fusion!r}")
        self.head_fusion = head_fusion

    @property
    def label(self) -> str:
        return self.name if self.head_fusion == "mean" else f"{self.name}_{self.head_fusion}"

    def relevance(self, probs, grads, row):
        return rollout_relevance(probs, row, self.head_fusion)


@register("chefer")
class Chefer(AttentionExplainer):
    needs_gradients: ClassVar[bool] = True

    def __init__(self) -> None:
        pass

    def relevance(self, probs, grads, row):
        return chefer_relevance(probs, grads, row)
