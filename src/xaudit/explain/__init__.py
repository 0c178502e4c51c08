"""Explainers (a registry over Captum) and the dataset-scale engine."""

from . import attention, backprop, cam, deeplift, gradient, lrp, perturbation, rise, surrogate  # noqa: F401,E501  (register the explainers)
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

from .._callable import make_callable  # noqa: E402

make_callable(__name__, "explain")  # xaudit.explain(clf, images, ...): see xaudit.api
