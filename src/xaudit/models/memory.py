"""Will the model's passes at the recipe's image size and batch sizes fit in memory?

Measured, not guessed: one image runs through the model under PyTorch's fake tensors, which
give every activation its real shape without allocating it. The figures are lower bounds
(a gradient pass keeps at least the activations; a forward pass holds at least a layer's input
and output), so a refusal means the run could not finish, never that it merely might not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError

GIB = 2**30


@dataclass(frozen=True)
class Activations:
    """Bytes of activations one image produces: all of them, and the largest single one."""

    total: int
    largest: int

    def forward(self, batch: int) -> int:
        """At least what a no-gradient forward of ``batch`` images holds at its peak."""
        return 2 * self.largest * batch

    def backward(self, batch: int) -> int:
        """At least what a gradient pass of ``batch`` images keeps for the backward."""
        return self.total * batch


def measure(module: nn.Module, image_size: int) -> Activations | None:
    """Activations of one ``image_size`` image; None when the model cannot run on fake tensors
    (the check is then left out: it is a guard, the run itself is not changed)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    sizes: list[int] = []

    def hook(_mod, _inp, out) -> None:
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                sizes.append(t.numel() * t.element_size())

    leaves = [m for m in module.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad(), FakeTensorMode(allow_non_fake_inputs=True):
            module(torch.empty(1, 3, image_size, image_size))
    except Exception:  # noqa: BLE001 - fake tensors do not cover every op a model may use
        return None
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    return Activations(sum(sizes), max(sizes)) if sizes else None


def available_bytes(device: torch.device) -> int | None:
    """Memory a run can still take on ``device``; None where it cannot be read."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_fits(module: nn.Module, image_size: int, batches: dict[str, tuple[int, bool]],
               device: torch.device) -> None:
    """Refuse, naming the key, a run whose passes cannot fit in memory. ``batches`` maps a
    recipe key to (batch size, with gradients); one image's gradient pass (the explanations)
    is always checked, under ``model.image_size``."""
    free = available_bytes(device)
    if free is None:
        return
    acts = measure(module, image_size)
    if acts is None:
        return
    if acts.backward(1) > free:
        raise ConfigError(
            f"model.image_size {image_size}: one image's gradient pass through this model keeps "
            f"at least {acts.backward(1) / GIB:.1f} GiB of activations, more than the "
            f"{free / GIB:.1f} GiB of memory available; use a smaller model.image_size"
        )
    for key, (batch, grad) in batches.items():
        need = acts.backward(batch) if grad else acts.forward(batch)
        if need > free:
            per = acts.backward(1) if grad else acts.forward(1)
            fits = max(1, free // per)
            raise ConfigError(
                f"{key} {batch} at model.image_size {image_size}: a batch's "
                f"{'gradient' if grad else 'forward'} pass needs at least {need / GIB:.1f} GiB, "
                f"more than the {free / GIB:.1f} GiB of memory available; at most {fits} "
                f"images per batch fit"
            )
