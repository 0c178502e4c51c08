"""A user's own model, saved as they would save it, explained and audited two ways: through
the library (``xaudit.explain`` / ``xaudit.audit``) and through a recipe with
``train.skip: true`` run by the real CLI. Numbers are read back, not just files."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import xaudit
from tests.conftest import write_png
from tests.helpers.cli_runs import cli, table
from xaudit.api import predict
from xaudit.inputs import as_batch

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")
CLASSES = ["blue", "green", "red"]  # folder names sort this way
SIZE = 64
METHODS = ["saliency", "grad_cam", {"name": "integrated_gradients", "n_steps": 4}]
# every audit family that runs without a retrain, at settings small enough for the default suite
AUDITS = [
    {"name": "convergence", "steps": [4, 8], "rules": ["riemann_middle"]},
    {"name": "model_randomization", "max_steps": 2, "independent": False},
    {"name": "faithfulness", "steps": 5, "road_percentages": [0.5], "infidelity_samples": 1,
     "sensitivity_samples": 1},
    {"name": "localization"},
]
AUDIT_NAMES = {a["name"] for a in AUDITS}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """tmp/images/<class>/<i>.png (64 px, 2 per class) and tmp/masks/ mirroring them."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for label, cls in enumerate(CLASSES):
        for i in range(2):
            img = rng.integers(0, 60, (SIZE, SIZE, 3), dtype=np.uint8)
            img[16:48, 16:48, (2 - label)] += 150
            write_png(root / "images" / cls / f"{i}.png", img)
            mask = np.zeros((SIZE, SIZE), np.uint8)
            mask[16:48, 16:48] = 255
            write_png(root / "masks" / cls / f"{i}.png", mask)
    return root


