"""Explainers (a registry over Captum) and the dataset-scale engine."""

from . import (  # noqa: F401  (register the explainers)
    attention,
    backprop,
    cam,
    deeplift,
    expected,
    gradient,
    lrp,
    perturbation,
    rise,
    surrogate,
)
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
