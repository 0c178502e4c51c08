"""Each block's attention probabilities (N×heads×L×L), kept while a ``with`` block runs.

Fused kernels (timm's ``fused_attn``, transformers' SDPA, ``nn.MultiheadAttention`` with
``need_weights=False``) never materialise the probabilities, so inside the block each
attention module takes its eager path, which computes the same outputs explicitly and lets
us keep the softmax's output (still in the graph, for Chefer's gradients). Every switch is
undone on exit. Where the attention modules are comes from the families table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ...errors import MethodRefused, XauditError


class AttentionCapture:
    """Keeps ``probs[i]``: the attention probabilities of ``modules[i]`` in the last forward."""

    def __init__(self, modules: list[nn.Module]):
        self.modules = modules
        self.probs: list[torch.Tensor | None] = [None] * len(modules)
        self._undo: list[Callable[[], None]] = []

    def __enter__(self) -> AttentionCapture:
        try:
            for i, module in enumerate(self.modules):
                self._undo.extend(_eager_capture(module, self._keeper(i)))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    def _keeper(self, i: int) -> Callable[[torch.Tensor], None]:
        def keep(probs: torch.Tensor) -> None:
            if probs.dim() != 4 or probs.shape[-1] != probs.shape[-2]:
                raise XauditError(
                    f"attention block {i} gave probabilities of shape {tuple(probs.shape)}, "
                    "not N×heads×L×L"
                )
            self.probs[i] = probs

        return keep

    def kept(self) -> list[torch.Tensor]:
        missing = [i for i, p in enumerate(self.probs) if p is None]
        if missing:
            raise XauditError(
                f"attention blocks {missing} were not called by the model's forward; the "
                "families table's attention modules do not match this model"
            )
        return self.probs  # type: ignore[return-value]


def _eager_capture(module: nn.Module, keep: Callable[[torch.Tensor], None]) -> list[Callable[[], None]]:
    """Switch ``module`` to its explicit path and hook its probabilities; the undo steps."""
    if isinstance(module, nn.MultiheadAttention):
        return _mha(module, keep)
    if hasattr(module, "fused_attn") and isinstance(getattr(module, "attn_drop", None), nn.Module):
        return _timm(module, keep)
    config = getattr(module, "config", None)
    if config is not None and hasattr(config, "_attn_implementation"):
        return _transformers(module, config, keep)
    raise MethodRefused(
        f"the attention module {type(module).__name__} is none of those whose probabilities "
        "xaudit can read (timm Attention, torch nn.MultiheadAttention, transformers' ViT/DeiT "
        "attention)"
    )


def _timm(module: nn.Module, keep: Callable[[torch.Tensor], None]) -> list[Callable[[], None]]:
    # timm's eager path: softmax(q k^T * scale) -> attn_drop -> @ v; attn_drop's output is
    # the matrix that multiplies v (dropout is off in eval)
    fused = module.fused_attn
    module.fused_attn = False
    handle = module.attn_drop.register_forward_hook(lambda _m, _a, out: keep(out))

    def undo() -> None:
        handle.remove()
        module.fused_attn = fused

    return [undo]


def _mha(module: nn.MultiheadAttention, keep: Callable[[torch.Tensor], None]) -> list[Callable[[], None]]:
    if not module.batch_first:
        raise MethodRefused("attention methods read nn.MultiheadAttention with batch_first=True only")

    def ask_weights(_m: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict]:
        # the weights per head, as F.multi_head_attention_forward multiplies them with v
        return args, {**kwargs, "need_weights": True, "average_attn_weights": False}

    pre = module.register_forward_pre_hook(ask_weights, with_kwargs=True)
    post = module.register_forward_hook(lambda _m, _a, out: keep(out[1]))
    return [pre.remove, post.remove]


def _transformers(module: nn.Module, config: Any, keep: Callable[[torch.Tensor], None]) -> list[Callable[[], None]]:
    # transformers picks the kernel from the (shared) config at each call; eager returns the
    # probabilities as the module's second output
    before = config._attn_implementation
    config._attn_implementation = "eager"

    def read(_m: nn.Module, _a: Any, out: Any) -> None:
        probs = out[1] if isinstance(out, tuple) and len(out) > 1 else None
        if not isinstance(probs, torch.Tensor):
            raise MethodRefused(
                f"{type(module).__name__} returned no attention probabilities on its eager path; "
                "this transformers version is not one xaudit's attention methods read"
            )
        keep(probs)

    handle = module.register_forward_hook(read)

    def undo() -> None:
        handle.remove()
        config._attn_implementation = before

    return [undo]
