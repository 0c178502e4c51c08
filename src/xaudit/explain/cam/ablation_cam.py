"""Ablation-CAM (Desai & Ramaswamy 2020): w_k = (y - y_k) / y, where y is the class logit
and y_k the logit with channel k of the layer's output set to zero.

pytorch-grad-cam zeroes a channel only when the layer's smallest activation is 0 and
otherwise sets it to (that minimum - 1e7); xaudit always zeroes, as the paper does, so on
layers with negative activations the two differ (tests pin both cases). The ablated copies
of one image run in passes of ``ctx.pass_size`` (set by the engine from its memory
budget; 64 without it). Where the layer ends a stage of the model's leading chain (ResNet's ``layer4``,
MobileNetV2's ``features.18``), only the rest of the model runs on the ablated copies: the
layers before it are computed once (checked against the model's own logits first;
``take_report()`` says which path ran). With a token reshape (``ctx.reshape``), channel k is the set of output elements
that the reshape puts into channel k, found by passing element indices through it.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import XauditError
from ..base import register
from ..fastpath import FastModel, with_replaced
from ..incremental import Injected
from ..prefix import trace_chain
from .hooks import LayerCapture
from .template import CamExplainer, CamRun

DEFAULT_PER_PASS = 64


@register("ablation_cam")
class AblationCam(CamExplainer):
    needs_gradients = False

    def __init__(self, layer: str | None = None, relu: bool = True):
        super().__init__(layer, relu)
        self._report: dict | None = None

    def take_report(self) -> dict | None:
        """Which path the last ``attribute`` call took (and why), once."""
        report, self._report = self._report, None
        return report

    def weights(self, acts: torch.Tensor, grads: torch.Tensor | None, run: CamRun) -> torch.Tensor:
        per_pass = max(1, run.ctx.pass_size or DEFAULT_PER_PASS)
        channels = channel_elements(run)  # C × (elements per channel), indices into one raw output
        y = run.logits.gather(1, run.target.view(-1, 1).to(run.logits.device)).squeeze(1).float().cpu()
        ablated = torch.empty(acts.shape[:2], dtype=torch.float32)
        with torch.no_grad():
            suffix = Suffix.build(run) if run.ctx.reshape is None else "the layer's output is reshaped"
            if isinstance(suffix, Suffix):
                self._report = {"path": "incremental", "images": len(acts), "split": suffix.name,
                                "work": suffix.work}
            else:
                self._report = {"path": "plain", "images": len(acts), "reason": suffix}
            for n in range(len(acts)):
                for start in range(0, len(channels), per_pass):
                    chunk = channels[start : start + per_pass]

                    def ablate(out: torch.Tensor, chunk: torch.Tensor = chunk) -> torch.Tensor:
                        flat = out.reshape(len(out), -1).clone()
                        flat.scatter_(1, chunk.to(flat.device), 0.0)
                        return flat.view_as(out)

                    xs = run.x[n : n + 1].expand(len(chunk), *run.x.shape[1:])
                    if isinstance(suffix, Suffix):
                        logits = suffix(xs, ablate(run.raw[n : n + 1].expand(len(chunk), *run.raw.shape[1:])))
                    else:
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


class Suffix:
    """The model after the layer: its leading-chain stages up to the layer replaced."""

    def __init__(self, name: str, net: nn.Module, inject: Injected, bf16: bool, work: float):
        self.name, self.net, self.inject, self.bf16, self.work = name, net, inject, bf16, work

    def __call__(self, xs: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        self.inject.value = acts
        try:
            with torch.autocast(xs.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                return self.net(xs).float()  # xs only stands in for the input; never read
        finally:
            self.inject.value = None

    @classmethod
    def build(cls, run: CamRun) -> Suffix | str:
        """The suffix, or why there is none (then the whole model runs on each copy)."""
        net = run.model.model if isinstance(run.model, FastModel) else run.model
        bf16 = bool(getattr(run.model, "bf16", False))
        name = next((n for n, m in net.named_modules() if m is run.layer), None)
        if not name or run.raw.dim() != 4:
            return "the layer is not a stage of the model's leading chain"
        chain, _shapes, macs, total, reason = trace_chain(net, run.x[:1])
        names = [n for n, _ in chain]
        ends = [i for i, n in enumerate(names) if n == name or n.startswith(name + ".")]
        if not ends:
            return f"{name} is not a stage of the model's leading chain ({reason})"
        k = ends[-1] + 1
        inject = Injected()
        suffix = cls(name, with_replaced(net, {n: inject if i == 0 else nn.Identity()
                                               for i, n in enumerate(names[:k])}),
                     inject, bf16, 1 - sum(macs[:k]) / max(total, 1))
        full = run.logits[:1].float()
        got = suffix(run.x[:1], run.raw[:1].clone())  # the suffix may write to its input
        spread = float((full.amax() - full.amin()).clamp_min(1e-12))
        if not float((got - full).abs().max()) <= 1e-4 * spread + 1e-6:
            return f"the model after {name} does not reproduce its logits"
        return suffix
