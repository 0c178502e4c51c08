"""Explainers (a registry over Captum) and the dataset-scale engine."""

from . import backprop, cam, gradient, lrp, perturbation, rise, surrogate  # noqa: F401  (register the explainers)
from .base import (
    BASELINES,
    EXPLAINERS,
    ExplainContext,
    Explainer,
    Explanation,
    build_explainer,
    make_baseline,
    validate_method_specs,
)

__all__ = [
    "BASELINES",
    "EXPLAINERS",
    "ExplainContext",
    "Explainer",
    "Explanation",
    "build_explainer",
    "make_baseline",
    "validate_method_specs",
]
