"""Grad-CAM on vision transformers equals pytorch-grad-cam's with its documented
reshape_transform, on the same model and layer (timm ViT and Swin; transformers ViT)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from xaudit import Classifier
from xaudit.explain import build_explainer
from xaudit.explain.base import context_for

timm = pytest.importorskip("timm")
gradcam = pytest.importorskip("pytorch_grad_cam")


def vit_reshape_transform(tensor, height=4, width=4):
    # pytorch-grad-cam's tutorial for ViT (vision_transformers.md), grid size of a 64 px input
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def swin_reshape_transform(tensor, height=2, width=2):
    # the same tutorial's Swin transform (tokens without a class token)
    result = tensor.reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def oracle_grid(model, layer, reshape, x, targets):
    """pytorch-grad-cam's Grad-CAM at the layer's resolution (before its per-image [0, 1]
    scaling and cv2 resize, which xaudit does not do): its own hooks, weights and sum."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = GradCAM(model=model, target_layers=[layer], reshape_transform=reshape)
    outputs = cam.activations_and_grads(x)
    tgts = [ClassifierOutputTarget(int(t)) for t in targets]
    model.zero_grad()
    sum(t(o) for t, o in zip(tgts, outputs, strict=True)).backward()
    acts = cam.activations_and_grads.activations[0].cpu().numpy()
    grads = cam.activations_and_grads.gradients[0].cpu().numpy()
    raw = cam.get_cam_image(x, layer, tgts, acts, grads)
    cam.activations_and_grads.release()
    return torch.relu(torch.from_numpy(raw)).unsqueeze(1)


def ours(clf, x, targets):
    e = build_explainer("grad_cam")
    return e.attribute(clf.module, x, targets, context_for(clf))


def check(clf, layer_name, reshape, size):
    torch.manual_seed(1)
    x = torch.randn(3, 3, size, size)
    targets = torch.tensor([0, 1, 2])
    grid = oracle_grid(clf.module, clf.module.get_submodule(layer_name), reshape, x, targets)
    expected = F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)
    got = ours(clf, x, targets)
    assert float(expected.abs().max()) > 0  # a map that says something
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-7)


def test_timm_vit_grad_cam_equals_pytorch_grad_cam():
    torch.manual_seed(0)
    clf = Classifier.from_timm("vit_small_patch16_224", pretrained=False, classes=["a", "b", "c"],
                               model_args={"img_size": 64})
    assert clf.cam_layer == "blocks.11.norm1"  # the layer the tutorial names
    check(clf, "blocks.11.norm1", vit_reshape_transform, 64)


def test_timm_swin_grad_cam_equals_pytorch_grad_cam():
    torch.manual_seed(0)
    args = {"img_size": 64, "window_size": 2}
    clf = Classifier.from_timm("swin_tiny_patch4_window7_224", pretrained=False,
                               classes=["a", "b", "c"], model_args=args)
    # the tutorial's layer: the last block's norm2, tokens N×L×C without a class token
    layer = "layers.3.blocks.1.norm2"
    tuned = clf.with_overrides(cam_layer=layer, layout="tokens", prefix_tokens=0)
    check(tuned, layer, swin_reshape_transform, 64)
    # xaudit's default layer for Swin: the last stage's channels-last output
    nhwc = lambda t: t.permute(0, 3, 1, 2)  # noqa: E731
    check(clf, "layers.3", nhwc, 64)


def test_transformers_vit_grad_cam_equals_pytorch_grad_cam(tmp_path):
    pytest.importorskip("transformers")
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=3)).eval()
    from xaudit.data.transforms import Preprocessing

    clf = Classifier.from_transformers(model, preprocessing=Preprocessing(32, 32, (0.5,) * 3, (0.5,) * 3))
    check(clf, clf.cam_layer, lambda t: vit_reshape_transform(t, 4, 4), 32)
