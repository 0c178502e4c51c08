"""Score-CAM (Wang et al. 2020): each channel, upsampled and scaled to [0, 1], masks the
image; the class score of the masked image is the channel's weight (softmax over channels).

As pytorch-grad-cam: masks upsampled with ``align_corners=True``, scaled by
(A - min) / (max - min + 1e-8), the class logit (not its probability) scored, weights
the softmax of those logits over the channels. What xaudit does differently is how:
the masked images of one image go through the model in passes of ``ctx.pass_size``
(set by the engine from its memory budget, halved on out-of-memory; 64 without it), built pass by pass
rather than all at once; and channels whose mask is all zero (constant activations) share
one forward of the blank image instead of one each.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..base import register
from .template import CamExplainer, CamRun

DEFAULT_PER_PASS = 64


@register("score_cam")
class ScoreCam(CamExplainer):
    needs_gradients = False

    def weights(self, acts: torch.Tensor, grads: torch.Tensor | None, run: CamRun) -> torch.Tensor:
        per_pass = max(1, run.ctx.pass_size or DEFAULT_PER_PASS)
        size = tuple(run.x.shape[-2:])
        scores = torch.empty(acts.shape[:2], dtype=torch.float32)
        blank: torch.Tensor | None = None  # logits of the all-zero image, run once
        with torch.no_grad():
            for n in range(len(acts)):
                t = int(run.target[n])
                for start in range(0, acts.shape[1], per_pass):
                    masks = score_masks(acts[n, start : start + per_pass], size)
                    empty = masks.flatten(1).amax(1) == 0
                    live = (~empty).nonzero().flatten()
                    part = torch.empty(len(masks), dtype=torch.float32)
                    if len(live):
                        logits = run.model(run.x[n : n + 1] * masks[live, None].to(run.x.dtype))
                        part[live] = logits[:, t].float().cpu()
                    if bool(empty.any()):
                        if blank is None:
                            blank = run.model(torch.zeros_like(run.x[:1]))[0].float().cpu()
                        part[empty] = blank[t]
                    scores[n, start : start + len(masks)] = part
        return torch.softmax(scores, dim=1).to(acts.device)


def score_masks(acts: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """C×h×w activations of one image -> C×H×W masks in [0, 1]."""
    up = F.interpolate(acts[None].float(), size=size, mode="bilinear", align_corners=True)[0]
    flat = up.flatten(1)
    lo, hi = flat.amin(1)[:, None, None], flat.amax(1)[:, None, None]
    return (up - lo) / (hi - lo + 1e-8)
