"""Files a run reads back are validated; files it writes are ordinary (mode from the umask)."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from xaudit.errors import ModelError, XauditError
from xaudit.explain.engine import MapStore
from xaudit.models import Classifier, save_model_folder
from xaudit.stored import read_map_index, read_model_meta

GOOD = {
    "name": "mobilenet_v2", "num_classes": 2, "classes": ["a", "b"],
    "preprocessing": {"image_size": 32, "resize_size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
}


def write(tmp_path, obj, name="model.json"):
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def test_valid_model_json_reads_back(tmp_path):
    assert read_model_meta(write(tmp_path, GOOD)) == GOOD


@pytest.mark.parametrize(
    "change, message",
    [
        ({"num_classes": 0}, "num_classes: must be in [1, 100000] or null, got 0"),
        ({"num_classes": "2"}, "num_classes: must be in [1, 100000] or null, got '2'"),
        ({"classes": ["a"]}, "classes: 1 names for num_classes 2"),
        ({"name": None}, "name: expected a model name, got None"),
        ({"preprocessing": {**GOOD["preprocessing"], "mean": [0.5, 0.5]}}, "preprocessing.mean: must hold 3 numbers, got 2"),
        ({"preprocessing": {**GOOD["preprocessing"], "std": [0.2, 0, 0.2]}}, "preprocessing.std[1]: must be in (0, 1], got 0"),
        ({"preprocessing": {**GOOD["preprocessing"], "image_size": 0}}, "preprocessing.image_size: must be in [8, 4096], got 0"),
        ({"preprocessing": {**GOOD["preprocessing"], "mean": "grey"}}, "preprocessing.mean: expected 3 numbers, got 'grey'"),
    ],
)
def test_bad_model_json_is_one_error_naming_the_file_and_key(tmp_path, change, message):
    path = write(tmp_path, {**GOOD, **change})
    with pytest.raises(ModelError) as err:
        read_model_meta(path)
    assert str(err.value) == f"{path}: {message}"


def test_preprocessing_is_required_only_where_it_is_read(tmp_path):
    path = write(tmp_path, {k: v for k, v in GOOD.items() if k != "preprocessing"})
    assert "preprocessing" not in read_model_meta(path)
    with pytest.raises(ModelError, match="preprocessing: expected a mapping, got None"):
        read_model_meta(path, need_preprocessing=True)


def test_model_json_that_is_not_json_names_the_file(tmp_path):
    path = write(tmp_path, "{not json")
    with pytest.raises(ModelError, match=rf"^{path}: not valid JSON"):
        read_model_meta(path)
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ModelError, match=rf"^{path}: not UTF-8 text"):
        read_model_meta(path)


def test_load_checkpoint_refuses_a_bad_model_json_before_building(tmp_path):
    built = Classifier.from_torchvision("mobilenet_v2", "none", num_classes=2, seed=0)
    save_model_folder(built.module, tmp_path, GOOD)
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["num_classes"] = -3
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="num_classes: must be in"):
        Classifier.from_run(tmp_path)


@pytest.mark.parametrize("change, message", [
    (lambda m: m.pop("classes"), "classes: the class names are missing"),
    (lambda m: m.update(source="x" * 500), "source: expected one of torchvision, timm, transformers, python, got 'xxx"),
    (lambda m: m.update(source="transformers"), "config: a transformers model needs the model's config (a mapping), got None"),
    (lambda m: m.update(source="python"), "module: a python model needs 'package.module:factory', got None"),
    (lambda m: m.update(anatomy=[1, 2]), "anatomy: expected a mapping, got [1, 2]"),
    (lambda m: m.update(model_args="x"), "model_args: expected a mapping, got 'x'"),
    (lambda m: m.update(name="resnet9000"), "unknown model 'resnet9000'"),
])
def test_a_hand_edited_model_json_is_one_error_naming_the_file(tmp_path, change, message):
    built = Classifier.from_torchvision("mobilenet_v2", "none", num_classes=2, seed=0)
    save_model_folder(built.module, tmp_path, GOOD)
    meta = json.loads((tmp_path / "model.json").read_text())
    change(meta)
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError) as err:
        Classifier.from_run(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'model.json'}: {message}")
    assert "x" * 100 not in str(err.value)  # an echoed value is bounded


def test_a_python_factory_named_in_model_json_runs_only_when_trusted(tmp_path, monkeypatch):
    """A shared run folder must not choose code to run: the factory is called only with
    trust_code=True or when the caller names the same factory (the recipe's model.module)."""
    from xaudit.models import classifier as classifier_module

    spec = "torchvision.models:mobilenet_v2"
    built = Classifier.from_torchvision("mobilenet_v2", "none", num_classes=2, seed=0)
    save_model_folder(built.module, tmp_path, {**GOOD, "source": "python", "module": spec,
                                              "model_args": {"num_classes": 2}})
    called = []
    real = classifier_module.import_factory
    monkeypatch.setattr(classifier_module, "import_factory", lambda s: called.append(s) or real(s))
    for refused in (False, "own_model:make"):
        with pytest.raises(ModelError, match=r"model.json: rebuilding this model calls the Python "
                                             r"factory the file names \(module: 'torchvision.models:mobilenet_v2'\)"):
            Classifier.from_run(tmp_path, trust_code=refused)
    assert called == []
    for trusted in (True, spec):
        clf = Classifier.from_run(tmp_path, trust_code=trusted)
        assert clf.classes == ["a", "b"]
        torch.testing.assert_close(clf.module.state_dict()["classifier.1.weight"],
                                   built.module.state_dict()["classifier.1.weight"])
    assert called == [spec, spec]


@pytest.mark.parametrize(
    "index, message",
    [
        ({"chunks": {}}, "expected an object with a list of chunks"),
        ({"chunks": [{"file": "../../x.safetensors", "ids": ["a"]}]}, "is not a chunk file name of this folder"),
        ({"chunks": [{"file": "c.safetensors", "ids": [1]}]}, "chunks[0].ids: expected image ids"),
        ({"chunks": [{"file": "c.safetensors", "ids": ["a"]}, {"file": "d.safetensors", "ids": ["a"]}]},
         "chunks[1]: image id 'a' is stored twice"),
    ],
)
def test_bad_map_index_is_one_error_naming_the_file(tmp_path, index, message):
    path = write(tmp_path, index, "index.json")
    with pytest.raises(XauditError) as err:
        read_map_index(path, "saliency")
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_model_and_map_files_get_the_mode_of_every_other_artifact(tmp_path):
    umask = os.umask(0o022)
    try:
        built = Classifier.from_torchvision("mobilenet_v2", "none", num_classes=2, seed=0)
        save_model_folder(built.module, tmp_path / "model", GOOD)
        store = MapStore(tmp_path / "maps", "saliency")
        store.write_chunk(["a"], torch.zeros(1, 4, 4), torch.zeros(1), None)
    finally:
        os.umask(umask)
    files = [tmp_path / "model" / "model.safetensors", tmp_path / "model" / "model.json",
             store.dir / "chunk_00000.safetensors", store.index_path]
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: 0o644 for f in files}


def test_a_checkpoints_content_digest_is_its_bytes_and_a_folders_names_and_bytes(tmp_path):
    import hashlib

    from xaudit.models.checkpoints import content_digest

    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"abc" * 1000)
    assert content_digest(weights) == hashlib.sha256(b"abc" * 1000).hexdigest()
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "w.bin").write_bytes(b"x")
    before = content_digest(folder)
    assert before == hashlib.sha256(b"config.json{}sub/w.binx").hexdigest()
    (folder / "sub" / "w.bin").write_bytes(b"y")
    assert content_digest(folder) != before and content_digest(tmp_path / "none") == ""
