"""Gradient and path explainers: thin wrappers over Captum.

Each class stores its hyper-parameters and turns one ``attribute`` call into one Captum
call. What xaudit adds: baselines in the model's input space, determinism without global
RNG state, and refusal (instead of wrong numbers) where Captum's rules do not cover a model.

Stochastic methods (noise tunnel, gradient SHAP, the "noise" baseline) draw the noise of
each image from a seed derived from ``ctx.generator``'s seed and the image's bytes, so an
image's explanation does not depend on the batch it arrived in, nor on its position there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from captum.attr import (
    GradientShap,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    NoiseTunnel,
    Saliency,
)
from torch import nn

from ..errors import MethodRefused
from .base import BASELINES, EXPLAINERS, ExplainContext, Explainer, make_baseline, register

# Captum's riemann_trapezoid is left out: its weights sum to 1 - 1/n_steps (nodes at
# linspace(0, 1, n) but step 1/n), so its attributions miss completeness by that factor.
IG_METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle")
NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")


# ---------------------------------------------------------------- validation helpers


def check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_float(name: str, value: Any, minimum: float = 0.0, strict: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or (value <= minimum if strict else value < minimum):
        raise ValueError(
            f"{name} must be a number {'>' if strict else '>='} {minimum}, got {value!r}"
        )


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


# ---------------------------------------------------------------- determinism helpers


def sample_seeds(x: torch.Tensor, ctx: ExplainContext) -> list[int]:
    """One 63-bit seed per image: from the context's seed and the image's bytes."""
    base = ctx.generator.initial_seed() if ctx.generator is not None else 0
    data = x.detach().to("cpu", torch.float32).contiguous().numpy()
    seeds = []
    for image in data:
        digest = hashlib.blake2b(image.tobytes(), digest_size=8, key=str(base).encode()).digest()
        seeds.append(int.from_bytes(digest, "little") >> 1)
    return seeds


def sample_context(ctx: ExplainContext, seed: int) -> ExplainContext:
    return dataclasses.replace(ctx, generator=torch.Generator().manual_seed(seed))


@contextlib.contextmanager
def seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's and numpy's global RNGs (Captum draws from them), restoring them after."""
    devices = [device] if device.type == "cuda" else []
    np_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
            torch.manual_seed(seed)
            np.random.seed(seed & 0xFFFFFFFF)
            yield
    finally:
        np.random.set_state(np_state)


# Notices Captum prints on every call; they say nothing about the user's model or data.
CAPTUM_NOTICES = (
    r"Input Tensor \d+ did not already require gradients",
    r"Setting forward, backward hooks",
    r"Setting backward hooks on ReLU",
)


@contextlib.contextmanager
def captum_call() -> Iterator[None]:
    """Gradients on (the caller may be under ``no_grad``) and Captum's routine notices off."""
    with warnings.catch_warnings(), torch.enable_grad():
        for notice in CAPTUM_NOTICES:
            warnings.filterwarnings("ignore", message=notice)
        yield


def baseline_for(kind: str, x: torch.Tensor, ctx: ExplainContext) -> torch.Tensor:
    """``make_baseline`` with per-image noise, so batches equal per-image calls."""
    if kind != "noise":
        return make_baseline(kind, x, ctx)
    parts = [
        make_baseline(kind, x[i : i + 1], sample_context(ctx, seed))
        for i, seed in enumerate(sample_seeds(x, ctx))
    ]
    return torch.cat(parts)


# ---------------------------------------------------------------- the Captum wrapper base


class CaptumExplainer(Explainer):
    """An explainer that is one Captum attribution call: ``captum(model).attribute(x, ...)``."""

    def captum(self, model: nn.Module) -> Any:
        raise NotImplementedError

    def kwargs(self, x: torch.Tensor, ctx: ExplainContext) -> dict[str, Any]:
        return {}

    @contextlib.contextmanager
    def prepared(self, model: nn.Module, x: torch.Tensor) -> Iterator[nn.Module]:
        """Where a method must check or temporarily adapt the model (DeepLift, guided)."""
        yield model

    def attribute(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, ctx: ExplainContext
    ) -> torch.Tensor:
        with self.prepared(model, x) as ready, captum_call():
            attr = self.captum(ready).attribute(x, target=target, **self.kwargs(x, ctx))
        return attr.detach().float()


