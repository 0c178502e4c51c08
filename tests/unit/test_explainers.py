"""Explainers: known answers on tiny analytic models, and one contract over the registry."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import DeepLift
from torch import nn
from torchvision import models
from torchvision.models import VisionTransformer

from tests.helpers.explain_toys import (
    LinearNet,
    ReusedRelu6,
    TinyCNN,
    WithSqueezeExcitation,
    context,
    images,
    seeded,
)
from xaudit.errors import ConfigError, MethodRefused, XauditError
from xaudit.explain import EXPLAINERS, build_explainer, make_baseline
from xaudit.explain.cam import find_target_layer


class SmoothNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.Softplus()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.conv2(self.act(self.conv1(x))))
        return self.fc(h.mean(dim=(2, 3)))


def calibrated(model: nn.Module) -> nn.Module:
    """Batch-norm statistics from random images, so a random network's logits are not ~0."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        model(images(16, 32, seed=5))
    return model.eval()


# ---------------------------------------------------------------- integrated gradients


def test_ig_completeness_and_delta_shrinks_with_steps():
    model = seeded(SmoothNet())
    x, t = images(2, 8), torch.tensor([0, 2])
    ctx = context(model)
    base = make_baseline("black", x, ctx)
    with torch.no_grad():
        change = (model(x) - model(base))[[0, 1], t]
    deltas = []
    for steps in (1, 4, 16, 64):
        attr, delta = build_explainer(
            {"name": "integrated_gradients", "n_steps": steps}
        ).attribute_with_delta(model, x, t, ctx)
        # Captum's delta is exactly the completeness gap of the returned attributions
        torch.testing.assert_close(delta, attr.sum(dim=(1, 2, 3)) - change, atol=1e-5, rtol=0)
        deltas.append(float(delta.abs().max()))
    assert deltas[0] > deltas[1] > deltas[2] > deltas[3]
    assert deltas[3] < 1e-4 * float(change.abs().max())  # 64 Gauss-Legendre nodes: float32 rounding


