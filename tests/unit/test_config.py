import pytest

from xaudit.config import Recipe, dump_recipe, from_dict, load_recipe
from xaudit.errors import ConfigError, ModelError, XauditError


def test_defaults_validate():
    recipe = load_recipe()
    assert isinstance(recipe, Recipe)
    assert recipe.data.source == "synthetic"


def test_unknown_key_names_the_dotted_path_and_closest_match():
    with pytest.raises(ConfigError) as err:
        load_recipe(train={"epoch": 3})
    msg = str(err.value)
    assert "train.epoch" in msg and "epochs" in msg and "Did you mean 'epochs'" in msg


def test_wrong_type_names_key_and_type():
    with pytest.raises(ConfigError, match=r"train\.lr: expected float"):
        load_recipe(train={"lr": "fast"})
    with pytest.raises(ConfigError, match=r"train\.epochs: expected int"):
        load_recipe(train={"epochs": 2.5})
    with pytest.raises(ConfigError, match=r"train\.epochs: expected int"):
        load_recipe(train={"epochs": True})


def test_literal_lists_allowed_values():
    with pytest.raises(ConfigError, match="Allowed: frozen, finetune, last_n"):
        load_recipe(model={"mode": "frozn"})


def test_out_of_range_values_rejected():
    with pytest.raises(ConfigError, match=r"train.epochs: must be in \[1, 10000\], got 0"):
        load_recipe(train={"epochs": 0})
    with pytest.raises(ConfigError, match=r"train.epochs: must be in \[1, 10000\], got 1000000000000000000000"):
        load_recipe(train={"epochs": 10**21})
    with pytest.raises(ConfigError, match="data.splits"):
        load_recipe(data={"splits": {"train": 0.5, "val": 0.1, "test": 0.1}})
    with pytest.raises(ConfigError, match="name"):
        load_recipe(name="../escape")


def test_unknown_registry_names_list_allowed():
    with pytest.raises(XauditError, match="unknown data source 'foldr'.*Did you mean 'folder'"):
        load_recipe(data={"source": "foldr"})
    with pytest.raises(ModelError, match="unknown model 'resnet19'"):
        load_recipe(model={"name": "resnet19"})
    with pytest.raises(XauditError, match="unknown explanation method 'integrated_gradient'"):
        load_recipe(explain={"methods": [{"name": "integrated_gradient"}]})
    with pytest.raises(ConfigError, match="occlusion has no parameter 'windw'"):
        load_recipe(explain={"methods": [{"name": "occlusion", "windw": 3}]})


def test_weights_names_checked_against_torchvision():
    recipe = load_recipe(model={"name": "mobilenet_v2", "weights": "IMAGENET1K_V1"})
    assert recipe.model.weights == "IMAGENET1K_V1"
    with pytest.raises(ModelError, match="IMAGENET1K_V1"):
        load_recipe(model={"name": "mobilenet_v2", "weights": "IMAGENET9K"})


def test_overrides_parse_yaml_values(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: x\ntrain:\n  epochs: 2\n")
    recipe = load_recipe(path, ["train.epochs=7", "train.augment.hflip=true", "explain.methods=[{name: saliency}]"])
    assert recipe.train.epochs == 7 and recipe.train.augment.hflip is True
    assert recipe.explain.methods == [{"name": "saliency"}]
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_recipe(path, ["train.epochs"])


def test_round_trip_through_yaml(tmp_path):
    recipe = load_recipe(train={"epochs": 4}, explain={"methods": [{"name": "occlusion", "window": 8}]})
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_recipe(recipe))
    assert load_recipe(path) == recipe


def test_from_dict_rejects_non_mapping():
    with pytest.raises(ConfigError, match="expected a mapping"):
        from_dict(Recipe, {"train": [1, 2]}, "")


def test_missing_recipe_file():
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_recipe("/nonexistent/recipe.yaml")


def test_a_recipe_path_that_is_no_file_says_what_it_is(tmp_path):
    import os

    os.mkfifo(tmp_path / "fifo.yaml")
    (tmp_path / "loop.yaml").symlink_to(tmp_path / "loop.yaml")
    (tmp_path / "dir.yaml").mkdir()
    expected = {
        "fifo.yaml": "not a regular file (a FIFO)",
        "loop.yaml": "cannot read (Too many levels of symbolic links)",
        "dir.yaml": "not a regular file (a folder)",
    }
    for name, what in expected.items():
        with pytest.raises(ConfigError) as info:
            load_recipe(tmp_path / name)
        assert what in str(info.value) and "not found" not in str(info.value)