class PathExplainer(CaptumExplainer):
    """Methods with a completeness (convergence) delta."""

    def attribute(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, ctx: ExplainContext
    ) -> torch.Tensor:
        return self.attribute_with_delta(model, x, target, ctx)[0]

    def attribute_with_delta(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, ctx: ExplainContext
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with self.prepared(model, x) as ready, captum_call():
            attr, delta = self.captum(ready).attribute(
                x, target=target, return_convergence_delta=True, **self.kwargs(x, ctx)
            )
        return attr.detach().float(), delta.detach().float().reshape(-1)


# ---------------------------------------------------------------- the methods


@register("saliency")
class SaliencyExplainer(CaptumExplainer):
    def __init__(self, abs: bool = True):  # noqa: A002  (Captum's own parameter name)
        if not isinstance(abs, bool):
            raise ValueError(f"abs must be true or false, got {abs!r}")
        self.abs = abs

    def captum(self, model: nn.Module) -> Any:
        return Saliency(model)

    def kwargs(self, x: torch.Tensor, ctx: ExplainContext) -> dict[str, Any]:
        return {"abs": self.abs}


@register("input_x_gradient")
class InputXGradientExplainer(CaptumExplainer):
    def __init__(self) -> None:
        pass

    def captum(self, model: nn.Module) -> Any:
        return InputXGradient(model)


@register("integrated_gradients")
class IntegratedGradientsExplainer(PathExplainer):
    kind = "path"

    def __init__(
        self,
        n_steps: int = 32,
        baseline: str = "black",
        method: str = "gausslegendre",
        internal_batch_size: int | None = None,
    ):
        check_int("n_steps", n_steps, 1)
        check_choice("baseline", baseline, BASELINES)
        check_choice("method", method, IG_METHODS)
        if method.startswith("riemann") and n_steps < 2:
            raise ValueError(f"n_steps must be >= 2 for method {method!r}, got {n_steps}")
        check_int("internal_batch_size", internal_batch_size, 1, allow_none=True)
        self.n_steps = n_steps
        self.baseline = baseline
        self.method = method
        self.internal_batch_size = internal_batch_size

    def captum(self, model: nn.Module) -> Any:
        return IntegratedGradients(model)

    def kwargs(self, x: torch.Tensor, ctx: ExplainContext) -> dict[str, Any]:
        return {
            "baselines": baseline_for(self.baseline, x, ctx),
            "n_steps": self.n_steps,
            "method": self.method,
            "internal_batch_size": self.internal_batch_size
            if self.internal_batch_size is not None else ctx.pass_size,
        }


@register("gradient_shap")
class GradientShapExplainer(CaptumExplainer):
    """Expected gradients over a baseline distribution made of the listed kinds, per image."""

    def __init__(
        self,
        n_samples: int = 20,
        stdevs: float = 0.1,
        baselines: tuple[str, ...] = ("black", "noise"),
    ):
        check_int("n_samples", n_samples, 1)
        check_float("stdevs", stdevs)
        if isinstance(baselines, str) or not isinstance(baselines, (list, tuple)) or not baselines:
            raise ValueError(
                f"baselines must be a non-empty list of baseline kinds, got {baselines!r}"
            )
        for kind in baselines:
            check_choice("baselines", kind, BASELINES)
        self.n_samples = n_samples
        self.stdevs = stdevs
        self.baselines = tuple(baselines)

    def captum(self, model: nn.Module) -> Any:
        return GradientShap(model)

    def attribute(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, ctx: ExplainContext
    ) -> torch.Tensor:
        # One Captum call per image: the distribution (blur, noise) belongs to that image.
        method = self.captum(model)
        out = []
        for i, seed in enumerate(sample_seeds(x, ctx)):
            xi, ci = x[i : i + 1], sample_context(ctx, seed)
            dist = torch.cat([make_baseline(kind, xi, ci) for kind in self.baselines])
            with seeded_global_rng(seed, x.device), captum_call():
                attr = method.attribute(
                    xi,
                    baselines=dist,
                    n_samples=self.n_samples,
                    stdevs=self.stdevs,
                    target=target[i : i + 1],
                )
            out.append(attr.detach().float())
        return torch.cat(out)


# Elementwise activations: DeepLift's rescale rule holds for each; guided methods guide ReLU only.
ELEMENTWISE = (
    nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.ReLU6, nn.Hardtanh,
    nn.SiLU, nn.GELU, nn.Mish, nn.Hardswish, nn.Hardsigmoid,
)  # fmt: skip


def unguided_activations(model: nn.Module) -> list[str]:
    """Activation types whose backward pass Captum's guided methods leave unguided."""
    return sorted(
        {
            type(m).__name__
            for m in model.modules()
            if isinstance(m, ELEMENTWISE + (nn.PReLU, nn.SELU, nn.CELU, nn.Softsign))
        }
        - {"ReLU"}
    )


def refuse_unguided(method: str, model: nn.Module) -> None:
    other = unguided_activations(model)
    if other:
        raise MethodRefused(
            f"{method} guides the backward pass of nn.ReLU only; this model also uses "
            f"{', '.join(other)}, whose gradients would pass unguided. Use saliency, "
            f"integrated_gradients or grad_cam instead."
        )


@register("guided_backprop")
class GuidedBackpropExplainer(CaptumExplainer):
    def __init__(self) -> None:
        pass

    def captum(self, model: nn.Module) -> Any:
        return GuidedBackprop(model)

    @contextlib.contextmanager
    def prepared(self, model: nn.Module, x: torch.Tensor) -> Iterator[nn.Module]:
        refuse_unguided("guided_backprop", model)
        yield model


@register("noise_tunnel")
class NoiseTunnelExplainer(CaptumExplainer):
    """SmoothGrad / SmoothGrad² / VarGrad around any gradient or path method."""

    def __init__(
        self,
        base: str = "saliency",
        nt_type: str = "smoothgrad",
        n_samples: int = 10,
        stdev: float = 0.15,
        base_params: dict[str, Any] | None = None,
        internal_batch_size: int | None = None,
    ):
        """``internal_batch_size``: samples per forward/backward pass (noisy copies, times
        the base's integration steps for a path method); None: the engine picks it from its
        memory budget, all at once outside the engine."""
        check_choice("nt_type", nt_type, NT_TYPES)
        if internal_batch_size is not None:
            check_int("internal_batch_size", internal_batch_size, 1)
        check_int("n_samples", n_samples, 1)
        check_float("stdev", stdev, strict=True)
        if base_params is not None and not isinstance(base_params, dict):
            raise ValueError(
                f"base_params must be a mapping of the base method's parameters, got {base_params!r}"
            )
        self.base = base
        self.nt_type = nt_type
        self.n_samples = n_samples
        self.stdev = stdev
        self.base_params = base_params
        self.internal_batch_size = internal_batch_size
        self._base = self._build_base()

    def _build_base(self) -> CaptumExplainer:
        from .base import build_explainer

        allowed = [
            name
            for name in EXPLAINERS
            if issubclass(EXPLAINERS.get(name), CaptumExplainer)
            and name not in {"noise_tunnel", "gradient_shap"}
        ]
        if self.base not in allowed:
            raise ValueError(f"base must be one of {', '.join(allowed)}, got {self.base!r}")
        built = build_explainer({"name": self.base, **(self.base_params or {})})
        return built  # type: ignore[return-value]

    @property
    def label(self) -> str:
        suffix = "" if self.stdev == 0.15 else f"_s{self.stdev:g}"
        return f"noise_tunnel_{self.nt_type}_{self._base.label}{suffix}"

    def attribute(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, ctx: ExplainContext
    ) -> torch.Tensor:
        out = []
        per_pass, base_ctx = self._pass_size(x, ctx)
        with self._base.prepared(model, x) as ready:
            tunnel = NoiseTunnel(self._base.captum(ready))
            for i, seed in enumerate(sample_seeds(x, ctx)):
                xi, ci = x[i : i + 1], sample_context(base_ctx, seed)
                with seeded_global_rng(seed, x.device), captum_call():
                    attr = tunnel.attribute(
                        xi,
                        nt_type=self.nt_type,
                        nt_samples=self.n_samples,
                        nt_samples_batch_size=per_pass,
                        stdevs=self.stdev,
                        target=target[i : i + 1],
                        **self._base.kwargs(xi, ci),
                    )
                out.append(attr.detach().float())
        return torch.cat(out)

    def _pass_size(self, x: torch.Tensor, ctx: ExplainContext) -> tuple[int | None, ExplainContext]:
        """Noisy copies per Captum pass (None: all at once), and the base's context.

        The samples per pass are ``internal_batch_size``, else the engine's ``ctx.pass_size``
        (at least one image's worth). With a path method as the base, each copy costs the
        base's ``n_steps`` samples: a pass holds ``size // n_steps`` copies, and where one
        copy's steps do not fit, the base integrates in passes of ``size`` (unless its own
        parameters set one). Copies are split only into passes whose noise Captum draws as
        one draw would (whole blocks of 16 values on CPU), so on CPU the maps do not depend
        on the pass size (on GPU they are reproducible for a given size).
        """
        size = self.internal_batch_size
        if size is None and ctx.pass_size is not None:
            size = max(ctx.pass_size, len(x))
        base_ctx = dataclasses.replace(ctx, pass_size=None)
        if size is None:
            return None, base_ctx
        steps = int(getattr(self._base, "n_steps", 1) or 1)
        if size < steps:
            base_ctx = dataclasses.replace(ctx, pass_size=size)
        copies = max(1, size // steps)
        block = 16 // math.gcd(16, x[0].numel())  # copies whose noise fills whole 16-value blocks
        per_pass = max(block, copies // block * block)
        return (per_pass if per_pass < self.n_samples else None), base_ctx