def test_ig_one_step_is_gradient_at_midpoint_times_difference():
    # Captum's n_steps=1 (Gauss-Legendre) evaluates the gradient at alpha = 0.5 with weight 1;
    # the Riemann rules need n_steps >= 2.
    model = seeded(SmoothNet())
    x, t = images(2, 8, seed=1), torch.tensor([1, 0])
    ctx = context(model)
    base = make_baseline("blur", x, ctx)
    mid = (base + 0.5 * (x - base)).requires_grad_(True)
    (grad,) = torch.autograd.grad(model(mid)[[0, 1], t].sum(), mid)
    attr = build_explainer(
        {"name": "integrated_gradients", "n_steps": 1, "baseline": "blur"}
    ).attribute(model, x, t, ctx)
    torch.testing.assert_close(attr, grad * (x - base), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("baseline", ["black", "zero", "mean"])
def test_ig_of_linear_model_is_weight_times_difference(baseline):
    model = seeded(LinearNet())
    x, t = images(3, 8), torch.tensor([0, 3, 1])
    ctx = context(model)
    diff = x - make_baseline(baseline, x, ctx)
    expected = torch.cat([model.weight(int(k)) for k in t]) * diff
    for method in ("gausslegendre", "riemann_left", "riemann_middle"):
        spec = {
            "name": "integrated_gradients",
            "n_steps": 3,
            "baseline": baseline,
            "method": method,
        }
        attr = build_explainer(spec).attribute(model, x, t, ctx)
        torch.testing.assert_close(attr, expected, atol=1e-5, rtol=1e-5)


def test_ig_internal_batch_size_changes_nothing():
    model = seeded(SmoothNet())
    x, t = images(3, 8), torch.tensor([0, 1, 2])
    full = build_explainer({"name": "integrated_gradients", "n_steps": 8}).attribute(
        model, x, t, context(model)
    )
    spec = {"name": "integrated_gradients", "n_steps": 8, "internal_batch_size": 5}
    chunked = build_explainer(spec).attribute(model, x, t, context(model))
    torch.testing.assert_close(chunked, full, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("size", [8, 7])  # 3·7·7 values per copy: not whole 16-value blocks
@pytest.mark.parametrize(("base", "per_pass"), [("saliency", 3), ("saliency", 1),
                                                ("integrated_gradients", 5)])
def test_noise_tunnel_pass_size_changes_nothing(size, base, per_pass):
    """Noisy copies in passes of any size: the same maps as all copies in one pass."""
    model = seeded(SmoothNet())
    x, t = images(2, size), torch.tensor([0, 2])
    spec = {"name": "noise_tunnel", "base": base, "n_samples": 10}
    if base == "integrated_gradients":
        spec["base_params"] = {"n_steps": 6}
    full = build_explainer(spec).attribute(model, x, t, context(model))
    chunked = build_explainer({**spec, "internal_batch_size": per_pass})
    passes = []
    hook = model.register_forward_hook(lambda m, i, o: passes.append(len(i[0])))
    try:
        out = chunked.attribute(model, x, t, context(model))
    finally:
        hook.remove()
    torch.testing.assert_close(out, full, atol=1e-6, rtol=1e-5)
    # 192 values per copy (8 px): any number of copies per pass keeps the noise, and passes
    # hold at most `per_pass` samples; 147 values (7 px): only 16 copies fill whole 16-value
    # blocks, so the 10 copies go in one pass (Captum's IG then takes at least 10 per pass)
    assert max(passes) == (per_pass if size == 8 else 10)
    if base == "integrated_gradients":
        assert chunked._base.internal_batch_size is None  # the base's own setting is restored


# ---------------------------------------------------------------- plain gradients


def test_saliency_and_input_x_gradient_of_linear_model():
    model = seeded(LinearNet())
    x, t = images(2, 8), torch.tensor([2, 1])
    w = torch.cat([model.weight(int(k)) for k in t])
    ctx = context(model)
    torch.testing.assert_close(build_explainer("saliency").attribute(model, x, t, ctx), w.abs())
    signed = build_explainer({"name": "saliency", "abs": False}).attribute(model, x, t, ctx)
    torch.testing.assert_close(signed, w)
    torch.testing.assert_close(
        build_explainer("input_x_gradient").attribute(model, x, t, ctx), x * w
    )


# ---------------------------------------------------------------- occlusion


def test_occlusion_non_overlapping_windows_on_linear_model():
    # Captum: each pixel gets the mean over the windows covering it of f(x) - f(occluded);
    # with stride = window exactly one window covers each pixel, so every pixel of a window
    # carries that window's whole sum of w * (x - 0) over all channels.
    model = seeded(LinearNet())
    x, t = images(2, 8), torch.tensor([1, 3])
    attr = build_explainer({"name": "occlusion", "window": 4, "stride": 4}).attribute(
        model, x, t, context(model)
    )
    contrib = torch.cat([model.weight(int(k)) for k in t]) * x  # baseline "zero"
    per_window = contrib.sum(dim=1, keepdim=True)  # N×1×8×8
    per_window = F.avg_pool2d(per_window, 4) * 16  # window sums, N×1×2×2
    expected = (
        per_window.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3).expand(-1, 3, -1, -1)
    )
    torch.testing.assert_close(attr, expected, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- Grad-CAM


class OneConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)
        self.fc = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(2, 3)))


