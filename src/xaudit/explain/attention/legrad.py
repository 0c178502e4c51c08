"""LeGrad (Bousselham et al., ICCV 2025): at each block l, the class score the model's own
output layers give that block's tokens, s^l = head(norm(pool(z^l))), differentiated with
respect to the block's attention probabilities A^l; positive gradients averaged over heads and
queries give one value per key token, the patch keys form the map, averaged over blocks.

torchcam 0.5's ``LeGrad`` is the oracle in the tests. The output layers (pooling, final
norm, head) come from the families table (``score``), as the attention modules do.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ...errors import MethodRefused
from ..base import ExplainContext, Explainer, register
from ..cam.hooks import target_scores
from ..cam.template import upsample_to
from .capture import AttentionCapture
from .rollout import attention_reading, patch_map


def blocks_and_scores(model: nn.Module, attention: list[nn.Module], method: str):
    """The block holding each attention module (the families table's blocks: their output
    tokens are what s^l reads) and the table's output layers, or a refusal."""
    from ...models.families import describe

    anatomy = describe(model)
    if anatomy.score is None:
        raise MethodRefused(f"{method}: the families table has no output layers for this model")
    names = {id(m): n for n, m in model.named_modules()}
    layers = [n for _, group in anatomy.blocks for n in group]
    blocks = []
    for module in attention:
        holders = [n for n in layers if names[id(module)].startswith(n + ".")]
        if not holders:
            raise MethodRefused(f"{method}: no block of the families table holds {names[id(module)]}")
        blocks.append(model.get_submodule(max(holders, key=len)))
    return blocks, anatomy.score


@register("legrad")
class LeGrad(Explainer):
    """``layers``: the last n blocks (None: all); one forward, one backward per block."""

    kind = "attention"
    needs_gradients: ClassVar[bool] = True

    def __init__(self, layers: int | None = None):
        if layers is not None and (isinstance(layers, bool) or not isinstance(layers, int) or layers < 1):
            raise ValueError(f"layers must be an integer >= 1 (the last blocks) or null (all), got {layers!r}")
        self.layers = layers

    def attribute(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, ctx: ExplainContext
    ) -> torch.Tensor:
        modules, _, prefix = attention_reading(model, self.name)
        chosen = modules if self.layers is None else modules[-self.layers :]
        blocks, score = blocks_and_scores(model, chosen, self.name)
        tokens: list[torch.Tensor | None] = [None] * len(blocks)

        def keeper(i: int):
            def hook(_m: nn.Module, _a: object, out: object) -> None:
                tokens[i] = out[0] if isinstance(out, tuple) else out

            return hook

        handles = [b.register_forward_hook(keeper(i)) for i, b in enumerate(blocks)]
        try:
            with AttentionCapture(chosen) as cap, torch.enable_grad():
                model(x.detach().requires_grad_(True))
                probs = cap.kept()
                maps = []
                for i, (z, a) in enumerate(zip(tokens, probs, strict=True)):
                    s = target_scores(score(z), target).sum()
                    (g,) = torch.autograd.grad(s, a, retain_graph=i < len(probs) - 1)
                    maps.append(g.clamp(min=0).mean(dim=(1, 2)))
        finally:
            for h in handles:
                h.remove()
        rel = torch.stack(maps).mean(dim=0)
        return upsample_to(patch_map(rel.float(), prefix, self.name), x).detach().float()
