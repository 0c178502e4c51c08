"""Code named by a run folder's files runs only when the caller says so (the real CLI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from torch import nn

from tests.helpers.cli_runs import ROOT, image_folder, one_error

FACTORY = '''
from pathlib import Path
from torch import nn

def make(marker, num_classes=2):
    Path(marker).write_text("called")
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, num_classes))
'''


def env(code: Path) -> dict:
    return {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{code}", "OMP_NUM_THREADS": "1"}


def xaudit(code: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xaudit.cli", *args], env=env(code),
                          capture_output=True, text=True, timeout=300)


def shared_run(tmp_path: Path, case: str) -> tuple[Path, Path, Path]:
    """A run folder as it could arrive from elsewhere, naming a factory that leaves a marker
    file when called: in its recipe.yaml (``recipe``), in its model.json (``model.json``), or
    in both (``both``; the manifest says the model is trained, as a copied folder would)."""
    from xaudit.models import Classifier
    from xaudit.recipe import load_recipe, recipe_fingerprints

    code = tmp_path / "code"
    code.mkdir()
    (code / "marker_factory.py").write_text(FACTORY)
    marker = tmp_path / "called.txt"
    data = image_folder(tmp_path / "imgs", n=3)
    run = tmp_path / "shared"
    run.mkdir()
    trained = case != "recipe"
    model = {"source": "python", "module": "marker_factory:make", "args": {"marker": str(marker)},
             "classes": ["a", "b"], "image_size": 16, "resize_size": 16}
    if case == "model.json":
        model = {"source": "torchvision", "name": "resnet18", "weights": "none", "image_size": 16,
                 "resize_size": 16}
    recipe = {
        "name": "shared", "output_dir": str(tmp_path),
        "data": {"source": "folder", "path": str(data)}, "model": model,
        "train": {"skip": not trained}, "audit": {"enabled": False},
        "explain": {"methods": [{"name": "saliency"}]},
    }
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    fp = recipe_fingerprints(load_recipe(run / "recipe.yaml"))["train"]
    (run / "manifest.json").write_text(json.dumps({"stages": {"train": {"fingerprint": fp}}}))
    if trained:  # the same model, built here without calling the factory
        module = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
        clf = Classifier.from_module(module, ["a", "b"], image_size=16)
        clf.source.update(module="marker_factory:make", model_args={"marker": str(marker)})
        clf.save(run / "model")
    return run, code, marker


# "both" is the copied run folder of the bug report; the other two are heavier repeats
@pytest.mark.parametrize("case", [pytest.param("recipe", marks=pytest.mark.heavy),
                                  pytest.param("model.json", marks=pytest.mark.heavy), "both"])
def test_a_run_folder_naming_a_factory_runs_it_only_with_trust_code(tmp_path, case):
    run, code, marker = shared_run(tmp_path, case)
    refused = xaudit(code, "evaluate", str(run))
    line = one_error(refused)
    assert "'marker_factory:make'" in line and "--trust-code" in line, line
    assert line.startswith(f"error: {run / ('model/model.json' if case == 'model.json' else 'recipe.yaml')}: ")
    assert not marker.exists()

    ok = xaudit(code, "evaluate", str(run), "--trust-code")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert marker.read_text() == "called"
    predictions = (run / "tables" / "predictions.csv").read_text().splitlines()[1:]
    assert predictions and all(row.split(",")[2] in ("a", "b") for row in predictions)


def test_a_recipe_given_on_the_command_line_vouches_for_its_factory(tmp_path):
    from xaudit.pipeline import Pipeline

    run, code, marker = shared_run(tmp_path, "recipe")
    with pytest.raises(Exception, match="--trust-code"):
        Pipeline.from_run_dir(run)
    # the caller's own --set naming the factory trusts it (and only it)
    sys.path.insert(0, str(code))
    try:
        pipe = Pipeline.from_run_dir(run, ["model.module=marker_factory:make"])
        assert pipe.trust_code == "marker_factory:make"
        pipe.classifier()
    finally:
        sys.path.remove(str(code))
    assert marker.read_text() == "called"


# ----------------------------------------------------------------- transformers custom code

CUSTOM = '''
import os
from pathlib import Path
from transformers import ViTForImageClassification

Path(os.environ["XAUDIT_TEST_MARKER"]).write_text("imported")


class CustomViT(ViTForImageClassification):
    pass
'''


def custom_code_folder(tmp_path: Path) -> Path:
    """A save_pretrained folder whose config.json names model code of the folder (auto_map)."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=32, num_labels=2,
                       id2label={0: "a", 1: "b"}, label2id={"a": 0, "b": 1})
    folder = tmp_path / "hf"
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForImageClassification": "custom_vit.CustomViT"}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "custom_vit.py").write_text(CUSTOM)
    return folder


@pytest.mark.heavy
def test_transformers_custom_code_is_one_clear_line_without_trust(tmp_path):
    folder = custom_code_folder(tmp_path)
    marker = tmp_path / "imported.txt"
    data = image_folder(tmp_path / "imgs", n=3)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "hf", "output_dir": str(tmp_path / "runs"),
        "data": {"source": "folder", "path": str(data)},
        "model": {"source": "transformers", "checkpoint": str(folder)},
        "train": {"skip": True}, "audit": {"enabled": False},
        "explain": {"methods": [{"name": "saliency"}]}}))
    # stdin left open: transformers' own question would wait on it until the time-out
    res = subprocess.run([sys.executable, "-m", "xaudit.cli", "run", str(recipe)], stdin=subprocess.PIPE,
                         env={**env(tmp_path), "XAUDIT_TEST_MARKER": str(marker),
                              "HF_HOME": str(tmp_path / "hf_home")},
                         capture_output=True, text=True, timeout=300)
    line = one_error(res)
    assert line == (f"error: {folder / 'config.json'}: auto_map names custom model code "
                    "(['custom_vit.CustomViT']) that loading this model would run; if you trust where "
                    "it comes from, pass trust_code=True (xaudit: --trust-code) to run that code"), line
    assert not marker.exists()


def test_transformers_custom_code_loads_only_with_trust_code(tmp_path, monkeypatch):
    from xaudit.errors import ModelError
    from xaudit.models import Classifier

    folder = custom_code_folder(tmp_path)
    marker = tmp_path / "imported.txt"
    monkeypatch.setenv("XAUDIT_TEST_MARKER", str(marker))
    # transformers copies the folder's code into its modules cache: here, not the home folder
    monkeypatch.setattr("transformers.dynamic_module_utils.HF_MODULES_CACHE", str(tmp_path / "modules"))
    with pytest.raises(ModelError, match=r"config\.json: auto_map names custom model code"):
        Classifier.from_transformers(folder)
    with pytest.raises(ModelError, match=r"config\.json: auto_map"):
        Classifier.from_transformers(folder, trust_code="custom_vit:CustomViT")  # a name is not trust
    assert not marker.exists()
    clf = Classifier.from_transformers(folder, trust_code=True)
    assert marker.read_text() == "imported" and type(clf.module.model).__name__ == "CustomViT"

    # a model.json whose saved config names custom code: refused the same way, naming the file
    clf.save(tmp_path / "saved")
    with pytest.raises(ModelError, match=rf"^{tmp_path / 'saved' / 'model.json'}: auto_map names"):
        Classifier.from_run(tmp_path / "saved")
