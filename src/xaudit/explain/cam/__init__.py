"""Class activation maps: a template (``template.py``) and one small class per variant.

Importing the package registers every variant; ``find_target_layer`` and ``resolve_layer``
(how a model's default CAM layer is chosen) live in ``layers.py``.
"""

from . import ablation_cam, full_grad, layers, score_cam, variants  # noqa: F401  (register)
from .layers import (
    GuidedGradCamExplainer,
    LayerConductanceExplainer,
    LayerIntegratedGradientsExplainer,
    check_layer,
    find_target_layer,
    layer_label,
    resolve_layer,
    upsample,
)
from .template import CamExplainer, CamRun
from .variants import GradCam

__all__ = [
    "CamExplainer",
    "CamRun",
    "GradCam",
    "GuidedGradCamExplainer",
    "LayerConductanceExplainer",
    "LayerIntegratedGradientsExplainer",
    "check_layer",
    "find_target_layer",
    "layer_label",
    "resolve_layer",
    "upsample",
]