@pytest.mark.parametrize("relu", [True, False])
def test_grad_cam_equals_hand_computed_map(relu):
    model = seeded(OneConv())
    x, t = images(2, 8), torch.tensor([0, 3])
    ctx = context(model, target_layer=model.conv)
    attr = build_explainer({"name": "grad_cam", "relu": relu}).attribute(model, x, t, ctx)
    with torch.no_grad():
        acts = model.conv(x)  # N×5×4×4
        # d y_t / d A_k(i, j) = w_t[k] / (h*w) everywhere, so alpha_k = w_t[k] / (h*w)
        alpha = model.fc.weight[t] / acts[0, 0].numel()
        cam = (alpha[:, :, None, None] * acts).sum(dim=1, keepdim=True)
        cam = cam.clamp_min(0) if relu else cam
        expected = F.interpolate(cam, size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(attr, expected, atol=1e-6, rtol=1e-5)


def test_grad_cam_layer_by_name_and_unknown_name():
    model = seeded(TinyCNN())
    x, t = images(2, 16), torch.tensor([0, 1])
    ctx = context(model, target_layer=model.features[3])
    named = build_explainer({"name": "grad_cam", "layer": "features.3"})
    assert named.label == "grad_cam[features.3]"
    torch.testing.assert_close(
        named.attribute(model, x, t, ctx), build_explainer("grad_cam").attribute(model, x, t, ctx)
    )
    with pytest.raises(ConfigError, match="features.3"):
        build_explainer({"name": "grad_cam", "layer": "feature.3"}).attribute(model, x, t, ctx)


def test_layer_integrated_gradients_completeness():
    model = seeded(SmoothNet())
    x, t = images(2, 8), torch.tensor([0, 1])
    ctx = context(model)
    spec = {"name": "layer_integrated_gradients", "layer": "conv2", "n_steps": 32}
    explainer = build_explainer(spec)
    attr, delta = explainer.attribute_with_delta(model, x, t, ctx)
    assert explainer.label == "layer_integrated_gradients[conv2]"
    assert attr.shape == (2, 1, 8, 8)  # conv2 keeps 8×8, so no interpolation: sums are comparable
    with torch.no_grad():
        change = (model(x) - model(make_baseline("black", x, ctx)))[[0, 1], t]
    torch.testing.assert_close(attr.sum(dim=(1, 2, 3)), change, atol=1e-4, rtol=1e-3)
    assert float(delta.abs().max()) < 1e-4


class InplaceAfterLayer(SmoothNet):
    """Modifies conv2's output in place, as DenseNet does with its features."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(self.act(self.conv1(x)))
        return self.fc(F.softplus(h.mul_(2)).mean(dim=(2, 3)))


@pytest.mark.parametrize("name", ["layer_integrated_gradients", "layer_conductance"])
def test_layer_methods_survive_in_place_ops_after_the_layer(name):
    model = seeded(InplaceAfterLayer())
    x, t = images(2, 8), torch.tensor([0, 1])
    ctx = context(model)
    spec = {"name": name, "layer": "conv2", "n_steps": 32}
    attr, delta = build_explainer(spec).attribute_with_delta(model, x, t, ctx)
    with torch.no_grad():
        change = (model(x) - model(make_baseline("black", x, ctx)))[[0, 1], t]
    # conv2 keeps 8×8, so the map's sum is the layer attributions' sum: it misses
    # f(x) - f(baseline) by exactly Captum's delta, which is small
    torch.testing.assert_close(attr.sum(dim=(1, 2, 3)) - change, delta, atol=1e-4, rtol=1e-3)
    assert float(delta.abs().max()) < 0.05 * float(change.abs().max())
    assert model.conv2 is model._modules["conv2"] and isinstance(model.conv2, nn.Conv2d)


@pytest.mark.parametrize("name, least", [("layer_integrated_gradients", 1), ("layer_conductance", 2)])
def test_layer_path_methods_run_in_passes_of_the_engines_size(name, least):
    """The engine's pass size bounds the samples per forward (so memory), maps unchanged."""
    model = seeded(SmoothNet())
    x, t = images(3, 8), torch.tensor([0, 1, 2])
    spec = {"name": name, "layer": "conv2", "n_steps": 16}
    whole, _ = build_explainer(spec).attribute_with_delta(model, x, t, context(model))
    sizes = []
    hook = model.conv1.register_forward_hook(lambda m, i, o: sizes.append(len(o)))
    small = dataclasses.replace(context(model), pass_size=4)
    try:
        parts, _ = build_explainer(spec).attribute_with_delta(model, x, t, small)
    finally:
        hook.remove()
    assert max(sizes) <= max(4, least * len(x)) < 16 * len(x)
    torch.testing.assert_close(parts, whole, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- DeepLift and guided methods


@pytest.mark.filterwarnings("ignore::UserWarning")  # the plain Captum call below
def test_deeplift_sums_to_delta_with_reused_inplace_relu6():
    model = seeded(ReusedRelu6())
    x, t = images(2, 8) * 3, torch.tensor([0, 2])
    ctx = context(model)
    attr, delta = build_explainer("deeplift").attribute_with_delta(model, x, t, ctx)
    with torch.no_grad():
        change = (model(x) - model(make_baseline("black", x, ctx)))[[0, 1], t]
    assert float(change.abs().min()) > 0.1
    torch.testing.assert_close(attr.sum(dim=(1, 2, 3)), change, atol=1e-4, rtol=1e-4)
    assert float(delta.abs().max()) < 1e-4
    assert model.act is model._modules["act"] and isinstance(model.act, nn.ReLU6)  # restored
    # Plain Captum has no rule for ReLU6: it treats it as linear and misses by far.
    _, plain = DeepLift(model).attribute(
        x, baselines=make_baseline("black", x, ctx), target=t, return_convergence_delta=True
    )
    assert float(plain.abs().max()) > 0.01 * float(change.abs().max())


def test_deeplift_on_torchvision_resnet18_and_mobilenet_v2():
    x, t = images(2, 32), torch.tensor([0, 1])
    torch.manual_seed(0)
    resnet = models.resnet18(weights=None, num_classes=3).eval()
    state = copy.deepcopy(resnet.state_dict())
    attr, delta = build_explainer("deeplift").attribute_with_delta(resnet, x, t, context(resnet))
    assert attr.shape == x.shape and torch.isfinite(attr).all() and delta.shape == (2,)
    assert not any(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in resnet.modules()
    )
    assert all(torch.equal(v, resnet.state_dict()[k]) for k, v in state.items())
    # Captum's max-pool rule is approximate; everything else is exact: without the stem's
    # max pool the attributions add up.
    resnet.maxpool = nn.Identity()
    _, delta = build_explainer("deeplift").attribute_with_delta(resnet, x, t, context(resnet))
    assert float(delta.abs().max()) < 1e-4

    mobilenet = calibrated(models.mobilenet_v2(weights=None, num_classes=3))
    ctx = context(mobilenet)
    attr, delta = build_explainer("deeplift").attribute_with_delta(mobilenet, x, t, ctx)
    with torch.no_grad():
        change = (mobilenet(x) - mobilenet(make_baseline("black", x, ctx)))[[0, 1], t]
    assert float(delta.abs().max()) < 1e-3 * float(change.abs().max())


class FunctionalRelu(TinyCNN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.features(x) - 0.1).mean(dim=(2, 3)))


@pytest.mark.parametrize(
    "model_cls, message",
    [(FunctionalRelu, "nonlinear"), (WithSqueezeExcitation, "SqueezeExcitation")],
)
def test_deeplift_refuses_models_its_rules_do_not_cover(model_cls, message):
    model = seeded(model_cls())
    x, t = images(2, 16), torch.tensor([0, 1])
    with pytest.raises(XauditError, match=message) as err:
        build_explainer("deeplift").attribute(model, x, t, context(model))
    assert "integrated_gradients" in str(err.value)


@pytest.mark.parametrize("name", ["guided_backprop", "guided_grad_cam"])
def test_guided_methods_refuse_non_relu_activations(name):
    model = seeded(ReusedRelu6())
    x, t = images(1, 8), torch.tensor([0])
    with pytest.raises(XauditError, match="ReLU6"):
        build_explainer(name).attribute(model, x, t, context(model, target_layer=model.conv2))


# ---------------------------------------------------------------- target layers


@pytest.mark.parametrize(
    "arch, expected",
    [
        ("resnet18", "layer4"),
        ("vgg11", "features.19"),
        ("mobilenet_v2", "features.18"),
        ("efficientnet_b0", "features.8"),
        ("convnext_tiny", "features.7"),
    ],
)
def test_find_target_layer_torchvision(arch, expected):
    model = getattr(models, arch)(weights=None, num_classes=2)
    name, layer = find_target_layer(model)
    assert name == expected and layer is dict(model.named_modules())[expected]


def test_find_target_layer_generic_asks_and_vit_is_found():
    # a model of no known family: CAM methods say which setting names the layer
    with pytest.raises(XauditError, match="model.target_layer, or cam_layer="):
        find_target_layer(TinyCNN())
    vit = VisionTransformer(
        image_size=32, patch_size=16, num_layers=2, num_heads=1, hidden_dim=8, mlp_dim=8
    )
    assert find_target_layer(vit)[0] == "encoder.layers.encoder_layer_1.ln_1"


# ---------------------------------------------------------------- the contract over the registry

FAST = {  # small settings so the whole registry runs in seconds; other parameters default
    "integrated_gradients": {"n_steps": 4},
    "gradient_shap": {"n_samples": 4},
    "noise_tunnel": {"n_samples": 3},
    "occlusion": {"window": 4, "stride": 3},
    "layer_conductance": {"n_steps": 4},
    "layer_integrated_gradients": {"n_steps": 4},
    "rise": {"n_masks": 64},
    "lime": {"n_samples": 32, "n_segments": 12},
    "kernel_shap": {"n_samples": 32, "n_segments": 12},
    "feature_ablation": {"n_segments": 12},
    "expected_gradients": {"n_samples": 4},
}
# training images for the methods that draw baselines from them (expected_gradients)
REFERENCES = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(5))