class Small(nn.Module):
    """A user's own network: no family xaudit knows."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(self.body(x).mean((2, 3)))


def make_small(num_classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return Small(num_classes)


def saved_models(folder):
    """Each model saved as its users save it, and how a recipe and the library load it back."""
    import torchvision
    from safetensors.torch import save_file
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    out = {}
    resnet = torchvision.models.resnet18(num_classes=3)
    torch.save(resnet.state_dict(), folder / "resnet18.pth")
    # small images keep the test fast: the user states the geometry they trained at
    small = {"image_size": SIZE, "resize_size": SIZE}
    out["resnet18"] = (
        {"source": "checkpoint", "name": "resnet18", "checkpoint": str(folder / "resnet18.pth"), **small},
        lambda: xaudit.Classifier.from_checkpoint(folder / "resnet18.pth", arch="resnet18", classes=CLASSES,
                                                  preprocessing=xaudit.Preprocessing(SIZE, SIZE)))
    for name, args in (("vit_small_patch16_224", {"img_size": SIZE}),
                       ("swin_tiny_patch4_window7_224", {"img_size": SIZE, "window_size": 2}),
                       ("convnext_atto", {})):
        m = timm.create_model(name, pretrained=False, num_classes=3, **args)
        save_file(m.state_dict(), folder / f"{name}.safetensors")
        out[name] = (
            {"source": "timm", "name": name, "checkpoint": str(folder / f"{name}.safetensors"),
             "args": args, **({} if args else small)},
            lambda name=name, args=args: xaudit.Classifier.from_timm(
                name, folder / f"{name}.safetensors", classes=CLASSES, model_args=args,
                preprocessing=None if args else xaudit.Preprocessing(SIZE, SIZE, (0.485, 0.456, 0.406),
                                                                      (0.229, 0.224, 0.225), "bicubic")))
    hf = ViTForImageClassification(ViTConfig(
        image_size=SIZE, patch_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=3, id2label=dict(enumerate(CLASSES)),
        label2id={c: i for i, c in enumerate(CLASSES)}))
    hf.save_pretrained(folder / "hf-vit")
    ViTImageProcessor(size={"height": SIZE, "width": SIZE}).save_pretrained(folder / "hf-vit")
    out["hf-vit"] = ({"source": "transformers", "checkpoint": str(folder / "hf-vit")},
                     lambda: xaudit.Classifier.from_transformers(folder / "hf-vit"))
    out["module"] = (
        {"source": "python", "module": "own_model:make_small", "classes": CLASSES,
         "target_layer": "body.2", "image_size": SIZE, "resize_size": SIZE},
        lambda: xaudit.Classifier.from_module(make_small(), CLASSES, image_size=SIZE, cam_layer="body.2"))
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return saved_models(tmp_path_factory.mktemp("models"))


MODELS = ["resnet18", "vit_small_patch16_224", "swin_tiny_patch4_window7_224", "convnext_atto",
          "hf-vit", "module"]
# the default suite keeps one case of each path; `make test-all` runs every source both ways
DEFAULT_LIBRARY, DEFAULT_RECIPE = {"hf-vit", "module"}, {"vit_small_patch16_224"}


def cases(default: set[str]) -> list:
    return [n if n in default else pytest.param(n, marks=pytest.mark.slow) for n in MODELS]


@pytest.mark.parametrize("name", cases(DEFAULT_LIBRARY))
def test_library_explains_and_audits(models, images, name):
    clf = models[name][1]()
    files = sorted((images / "images").rglob("*.png"))
    labels = [f.parent.name for f in files]
    masks = [images / "masks" / f.parent.name / f.name for f in files]
    maps = xaudit.explain(clf, files, METHODS)
    assert set(maps) == {"saliency", "grad_cam", "integrated_gradients"}
    assert clf.preprocessing.image_size == SIZE
    for label, m in maps.items():
        assert m.maps.shape == (len(files), SIZE, SIZE) and torch.isfinite(m.maps).all(), label
        assert m.maps.abs().amax() > 0, label
    ig = maps["integrated_gradients"]
    assert ig.delta is not None and ig.stats["model_evals"] > 0
    result = xaudit.audit(clf, files, labels, METHODS, masks=masks, audits=AUDITS)
    summary = result.summary
    assert AUDIT_NAMES <= set(summary) and isinstance(result.verdict, str) and result.verdict
    methods = {r["method"] for r in result.scorecard}
    assert {"saliency", "grad_cam", "integrated_gradients"} <= methods
    rand = summary["model_randomization"]
    assert rand["blocks"][0] == clf.anatomy.randomization_blocks[0][0]
    assert not summary["localization"].get("skipped"), summary["localization"]


@pytest.mark.heavy
@pytest.mark.parametrize("name", cases(DEFAULT_RECIPE))
def test_recipe_with_train_skip_runs_on_a_users_model(models, images, tmp_path, name):
    model_section = dict(models[name][0])
    recipe = {
        "name": "own", "output_dir": str(tmp_path), "seed": 0,
        "data": {"source": "folder", "path": str(images / "images"), "masks": str(images / "masks"),
                 "splits": {"train": 0.0, "val": 0.0, "test": 1.0}},
        "model": {**model_section, "classes": model_section.get("classes", CLASSES)},
        "train": {"skip": True},
        "explain": {"methods": [m if isinstance(m, dict) else {"name": m} for m in METHODS],
                    "select": {"per_class": 1, "correct": "any"}},
        "audit": {"enabled": True, "n_images": 6, "audits": AUDITS},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    # source python: the factory is the user's own module, importable from the working folder
    (tmp_path / "own_model.py").write_text(inspect.getsource(Small).join(
        ["import torch\nfrom torch import nn\n\n\n", "\n\n" + inspect.getsource(make_small)]))
    res = cli("run", str(path), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    run = tmp_path / "own"
    summary = json.loads((run / "summary.json").read_text())
    preds = table(run / "tables" / "predictions.csv")
    assert summary["test"]["n"] == len(preds) == 6
    assert summary["train"]["skipped"] is True and summary["model"]["source"] in (
        "torchvision", "timm", "transformers", "python")
    assert set(summary["explanations"]) == {"saliency", "grad_cam", "integrated_gradients"}
    assert summary["audits"]["verdict"]
    # the model used is the user's: its predictions equal the library's on the same files
    clf = models[name][1]()
    files = [images / "images" / r["id"] for r in preds]
    x = clf.preprocessing.normalize(as_batch(files, clf.preprocessing).pixels)
    probs = predict(clf, x)
    assert [clf.classes[i] for i in probs.argmax(1).tolist()] == [r["pred"] for r in preds]
    np.testing.assert_allclose(probs.max(1).values.numpy(), [float(r["prob"]) for r in preds],
                               rtol=1e-4)
