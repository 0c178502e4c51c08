"""Explainer protocol, Explanation dataclass, baselines in the model's input space, registry.

Captum does the mathematics; xaudit owns batching, targets, baselines and storage.
An explainer is a small class whose constructor only stores hyper-parameters and whose
``attribute(model, x, target, ctx)`` returns an attribution tensor of shape N×C×H×W
(C = 1 for CAM methods, upsampled to the input size).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from ..errors import ConfigError, echo, shown
from ..registry import Registry, did_you_mean

if TYPE_CHECKING:
    from ..models.classifier import Classifier


@dataclass
class ExplainContext:
    """What an explainer needs beyond the model and the batch."""

    mean: torch.Tensor  # (C,) normalisation mean, pixel space [0, 1]
    std: torch.Tensor  # (C,)
    target_layer: nn.Module | None = None  # for CAM / layer methods
    layers: dict[str, nn.Module] = field(default_factory=dict)  # named layers of the model
    generator: torch.Generator | None = None
    dataset_mean: torch.Tensor | None = None  # (C,) pixel-space mean of the training images
    # CAM methods: the target layer's output (N×L×C tokens, N×H×W×C, ...) -> N×C×h×w,
    # applied to its activations and gradients alike; None leaves 4-D outputs as they are
    reshape: Callable[[torch.Tensor], torch.Tensor] | None = None
    cam_hint: str = ""  # why no target layer is known, and which setting names one
    # Samples per forward(/backward) pass, chosen by the engine from its memory budget and
    # handed over here so that the explainer's own parameters never change; None: the
    # method's own setting (perturbations_per_eval, internal_batch_size, or all at once).
    pass_size: int | None = None
    # Training images (uint8, or floats in [0, 1]; N×C×H×W at the input size) that
    # expected_gradients draws its baselines from; None: none given
    references: torch.Tensor | None = None

    def pixel_to_input(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean.view(1, -1, 1, 1).to(pixels)) / self.std.view(1, -1, 1, 1).to(pixels)

    def input_to_pixel(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std.view(1, -1, 1, 1).to(x) + self.mean.view(1, -1, 1, 1).to(x)


def context_for(clf: Classifier, generator: torch.Generator | None = None,
                dataset_mean: torch.Tensor | None = None,
                references: torch.Tensor | None = None) -> ExplainContext:
    """The context every method gets for ``clf``: its normalisation, CAM layer and grid
    reshape (from the families table or the user's settings), and its named layers."""
    layers = dict(clf.module.named_modules())
    return ExplainContext(
        mean=torch.tensor(clf.preprocessing.mean), std=torch.tensor(clf.preprocessing.std),
        target_layer=layers.get(clf.cam_layer) if clf.cam_layer else None, layers=layers,
        generator=generator, dataset_mean=dataset_mean, reshape=clf.reshape,
        cam_hint=_cam_hint(clf), references=references,
    )


def _cam_hint(clf: Classifier) -> str:
    if clf.cam_layer is not None:
        return ""
    convs = [n for n, m in clf.module.named_modules() if isinstance(m, nn.Conv2d)]
    example = f" (e.g. its last convolution {convs[-1]!r})" if convs else ""
    return (f"xaudit does not know the CAM layer of {type(clf.module).__name__} (family "
            f"{clf.family}); set it with Classifier(..., cam_layer='...') or model.target_layer"
            f"{example}")


BASELINES = ("black", "blur", "noise", "mean", "zero")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """torchvision's Gaussian blur (reflect padding, radius 3σ) of an N×C×H×W tensor; on tiny
    images the kernel shrinks to what reflect padding allows."""
    radius = min(max(1, int(round(3 * sigma))), x.shape[-1] - 1, x.shape[-2] - 1)
    if radius < 1:
        return x.clone()
    size = 2 * radius + 1
    return TF.gaussian_blur(x, [size, size], [float(sigma), float(sigma)])


def make_baseline(kind: str, x: torch.Tensor, ctx: ExplainContext, sigma: float | None = None) -> torch.Tensor:
    """A baseline for ``x`` (already normalised), built in the model's input space.

    black: a black image after normalisation; zero: zeros in normalised space (the ImageNet
    mean colour); blur: ``x`` blurred (sigma defaults to 1/20 of the image side); noise:
    uniform pixel noise, normalised; mean: the training set's mean colour (ImageNet mean
    when unknown).
    """
    if kind == "black":
        return ctx.pixel_to_input(torch.zeros_like(x))
    if kind == "zero":
        return torch.zeros_like(x)
    if kind == "blur":
        return gaussian_blur(x, sigma or max(1.0, x.shape[-1] / 20))
    if kind == "noise":
        noise = torch.rand(x.shape, generator=ctx.generator, dtype=x.dtype, device="cpu").to(x.device)
        return ctx.pixel_to_input(noise)
    if kind == "mean":
        mean = ctx.dataset_mean if ctx.dataset_mean is not None else ctx.mean
        pixels = mean.view(1, -1, 1, 1).to(x).expand_as(x)
        return ctx.pixel_to_input(pixels.clone())
    raise ConfigError(f"unknown baseline {echo(kind)}. Allowed: {', '.join(BASELINES)}.{did_you_mean(kind, list(BASELINES))}")


@dataclass
class Explanation:
    """Attributions of one method for a batch (or a whole selection) of images."""

    method: str  # the method's label, e.g. "integrated_gradients" or "occlusion_w15"
    attributions: torch.Tensor  # N×C×H×W float32, on CPU
    targets: torch.Tensor  # (N,) class indices explained
    ids: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    delta: torch.Tensor | None = None  # (N,) completeness delta for path methods
    seconds: float = 0.0
    model_evals: int = 0  # forward passes counted in images (one image = one eval)

    def maps(self) -> torch.Tensor:
        """N×H×W signed maps: attributions summed over channels."""
        return self.attributions.sum(dim=1)


class Explainer:
    """Base class: the constructor stores hyper-parameters; ``attribute`` does the work.

    Subclasses set ``name`` (the registry key), ``kind`` ("gradient", "path", "cam",
    "perturbation", "layer") and implement ``attribute``. Path methods also return the
    convergence delta from ``attribute_with_delta``.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "gradient"
    needs_gradients: ClassVar[bool] = True

    def params(self) -> dict[str, Any]:
        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k != "self" and hasattr(self, k)}

    @property
    def label(self) -> str:
        """Unique label of this configured method (used for storage and figures)."""
        return self.name

    def attribute(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, ctx: ExplainContext
    ) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement attribute()")

    def attribute_with_delta(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, ctx: ExplainContext
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.attribute(model, x, target, ctx), None


EXPLAINERS: Registry[type[Explainer]] = Registry("explanation method")


def register(name: str) -> Callable[[type[Explainer]], type[Explainer]]:
    def decorator(cls: type[Explainer]) -> type[Explainer]:
        cls.name = name
        return EXPLAINERS.register(name)(cls)

    return decorator


def constructor_params(cls: type) -> list[str]:
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


def build_explainer(spec: dict[str, Any] | str) -> Explainer:
    """``{"name": "occlusion", "window": 15}`` -> a configured explainer; clear errors."""
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(f"explain.methods: each entry needs a 'name', got {echo(spec)}")
    if not isinstance(spec["name"], str):
        raise ConfigError(f"explain.methods: a method's name must be text, got {echo(spec['name'])}")
    params = {k: v for k, v in spec.items() if k != "name"}
    cls = EXPLAINERS.get(spec["name"])
    allowed = constructor_params(cls)
    for key in params:
        if key not in allowed:
            raise ConfigError(
                f"explain.methods: {spec['name']} has no parameter {echo(key)}. "
                f"Allowed: {', '.join(allowed) or '(none)'}.{did_you_mean(shown(key), allowed)}"
            )
    try:
        return cls(**params)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"explain.methods: {spec['name']}: {shown(str(err), 300)}") from None


def validate_method_specs(specs: list[dict[str, Any]]) -> list[Explainer]:
    explainers = [build_explainer(s) for s in specs]
    labels = [e.label for e in explainers]
    dupes = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dupes:
        raise ConfigError(f"explain.methods: configured twice with the same label: {', '.join(dupes)}")
    return explainers


@contextlib.contextmanager
def swapped_modules(model: nn.Module, replace: dict[nn.Module, nn.Module]) -> Iterator[None]:
    """Temporarily replace child modules (by identity) wherever they are attached."""
    swaps = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in list(parent._modules.items())
        if child is not None and child in replace
    ]
    try:
        for parent, name, child in swaps:
            parent._modules[name] = replace[child]
        yield
    finally:
        for parent, name, child in swaps:
            parent._modules[name] = child
