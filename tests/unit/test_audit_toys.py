"""The audit tests' toy models and images do what their answers assume."""

import torch

from tests.helpers.audit_toys import LinearNet, TinyNet, images_for


def test_linear_net_logit_is_weighted_sum():
    w = torch.randn(2, 3, 4, 4)
    x = torch.rand(1, 3, 4, 4)
    assert torch.allclose(LinearNet(4, w)(x)[0], (w * x).flatten(1).sum(1), atol=1e-5)


def test_images_for_masks_are_central():
    images = images_for(TinyNet(), n=2, size=16)
    assert images.masks[0, 8, 8] and not images.masks[0, 0, 0]
    assert images.object_masks[0, 8, 8] and not images.object_masks[0, 0, 0]
