"""Classifier: every model source, saved as a user would and loaded back; safe loading;
preprocessing equal to what the model's own library would do."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from xaudit import Classifier
from xaudit.errors import ModelError
from xaudit.explain.base import context_for
from xaudit.models import describe

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")


def photo() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.chelsea())  # 300×451: resize and crop both matter


# ---------------------------------------------------------------- torchvision


def test_torchvision_state_dict_saved_with_torch_save(tmp_path):
    import torchvision

    torch.manual_seed(0)
    user = torchvision.models.resnet18(num_classes=3).eval()
    torch.save(user.state_dict(), tmp_path / "resnet.pth")
    clf = Classifier.from_checkpoint(tmp_path / "resnet.pth", arch="resnet18",
                                     classes=["healthy", "rust", "spot"])
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(clf(x), user(x))
    assert (clf.family, clf.head, clf.cam_layer) == ("resnet", "fc", "layer4")
    # the class count comes from the file when no classes are given
    assert Classifier.from_checkpoint(tmp_path / "resnet.pth", arch="resnet18").classes == ["0", "1", "2"]
    with pytest.raises(ModelError, match="do not fit the architecture"):
        Classifier.from_checkpoint(tmp_path / "resnet.pth", arch="resnet34", num_classes=3)


def test_pickled_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"fc.weight": Payload()}, fh)
    with pytest.raises(ModelError, match="refused.*re-save it with torch.save"):
        Classifier.from_checkpoint(path, arch="resnet18")
    assert not marker.exists()
    whole = tmp_path / "whole.pth"  # a whole pickled model needs its class: refused the same way
    torch.save(nn.Linear(2, 2), whole)
    with pytest.raises(ModelError, match="refused"):
        Classifier.from_checkpoint(whole, arch="resnet18")


def test_torchvision_preprocessing_equals_the_weights_own_transforms():
    import torchvision

    from xaudit.data.transforms import preprocessing_from

    for name in ("resnet18", "efficientnet_b0"):  # bilinear 256/224 and bicubic 256/224
        w = torchvision.models.get_model_weights(name).DEFAULT
        pre = preprocessing_from(w.transforms())
        ours = pre.normalize(pre.image_tensor(photo()).unsqueeze(0))[0]
        theirs = w.transforms()(photo())
        assert pre.interpolation == w.transforms().interpolation.value
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- timm


def _timm(name: str, **args) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=3, **args).eval()


@pytest.mark.parametrize("name,args,family,cam,layout", [
    ("vit_small_patch16_224", {"img_size": 64}, "timm-vit", "blocks.11.norm1", "tokens"),
    ("swin_tiny_patch4_window7_224", {"img_size": 64, "window_size": 2}, "timm-swin", "layers.3", "nhwc"),
    ("convnext_atto", {}, "timm-convnext", "stages.3", "nchw"),
])
def test_timm_checkpoint_round_trip(tmp_path, name, args, family, cam, layout):
    from safetensors.torch import save_file

    user = _timm(name, **args)
    save_file(user.state_dict(), tmp_path / "model.safetensors")
    clf = Classifier.from_timm(name, checkpoint=tmp_path / "model.safetensors",
                               classes=["a", "b", "c"], model_args=args)
    size = args.get("img_size", 224)
    x = torch.randn(1, 3, size, size)
    torch.testing.assert_close(clf(x), user(x))
    assert (clf.family, clf.cam_layer, clf.anatomy.layout) == (family, cam, layout)
    assert clf.preprocessing.image_size == size
    blocks = [b for b, _ in clf.anatomy.randomization_blocks]
    assert blocks[0].startswith("head") and len(blocks) >= 4
    # the CAM layer's output becomes a grid
    seen = []
    h = clf.module.get_submodule(cam).register_forward_hook(lambda _m, _a, o: seen.append(o))
    clf(x)
    h.remove()
    g = clf.reshape(seen[0]) if clf.reshape is not None else seen[0]
    assert g.dim() == 4 and g.shape[0] == 1 and g.shape[-1] == g.shape[-2] > 1


def test_timm_preprocessing_equals_timms_own_eval_transform():
    model = _timm("convnext_atto")
    clf = Classifier.from_module(model, ["a", "b", "c"])  # ImageNet defaults, then timm's:
    from xaudit.models.hubs import timm_preprocessing

    pre = timm_preprocessing(model)
    assert clf.preprocessing.resize_size == 224  # from_module states its own geometry
    cfg = timm.data.resolve_data_config({}, model=model)
    theirs = timm.data.create_transform(**cfg)(photo())
    ours = pre.normalize(pre.image_tensor(photo()).unsqueeze(0))[0]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_timm_without_weights_fails_clearly_never_random(monkeypatch):
    def offline(*_a, **_k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(timm.models._builder, "load_pretrained", offline)
    monkeypatch.setattr(timm.models._builder, "load_custom_pretrained", offline, raising=False)
    with pytest.raises(ModelError, match="give a local checkpoint"):
        Classifier.from_timm("convnext_atto", classes=["a", "b", "c"])


# ---------------------------------------------------------------- transformers


def _hf_vit(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64, num_labels=3,
                       id2label={0: "healthy", 1: "rust", 2: "spot"},
                       label2id={"healthy": 0, "rust": 1, "spot": 2})
    model = ViTForImageClassification(config).eval()
    folder = tmp_path / "vit"
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3,
                      image_std=[0.5] * 3).save_pretrained(folder)
    return model, folder


def test_transformers_save_pretrained_folder(tmp_path):
    model, folder = _hf_vit(tmp_path)
    clf = Classifier.from_transformers(folder)
    assert clf.classes == ["healthy", "rust", "spot"]
    p = clf.preprocessing
    assert (p.image_size, p.resize_size, p.resize, p.mean) == (32, 32, "square", (0.5, 0.5, 0.5))
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(clf(x), model(pixel_values=x).logits)
    assert clf.family == "hf-vit" and clf.cam_layer.endswith("layers.1.layernorm_before")
    assert clf.anatomy.prefix_tokens == 1
    with pytest.raises(ModelError, match="pass processor="):
        Classifier.from_transformers(model)  # an object alone carries no preprocessing
    assert Classifier.from_transformers(model, processor=folder).classes == clf.classes


def test_xaudit_model_folder_round_trip_for_every_source(tmp_path):
    model, folder = _hf_vit(tmp_path)
    for clf in (Classifier.from_transformers(folder),
                Classifier.from_timm("convnext_atto", pretrained=False, classes=["a", "b", "c"])):
        clf.save(tmp_path / clf.family)
        back = Classifier.from_run(tmp_path / clf.family)
        size = clf.preprocessing.image_size
        x = torch.randn(1, 3, size, size)
        torch.testing.assert_close(back(x), clf(x))
        assert back.classes == clf.classes and back.preprocessing == clf.preprocessing
        assert back.family == clf.family


# ---------------------------------------------------------------- any module


class Tiny(nn.Module):
    def __init__(self, k: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, k)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def test_plain_module_generic_family_and_clear_errors():
    clf = Classifier.from_module(Tiny(), ["a", "b", "c"], image_size=32)
    assert clf.family == "generic" and clf.head == "fc" and clf.cam_layer is None
    assert [b for b, _ in clf.anatomy.randomization_blocks] == ["fc", "conv"]
    ctx = context_for(clf)
    assert "cam_layer='...'" in ctx.cam_hint and "'conv'" in ctx.cam_hint
    assert clf.with_overrides(cam_layer="conv").cam_layer == "conv"
    with pytest.raises(ModelError, match="is not a layer of the model"):
        clf.with_overrides(cam_layer="conv2")
    with pytest.raises(ModelError, match="has 3 outputs but 2 classes"):
        Classifier.from_module(Tiny(), ["a", "b"], image_size=32)
    with pytest.raises(ModelError, match="unknown Classifier setting"):
        Classifier.from_module(Tiny(), ["a", "b", "c"], image_size=32, cam="conv")


def test_families_table_matches_the_randomization_cascade_of_known_models():
    import torchvision

    mb = describe(torchvision.models.mobilenet_v2())
    assert mb.randomization_blocks[0] == ("classifier", ["classifier"])
    assert [b for b, _ in mb.randomization_blocks[1:3]] == ["features.18", "features.17"]
    rn = describe(torchvision.models.resnet18())
    assert [b for b, _ in rn.randomization_blocks] == ["fc", "layer4", "layer3", "layer2", "layer1", "conv1"]
    assert rn.randomization_blocks[-1] == ("conv1", ["conv1", "bn1"])
    wrapped = describe(nn.Sequential(torchvision.models.resnet18()))  # found inside a wrapper
    assert wrapped.head == "0.fc" and wrapped.cam_layer == "0.layer4"


def test_token_grid_drops_prefix_tokens_and_refuses_non_squares():
    from xaudit.models.families import TokenGrid

    t = torch.arange(2 * 5 * 3, dtype=torch.float).view(2, 5, 3)  # 1 class token + 2×2 patches
    g = TokenGrid(1)(t)
    assert g.shape == (2, 3, 2, 2)
    assert torch.equal(g[0, :, 0, 1], t[0, 2])  # patch (0, 1) is token 2
    with pytest.raises(ValueError, match="square grid"):
        TokenGrid(0)(t)
    assert np.isclose(float(g.sum()), float(t[:, 1:].sum()))


def test_recipe_preprocessing_equals_the_librarys_before_any_model_is_built():
    from xaudit.models.sources import recipe_preprocessing
    from xaudit.recipe import load_recipe

    args = {"img_size": 64}
    recipe = load_recipe(None, model={"source": "timm", "name": "vit_small_patch16_224", "args": args})
    clf = Classifier.from_timm("vit_small_patch16_224", pretrained=False, classes=["a", "b"],
                               model_args=args)
    assert recipe_preprocessing(recipe.model) == clf.preprocessing
    assert clf.preprocessing.resize_size == 71  # floor(64 / crop_pct 0.9), as timm resizes
