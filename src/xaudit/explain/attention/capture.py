"""Each block's attention probabilities (N×heads×L×L), kept while a ``with`` block runs.

Fused kernels (timm's ``fused_attn``, transformers' SDPA, ``nn.MultiheadAttention`` with
``need_weights=False``) never materialise the probabilities, so inside the block each
attention module takes its eager path, which computes the same outputs explicitly and lets
us keep the softmax's output (still in the graph, for Chefer's gradients). Every switch is
undone on exit. Where the attention modules are comes from the families table.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
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
    # The weights nn.MultiheadAttention returns are a view made after they multiplied v, so
    # no gradient reaches them: the module runs this explicit forward instead (same equations
    # as F.multi_head_attention_forward), whose probabilities are the ones used.
    unsupported = [why for why, bad in (
        ("batch_first=False", not module.batch_first),
        ("separate key/value sizes", not module._qkv_same_embed_dim),
        ("bias_k/bias_v", module.bias_k is not None),
        ("add_zero_attn", module.add_zero_attn),
    ) if bad]
    if unsupported:
        raise MethodRefused(f"attention methods read nn.MultiheadAttention without {', '.join(unsupported)}")

    def eager(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
              average_attn_weights=True, is_causal=False):
        if key_padding_mask is not None or attn_mask is not None or is_causal:
            raise MethodRefused("attention methods read unmasked self-attention only")
        n, length, dim = query.shape
        heads, w, b = module.num_heads, module.in_proj_weight, module.in_proj_bias
        bq, bk, bv = b.chunk(3) if b is not None else (None, None, None)
        split = lambda t: t.reshape(n, -1, heads, dim // heads).transpose(1, 2)  # noqa: E731
        q = split(F.linear(query, w[:dim], bq)) * (dim // heads) ** -0.5
        k, v = split(F.linear(key, w[dim : 2 * dim], bk)), split(F.linear(value, w[2 * dim :], bv))
        probs = F.dropout((q @ k.transpose(-2, -1)).softmax(dim=-1), module.dropout, module.training)
        keep(probs)
        out = F.linear((probs @ v).transpose(1, 2).reshape(n, length, dim),
                       module.out_proj.weight, module.out_proj.bias)
        weights = (probs.mean(dim=1) if average_attn_weights else probs) if need_weights else None
        return out, weights

    module.forward = eager  # an instance attribute: the class's forward is untouched

    def undo() -> None:
        del module.forward

    return [undo]


def _transformers(module: nn.Module, config: object, keep: Callable[[torch.Tensor], None]) -> list[Callable[[], None]]:
    # transformers picks the kernel from the (shared) config at each call; eager returns the
    # probabilities as the module's second output
    before = config._attn_implementation
    config._attn_implementation = "eager"

    def read(_m: nn.Module, _a: object, out: object) -> None:
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
