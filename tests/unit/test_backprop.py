"""Deconvolution and DeepLiftShap: known answers on a linear model, refusals like their relatives."""

from __future__ import annotations

import pytest
import torch
from captum.attr import Deconvolution

from tests.helpers.explain_toys import (
    LinearNet,
    ReusedRelu6,
    TinyCNN,
    WithSqueezeExcitation,
    context,
    images,
    seeded,
)
from xaudit.errors import XauditError
from xaudit.explain import build_explainer, make_baseline
from xaudit.explain.gradient import sample_context, sample_seeds


def test_deeplift_shap_of_linear_model_is_weight_times_mean_difference():
    # DeepLift is exact on a linear model; averaging over baselines b_k gives w ⊙ (x − mean b_k)
    model = seeded(LinearNet())
    x, t = images(2, 8), torch.tensor([0, 3])
    ctx = context(model)
    attr = build_explainer({"name": "deeplift_shap", "baselines": ["black", "noise", "blur"]}).attribute(
        model, x, t, ctx
    )
    for i, seed in enumerate(sample_seeds(x, ctx)):
        xi, ci = x[i : i + 1], sample_context(ctx, seed)
        mean = torch.cat([make_baseline(k, xi, ci) for k in ("black", "noise", "blur")]).mean(0, keepdim=True)
        torch.testing.assert_close(attr[i : i + 1], model.weight(int(t[i])) * (xi - mean), atol=1e-5, rtol=1e-5)


def test_deeplift_shap_sums_to_mean_output_difference_on_a_relu_cnn():
    model = seeded(TinyCNN())
    x, t = images(2, 16, seed=1) * 2, torch.tensor([1, 2])
    ctx = context(model)
    attr = build_explainer({"name": "deeplift_shap", "baselines": ["black", "zero"]}).attribute(model, x, t, ctx)
    with torch.no_grad():
        gap = model(x) - 0.5 * (model(make_baseline("black", x, ctx)) + model(torch.zeros_like(x)))
    torch.testing.assert_close(attr.sum(dim=(1, 2, 3)), gap[[0, 1], t], atol=1e-4, rtol=1e-4)


def test_deconvolution_equals_captum_and_is_the_gradient_of_a_linear_model():
    model = seeded(TinyCNN())
    x, t = images(2, 16), torch.tensor([0, 1])
    ours = build_explainer("deconvolution").attribute(model, x, t, context(model))
    ref = Deconvolution(model).attribute(x.clone().requires_grad_(True), target=t).detach()
    torch.testing.assert_close(ours, ref)
    linear = seeded(LinearNet())
    xl, tl = images(2, 8), torch.tensor([2, 1])
    got = build_explainer("deconvolution").attribute(linear, xl, tl, context(linear))
    torch.testing.assert_close(got, torch.cat([linear.weight(int(k)) for k in tl]))


@pytest.mark.parametrize(
    "name, model_cls, message",
    [("deeplift_shap", WithSqueezeExcitation, "SqueezeExcitation"), ("deconvolution", ReusedRelu6, "ReLU6")],
)
def test_refused_where_their_relatives_are(name, model_cls, message):
    model = seeded(model_cls())
    x, t = images(1, 16), torch.tensor([0])
    with pytest.raises(XauditError, match=message):
        build_explainer(name).attribute(model, x, t, context(model))
