"""Captum's infidelity and max-sensitivity on the audit's maps, with each image's noise drawn
from its own seed (``draws.py``), so that every map of an image sees the same perturbations."""

from __future__ import annotations

import numpy as np
import torch
from captum.metrics import infidelity, sensitivity_max
from torch import Tensor, nn

from ..explain.base import ExplainContext, Explainer
from ..explain.fastpath import FastPath
from .draws import Draws, image_generators, per_image
from .maps import compute_maps
from .references import sobel_map


def infidelity_scores(
    model: nn.Module,
    x: Tensor,
    attributions: Tensor,
    targets: Tensor,
    draws: Draws,
    n_samples: int,
    std: float,
    batch_size: int,
) -> np.ndarray:
    """Captum infidelity (normalised attributions) under Gaussian input noise of ``std``; image
    i's noise is drawn from its own seed in ``draws`` (the same for every map given the same
    seeds)."""
    if attributions.shape[1] != x.shape[1]:
        attributions = attributions.expand(-1, x.shape[1], -1, -1) / x.shape[1]
    generators = image_generators(draws, len(x))

    def perturb(inputs: Tensor) -> tuple[Tensor, Tensor]:
        # Captum repeats each image for a chunk of samples (image-major): each image's rows
        # continue that image's own stream, whatever the chunking.
        k = len(inputs) // len(x)
        noise = per_image((len(x), k, *inputs.shape[1:]), generators).reshape(inputs.shape).to(inputs) * std
        return noise, inputs - noise

    scores = infidelity(
        model,
        perturb,
        x,
        attributions.to(x),
        target=targets,
        n_perturb_samples=n_samples,
        max_examples_per_batch=min(max(batch_size, len(x)), len(x) * n_samples),
        normalize=True,
    )
    return scores.detach().cpu().numpy().astype(np.float64)


def sensitivity_scores(
    explain_fn, x: Tensor, targets: Tensor, draws: Draws, n_samples: int, radius: float,
    maps: Tensor | None = None,
) -> np.ndarray:
    """Captum max-sensitivity: largest relative change of the map under L∞ noise of ``radius``,
    image i's noise drawn from its own seed in ``draws``. ``maps`` (of ``x``, as ``explain_fn``
    returns them) spare re-explaining the unperturbed images."""
    out = []
    for i, generator in enumerate(image_generators(draws, len(x))):  # one image at a time keeps memory flat
        image = x[i : i + 1]

        def perturb(inputs: Tensor, perturb_radius: float, generator=generator) -> Tensor:
            u = torch.rand(inputs.shape, generator=generator).to(inputs)
            return inputs + (2 * u - 1) * perturb_radius

        def fn(inputs, target, image=image, i=i):
            if maps is not None and (inputs[0] if isinstance(inputs, tuple) else inputs) is image:
                return (maps[i : i + 1].to(image.device),)
            return explain_fn(inputs, target)

        s = sensitivity_max(
            fn,
            image,
            perturb_func=perturb,
            perturb_radius=radius,
            n_perturb_samples=n_samples,
            target=targets[i : i + 1],
        )
        out.append(float(s.detach().reshape(-1)[0]))
    return np.asarray(out, dtype=np.float64)


def _explain_fn(explainer: Explainer | None, model: nn.Module, ctx: ExplainContext,
                fast: FastPath | None = None):
    """Tuple in, tuple out, as Captum's sensitivity expects; None = the edge reference.
    The maps come from the explain engine (``fast``), summed over channels as stored.

    (Captum iterates over the explanation of the unperturbed input: a bare tensor would be
    split along its batch dimension and silently broadcast.)
    """

    def fn(inputs: Tensor | tuple[Tensor, ...], target: Tensor) -> tuple[Tensor]:
        x = inputs[0] if isinstance(inputs, tuple) else inputs
        if explainer is None:
            return (sobel_map(ctx.input_to_pixel(x)).unsqueeze(1),)
        # Captum passes one target for a whole perturbed batch: give every image its own.
        t = torch.as_tensor(target).reshape(-1)
        if t.numel() == 1:
            t = t.expand(len(x))
        with torch.enable_grad():  # Captum runs the metric under no_grad
            m = compute_maps(explainer, model, x.detach(), t, ctx, len(x), fast=fast)
        return (m.attributions.to(x.device).contiguous(),)

    return fn
