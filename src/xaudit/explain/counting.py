"""Counting model evaluations (images through the model's forward), for cost reporting."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from torch import nn


@dataclass
class EvalCount:
    n: int = 0  # images passed through the model's forward


@contextmanager
def count_model_evals(model: nn.Module):
    """Count images through ``model.forward`` while the block runs (a forward pre-hook)."""
    count = EvalCount()

    def hook(_module, args, kwargs=None):
        first = args[0] if args else next(iter((kwargs or {}).values()), None)
        if first is not None and hasattr(first, "shape") and len(first.shape) > 0:
            count.n += int(first.shape[0])

    handle = model.register_forward_pre_hook(hook)
    try:
        yield count
    finally:
        handle.remove()
