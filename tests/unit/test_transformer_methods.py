"""Every registered method and every audit on a vision transformer (a small timm ViT):
maps where the method applies, a stated refusal where it does not."""

from __future__ import annotations

import pytest
import torch

import xaudit
from xaudit.errors import XauditError
from xaudit.explain import EXPLAINERS

timm = pytest.importorskip("timm")

# ReLU-only backward rules cannot guide a GELU network; DeepLift's and LRP's rules do not
# cover attention and LayerNorm: each says so rather than return wrong maps
REFUSED = {"deeplift", "deeplift_shap", "deconvolution", "guided_backprop", "guided_grad_cam", "lrp"}
CHEAP = {"integrated_gradients": {"n_steps": 4}, "layer_conductance": {"n_steps": 4},
         "layer_integrated_gradients": {"n_steps": 4}, "gradient_shap": {"n_samples": 4},
         "noise_tunnel": {"n_samples": 2}, "occlusion": {"window": 16, "stride": 16},
         "expected_gradients": {"n_samples": 4}}


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return xaudit.Classifier.from_timm(
        "vit_small_patch16_224", pretrained=False, classes=["a", "b", "c"],
        model_args={"img_size": 32, "depth": 2, "embed_dim": 48, "num_heads": 2})


@pytest.fixture(scope="module")
def pixels():
    torch.manual_seed(1)
    return torch.rand(4, 3, 32, 32)


@pytest.mark.parametrize("name", EXPLAINERS.names())
def test_every_method_on_a_vit(vit, pixels, name):
    spec = {"name": name, **CHEAP.get(name, {})}
    if name in REFUSED:
        with pytest.raises(XauditError):
            xaudit.explain(vit, pixels, [spec])
        return
    # expected_gradients draws its baselines from training images: the other images stand in
    refs = {"references": pixels.flip(0)} if name == "expected_gradients" else {}
    maps = next(iter(xaudit.explain(vit, pixels, [spec], **refs).values()))
    assert maps.maps.shape == (4, 32, 32)
    assert torch.isfinite(maps.maps).all() and maps.maps.abs().amax() > 0


@pytest.mark.slow  # about 90 s on two busy cores; the default suite audits a ViT in test_any_model
def test_every_audit_on_a_vit(vit, pixels):
    masks = torch.zeros(4, 32, 32, dtype=torch.bool)
    masks[:, 8:24, 8:24] = True
    result = xaudit.audit(vit, pixels, labels=[0, 1, 2, 0], masks=masks,
                          methods=["saliency", "grad_cam", {"name": "integrated_gradients", "n_steps": 4}])
    ran = {name for name, s in result.summary.items()
           if isinstance(s, dict) and "skipped" in s and not s["skipped"]}
    skipped = {name: s["reason"] for name, s in result.summary.items()
               if isinstance(s, dict) and s.get("skipped")}
    # label randomization retrains the model, which a library call cannot: said, not silent
    assert set(skipped) <= {"label_randomization", "shortcut"}, skipped
    assert "retrain" in skipped.get("label_randomization", "retrain")
    assert {"convergence", "model_randomization", "faithfulness", "localization",
            "baseline_sensitivity", "correctness"} <= ran | (set(result.summary) - set(skipped))
    rows = result.scorecard
    assert {r["method"] for r in rows} >= {"saliency", "grad_cam", "integrated_gradients"}
    assert result.verdict
