"""LRP: conservation, the ε-rule's known answer, and refusal of models its rules do not cover."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torchvision import models
from torchvision.models.resnet import BasicBlock

from tests.helpers.explain_toys import LinearNet, context, images, seeded
from xaudit.errors import XauditError
from xaudit.explain import build_explainer
from xaudit.explain.lrp import COMPOSITES

# Merged batch norms keep their eps (y = x / sqrt(1 + eps), 5e-6 relative each); everything
# else conserves to float32 rounding.
CONSERVATION_RTOL = 1e-4
# z+ and alpha2-beta1 lose the relevance of a neuron with no positive (alpha-beta: or no
# negative) input contributions; in a residual block a convolution feeding the skip sum
# directly can have those, so on the ResNet-like model only the epsilon and gamma/z-box
# composites conserve exactly.
RESIDUAL_CONSERVING = ("epsilon", "epsilon_gamma_box")


class PlainCNN(nn.Module):
    """ReLU convolutions, max and average pooling as modules, no biases."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1, bias=False), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 3, bias=False)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


class TinyResNet(nn.Module):
    """A stem with batch norm and two torchvision BasicBlocks (one with a downsampling skip)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        down = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16))
        self.layer1 = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 16, stride=2, downsample=down))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 3, bias=False)

    def forward(self, x):
        h = self.layer1(self.relu(self.bn1(self.conv1(x))))
        return self.fc(self.avgpool(h).flatten(1))


class FunctionalSkip(PlainCNN):
    """A skip connection added in forward, with no canonizer for it."""

    def forward(self, x):
        h = self.features[:3](x)
        h = self.features[4](self.features[3](h)) + h.repeat(1, 2, 1, 1)[:, :8]
        return self.fc(self.pool(h).flatten(1))


class FunctionalPool(PlainCNN):
    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


class LeadingBatchNorm(PlainCNN):
    """A batch norm before the first convolution: nothing precedes it to merge it into."""

    def __init__(self):
        super().__init__()
        self.features.insert(0, nn.BatchNorm2d(3))


def with_stats(model: nn.Module) -> nn.Module:
    """Non-trivial batch-norm scales with zero shifts: merging keeps the biases at zero."""
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.running_mean.zero_()
            m.bias.data.zero_()
    return model.eval()


def relevance_and_logit(model, composite, x, t):
    attr = build_explainer({"name": "lrp", "composite": composite}).attribute(model, x, t, context(model))
    with torch.no_grad():
        logit = model(x)[torch.arange(len(x)), t]
    return attr, logit


CASES = [("relu_cnn", c) for c in COMPOSITES] + [("resnet_like", c) for c in RESIDUAL_CONSERVING]


@pytest.mark.parametrize(("model_name", "composite"), CASES)
def test_relevance_sums_to_the_logit(model_name, composite):
    model = seeded(PlainCNN()) if model_name == "relu_cnn" else with_stats(seeded(TinyResNet()))
    x, t = images(3, 16, seed=2), torch.tensor([0, 1, 2])
    before = copy.deepcopy(model.state_dict())
    attr, logit = relevance_and_logit(model, composite, x, t)
    assert attr.shape == x.shape and float(logit.abs().min()) > 1e-3
    torch.testing.assert_close(attr.sum(dim=(1, 2, 3)), logit, rtol=CONSERVATION_RTOL, atol=1e-6)
    # canonizers reverted, hooks removed
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())
    assert not any(hasattr(m, "canonizer_sum") for m in model.modules())


@pytest.mark.parametrize("composite", ["epsilon", "epsilon_alpha2_beta1"])
def test_epsilon_rule_on_linear_model_is_weight_times_input(composite):
    # ε-rule: R_i = x_i w_i · f / (f + ε) with the logit f put in as relevance
    model = seeded(LinearNet())
    x, t = images(2, 8), torch.tensor([1, 3])
    attr, _ = relevance_and_logit(model, composite, x, t)
    expected = torch.cat([model.weight(int(k)) for k in t]) * x
    torch.testing.assert_close(attr, expected, rtol=1e-4, atol=1e-6)


def test_flat_first_layer_spreads_relevance_evenly():
    # EpsilonPlusFlat: a dense first layer gets the flat rule, so every input of a bias-free
    # dense net receives logit / (number of inputs)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 5, bias=False), nn.ReLU(), nn.Linear(5, 2, bias=False))
    model = seeded(model)
    x, t = images(2, 4), torch.tensor([0, 1])
    attr, logit = relevance_and_logit(model, "epsilon_plus_flat", x, t)
    expected = (logit / 48).view(2, 1, 1, 1).expand_as(x)
    torch.testing.assert_close(attr, expected, rtol=1e-5, atol=1e-7)


def bias_free(model: nn.Module) -> nn.Module:
    """Biases absorb relevance; without them all of it must arrive at the input."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            nn.init.zeros_(m.bias)
    return with_stats(model)


@pytest.mark.slow  # ~10 s on two cores
def test_torchvision_resnet18_conserves():
    x, t = images(2, 32), torch.tensor([0, 1])
    torch.manual_seed(0)
    model = bias_free(models.resnet18(weights=None, num_classes=3))
    attr, logit = relevance_and_logit(model, "epsilon_plus_flat", x, t)
    torch.testing.assert_close(attr.sum(dim=(1, 2, 3)), logit, rtol=1e-3, atol=1e-5)


@pytest.mark.slow  # VGG's 100M-parameter classifier makes this ~20 s
def test_torchvision_vgg11_bn_conserves():
    x, t = images(2, 32), torch.tensor([0, 1])
    torch.manual_seed(0)
    model = bias_free(models.vgg11_bn(weights=None, num_classes=3))
    attr, logit = relevance_and_logit(model, "epsilon_plus_flat", x, t)
    torch.testing.assert_close(attr.sum(dim=(1, 2, 3)), logit, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize(
    "model_fn, message",
    [
        (lambda: seeded(FunctionalSkip()), "differs from gradient"),
        (lambda: seeded(FunctionalPool()), "differs from gradient"),
        (lambda: seeded(LeadingBatchNorm()), "batch norm features.0"),
        (lambda: models.mobilenet_v2(weights=None, num_classes=3).eval(), "ReLU6"),
        (lambda: seeded(nn.Sequential(nn.Flatten(), nn.Linear(48, 4), nn.SiLU(), nn.Linear(4, 2))), "SiLU"),
    ],
    ids=["functional_skip", "functional_pool", "leading_batchnorm", "mobilenet_v2", "silu"],
)
def test_models_the_rules_do_not_cover_are_refused(model_fn, message):
    model = model_fn()
    x, t = images(1, 4 if isinstance(model, nn.Sequential) else 16), torch.tensor([0])
    with pytest.raises(XauditError, match=message) as err:
        build_explainer("lrp").attribute(model, x, t, context(model))
    assert "integrated_gradients" in str(err.value)