def run_method(name: str, x: torch.Tensor, t: torch.Tensor, seed: int = 0) -> torch.Tensor:
    model = seeded(TinyCNN())
    explainer = build_explainer({"name": name, **FAST.get(name, {})})
    ctx = context(model, target_layer=model.features[2], seed=seed)
    ctx.references = REFERENCES
    return explainer.attribute(model, x, t, ctx)


# Methods for transformers refuse a CNN, with the reason; their contract (batches,
# determinism, state) runs on ViTs in test_attention_methods.py and test_attn_lrp.py
VIT_ONLY = {n for n in EXPLAINERS.names() if EXPLAINERS.get(n).kind == "attention"}


@pytest.mark.parametrize("name", EXPLAINERS.names())
def test_every_method_contract(name):
    x, t = images(3, 16), torch.tensor([0, 2, 1])
    if name in VIT_ONLY:
        with pytest.raises(MethodRefused, match="no (global )?self-attention"):
            run_method(name, x, t)
        return
    model = seeded(TinyCNN())
    before = copy.deepcopy(model.state_dict())
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()

    batched = run_method(name, x, t)
    assert batched.dtype == torch.float32 and torch.isfinite(batched).all()
    assert batched.shape[0] == 3 and batched.shape[2:] == x.shape[2:] and batched.shape[1] in (1, 3)
    if EXPLAINERS.get(name).kind in ("cam", "layer") and "guided" not in name:
        assert batched.shape[1] == 1
    assert batched.abs().sum() > 0

    singles = torch.cat([run_method(name, x[i : i + 1], t[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, singles, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        run_method(name, x, t), batched, atol=0, rtol=0
    )  # same seed, same maps

    assert torch.equal(torch.get_rng_state(), torch_state) and np.array_equal(
        np.random.get_state()[1], np_state
    )
    model = seeded(TinyCNN())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_explainer_leaves_model_mode_and_requires_grad():
    model = seeded(TinyCNN())
    model.features[0].weight.requires_grad_(False)
    x, t = images(2, 16), torch.tensor([0, 1])
    ctx = context(model, target_layer=model.features[2])
    ctx.references = REFERENCES
    for name in sorted(set(EXPLAINERS.names()) - VIT_ONLY):
        build_explainer({"name": name, **FAST.get(name, {})}).attribute(model, x, t, ctx)
        assert not model.training
        assert [p.requires_grad for p in model.parameters()] == [False] + [True] * 5
        assert all(p.grad is None for p in model.parameters())
        assert not x.requires_grad


@pytest.mark.parametrize(
    "name", ["gradient_shap", "noise_tunnel", "rise", "lime", "kernel_shap", "deeplift_shap",
             "expected_gradients"]
)
def test_stochastic_methods_depend_on_the_seed(name):
    x, t = images(2, 16), torch.tensor([0, 1])
    assert not torch.allclose(run_method(name, x, t, seed=0), run_method(name, x, t, seed=1))


# ---------------------------------------------------------------- parameters and labels


@pytest.mark.parametrize(
    "spec, word",
    [
        ({"name": "integrated_gradients", "n_steps": 0}, "n_steps"),
        ({"name": "integrated_gradients", "baseline": "white"}, "baseline"),
        ({"name": "integrated_gradients", "method": "riemann_trapezoid"}, "method"),
        ({"name": "integrated_gradients", "n_steps": 1, "method": "riemann_right"}, "n_steps"),
        ({"name": "integrated_gradients", "internal_batch_size": 0}, "internal_batch_size"),
        ({"name": "integrated_gradients", "steps": 3}, "n_steps"),  # unknown key: did you mean
        ({"name": "saliency", "abs": "yes"}, "abs"),
        ({"name": "gradient_shap", "baselines": ["black", "grey"]}, "baselines"),
        ({"name": "gradient_shap", "stdevs": -1}, "stdevs"),
        ({"name": "deeplift", "baseline": "nosie"}, "baseline"),
        ({"name": "noise_tunnel", "nt_type": "smoothgrad2"}, "nt_type"),
        ({"name": "noise_tunnel", "base": "grad_cam"}, "base"),
        ({"name": "noise_tunnel", "stdev": 0}, "stdev"),
        (
            {"name": "noise_tunnel", "base": "integrated_gradients", "base_params": {"n_steps": 0}},
            "n_steps",
        ),
        ({"name": "occlusion", "window": 0}, "window"),
        ({"name": "occlusion", "stride": 2.5}, "stride"),
        ({"name": "grad_cam", "layer": 4}, "layer"),
        ({"name": "layer_conductance", "n_steps": 0}, "n_steps"),
        ({"name": "rise", "p": 1.0}, "p"),
        ({"name": "rise", "n_masks": 0}, "n_masks"),
        ({"name": "rise", "grid": 1.5}, "grid"),
        ({"name": "lime", "n_segments": 1}, "n_segments"),
        ({"name": "lime", "kernel_width": 0}, "kernel_width"),
        ({"name": "kernel_shap", "compactness": 0}, "compactness"),
        ({"name": "kernel_shap", "n_samples": 1}, "n_samples"),
        ({"name": "feature_ablation", "baseline": "white"}, "baseline"),
        ({"name": "lrp", "composite": "epsilon_plus"}, "composite"),
        ({"name": "lrp", "canonizer": "mobilenet"}, "canonizer"),
        ({"name": "lrp", "epsilon": 0}, "epsilon"),
        ({"name": "deeplift_shap", "baselines": ["black"]}, "baselines"),
    ],
)
def test_bad_parameters_name_the_parameter(spec, word):
    with pytest.raises(ConfigError, match=word):
        build_explainer(spec)


def test_labels_and_params():
    assert build_explainer({"name": "occlusion", "window": 15}).label == "occlusion_w15"
    nt = build_explainer(
        {"name": "noise_tunnel", "base": "integrated_gradients", "nt_type": "smoothgrad_sq"}
    )
    assert nt.label == "noise_tunnel_smoothgrad_sq_integrated_gradients"
    assert nt.params() == {
        "base": "integrated_gradients",
        "nt_type": "smoothgrad_sq",
        "n_samples": 10,
        "stdev": 0.15,
        "base_params": None,
        "internal_batch_size": None,
    }
    assert (
        build_explainer({"name": "layer_conductance", "layer": "features.18"}).label
        == "layer_conductance[features.18]"
    )
    assert build_explainer("integrated_gradients").params() == {
        "n_steps": 32,
        "baseline": "black",
        "method": "gausslegendre",
        "internal_batch_size": None,
    }
    assert EXPLAINERS.get("occlusion").needs_gradients is False


def test_gaussian_blur_equals_scipy_mirror_filter():
    from scipy.ndimage import gaussian_filter

    from xaudit.explain.base import gaussian_blur

    x = torch.randn(2, 3, 40, 48)
    for sigma in (1.0, 2.4):
        ours = gaussian_blur(x, sigma)
        theirs = gaussian_filter(x.numpy().astype("float64"), (0, 0, sigma, sigma), mode="mirror",
                                 truncate=3.0)
        torch.testing.assert_close(ours, torch.from_numpy(theirs).float(), rtol=0, atol=1e-5)
    tiny = torch.randn(1, 1, 3, 3)  # the kernel shrinks to the reflect padding's reach
    assert torch.isfinite(gaussian_blur(tiny, 5.0)).all()
