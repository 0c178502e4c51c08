"""Ablation-CAM (Desai & Ramaswamy 2020): w_k = (y - y_k) / y, where y is the class logit
and y_k the logit with channel k of the layer's output set to zero.

pytorch-grad-cam zeroes a channel only when the layer's smallest activation is 0 and
otherwise sets it to (that minimum - 1e7); xaudit always zeroes, as the paper does, so on
layers with negative activations the two differ (tests pin both cases). The ablated copies
of one image run in passes of ``samples_per_pass`` (set by the engine from its memory
budget). With a token reshape (``ctx.reshape``), channel k is the set of output elements
that the reshape puts into channel k, found by passing element indices through it.
"""

from __future__ import annotations

import torch

from ...errors import XauditError
from ..base import register
from .hooks import LayerCapture
from .template import CamExplainer, CamRun

DEFAULT_PER_PASS = 64


@register("ablation_cam")
class AblationCam(CamExplainer):
    needs_gradients = False

    def __init__(self, layer: str | None = None, relu: bool = True):
        super().__init__(layer, relu)
        self.samples_per_pass: int | None = None  # ablated copies per forward; None: 64

    def weights(self, acts: torch.Tensor, grads: torch.Tensor | None, run: CamRun) -> torch.Tensor:
        per_pass = max(1, self.samples_per_pass or DEFAULT_PER_PASS)
        channels = channel_elements(run)  # C × (elements per channel), indices into one raw output
        y = run.logits.gather(1, run.target.view(-1, 1).to(run.logits.device)).squeeze(1).float().cpu()
        ablated = torch.empty(acts.shape[:2], dtype=torch.float32)
        with torch.no_grad():
            for n in range(len(acts)):
                for start in range(0, len(channels), per_pass):
                    chunk = channels[start : start + per_pass]

                    def ablate(out: torch.Tensor, chunk: torch.Tensor = chunk) -> torch.Tensor:
                        flat = out.reshape(len(out), -1).clone()
                        flat.scatter_(1, chunk.to(flat.device), 0.0)
                        return flat.view_as(out)

                    xs = run.x[n : n + 1].expand(len(chunk), *run.x.shape[1:])
                    with LayerCapture([run.layer], grad=False, replace=ablate):
                        logits = run.model(xs)
                    ablated[n, start : start + len(chunk)] = logits[:, int(run.target[n])].float().cpu()
        return ((y[:, None] - ablated) / y[:, None]).to(acts.device)


def channel_elements(run: CamRun) -> torch.Tensor:
    """For each channel of the reshaped output, the flat indices of its raw output elements."""
    one = run.raw[:1]
    if run.ctx.reshape is None:
        index = torch.arange(one.numel(), dtype=torch.float64).view(one.shape)
    else:
        index = run.ctx.reshape(torch.arange(one.numel(), dtype=torch.float64).view(one.shape))
    if index.dim() != 4 or not bool((index == index.round()).all()):
        raise XauditError(
            "ablation_cam: the reshape must only move or drop the layer's "
            f"elements (got {tuple(index.shape)} or mixed values), so that a channel can be ablated."
        )
    return index[0].flatten(1).long()
