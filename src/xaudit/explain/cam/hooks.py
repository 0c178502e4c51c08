"""Forward hooks that keep a layer's output for CAM methods, released by a ``with`` block.

The hook keeps the layer's output and hands the rest of the model a clone of it: gradients
are taken with respect to the kept output, so a model that later modifies its input in
place (VGG's ``ReLU(inplace=True)``, DenseNet's ``F.relu(features, inplace=True)``) changes
neither the kept activations nor their gradients. Captum's layer methods do the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ...errors import XauditError


class LayerCapture:
    """Keeps the last output of each of ``layers`` (``outputs[i]``) while the block runs.

    ``replace``, when set, maps a layer's output to the tensor the model continues with
    (Ablation-CAM's ablated activations); what is kept is then the original output.
    """

    def __init__(self, layers: Sequence[nn.Module], grad: bool = True,
                 replace: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.layers = list(layers)
        self.grad = grad
        self.replace = replace
        self.outputs: list[torch.Tensor | None] = [None] * len(self.layers)
        self._handles: list[Any] = []

    def __enter__(self) -> LayerCapture:
        for i, layer in enumerate(self.layers):
            self._handles.append(layer.register_forward_hook(self._hook(i)))
        return self

    def __exit__(self, *_exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, i: int) -> Callable[..., torch.Tensor]:
        def hook(_module: nn.Module, _args: Any, out: Any) -> torch.Tensor:
            if not isinstance(out, torch.Tensor):
                raise XauditError(
                    f"the CAM layer returns {type(out).__name__}, not a tensor; name a layer "
                    f"with one tensor output (explain.layer)."
                )
            if self.grad and torch.is_grad_enabled() and not out.requires_grad:
                out.requires_grad_(True)  # frozen weights below the layer: still differentiable here
            self.outputs[i] = out
            passed = out.clone()
            return passed if self.replace is None else self.replace(passed)

        return hook


def target_scores(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """logits[n, target[n]] for each image n."""
    return logits.gather(1, target.view(-1, 1).to(logits.device)).squeeze(1)


def activations_and_gradients(
    model: nn.Module, layer: nn.Module, x: torch.Tensor, target: torch.Tensor, gradients: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """The layer's output for ``x``, d(Σ target logits)/d(output) (None if not wanted), logits."""
    with LayerCapture([layer], grad=gradients) as cap:
        if not gradients:
            with torch.no_grad():
                logits = model(x)
            return _kept(cap).detach(), None, logits.detach()
        with torch.enable_grad():
            logits = model(x)
            acts = _kept(cap)
            (grads,) = torch.autograd.grad(target_scores(logits, target).sum(), acts)
    return acts.detach(), grads.detach(), logits.detach()


def _kept(cap: LayerCapture) -> torch.Tensor:
    if cap.outputs[0] is None:
        raise XauditError("the CAM layer was not called by the model's forward; name another layer.")
    return cap.outputs[0]
