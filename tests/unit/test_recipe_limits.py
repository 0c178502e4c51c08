"""Recipe loading against hostile input: alias bombs, huge values, out-of-range numbers."""

from __future__ import annotations

import time

import pytest

from xaudit.config import Recipe, check_ranges, load_recipe, range_text
from xaudit.errors import ConfigError, echo


def bomb(key: str, levels: int = 9) -> str:
    """A "billion laughs" recipe: ``key`` holds 9**levels strings through nested aliases."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    body = "\n".join(lines)
    # The anchors live under a key the recipe refuses; the bomb is referenced where asked.
    return f"x-anchors:\n  {body.replace(chr(10), chr(10) + '  ')}\n{key}: *a{levels - 1}\n"


@pytest.mark.parametrize("key", ["name", "seed"])
def test_alias_bomb_is_refused_quickly_with_a_short_message(tmp_path, key):
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb(key))
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    assert time.perf_counter() - t0 < 2
    msg = str(err.value)
    assert "aliases are expanded" in msg and str(path) in msg
    assert len(msg) < 300


def test_alias_bomb_in_set_value_is_refused():
    value = "[" + ", ".join(["[" + ", ".join(["x"] * 50) + "]"] * 50) + "]"  # fine: 2,551 items
    with pytest.raises(ConfigError, match="data.classes"):
        load_recipe(overrides=[f"data.classes={value}"])
    with pytest.raises(ConfigError, match="contains itself"):
        load_recipe(overrides=["name=&a [*a]"])
    levels = ", ".join(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9))
    with pytest.raises(ConfigError, match="aliases are expanded"):
        load_recipe(overrides=["data.classes={a0: &a0 [x, x, x, x, x, x, x, x, x], " + levels + "}"])


def test_modest_aliases_still_load(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        "name: shared\nexplain:\n  methods:\n    - &ig {name: integrated_gradients, n_steps: 8}\n"
        "    - {name: saliency}\n"
    )
    assert load_recipe(path).explain.methods[0] == {"name": "integrated_gradients", "n_steps": 8}


def test_recursive_alias_and_deep_nesting_are_one_error(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: &a [*a]\n")
    with pytest.raises(ConfigError, match="contains itself"):
        load_recipe(path)
    path.write_text("name: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested"):
        load_recipe(path)


def test_echo_bounds_huge_and_recursive_values():
    big = [[["x" * 1000] * 1000] * 1000] * 1000  # shared: cheap to build, huge to print
    assert len(echo(big)) <= 80
    loop: list = []
    loop.append(loop)
    assert len(echo(loop)) <= 80
    assert echo("short") == "'short'"


def test_wrong_type_error_quotes_a_bounded_value():
    huge = ["y" * 10_000] * 10_000
    with pytest.raises(ConfigError) as err:
        load_recipe(name=huge)
    assert str(err.value).startswith("name: expected str, got [")
    assert len(str(err.value)) < 200


def test_non_utf8_recipe_names_the_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not UTF-8 text"):
        load_recipe(path)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.image_size=0", "model.image_size: must be in [8, 4096], got 0"),
        ("model.image_size=-5", "model.image_size: must be in [8, 4096], got -5"),
        ("model.image_size=100000", "model.image_size: must be in [8, 4096], got 100000"),
        ("model.resize_size=0", "model.resize_size: must be in [8, 4096], got 0"),
        ("data.synthetic.image_size=100000", "data.synthetic.image_size: must be in [8, 4096], got 100000"),
        ("seed=100000000000000000000000000000",
         "seed: must be in [0, 4294967295], got 100000000000000000000000000000"),
        ("seed=-1", "seed: must be in [0, 4294967295], got -1"),
        ("audit.n_images=-1", "audit.n_images: must be at least 1, got -1"),
        ("report.max_figures=-5", "report.max_figures: must be 0 or more, got -5"),
        ("train.augment.rotation=.nan", "train.augment.rotation: must be in [0, 180], got nan"),
        ("train.augment.rotation=.inf", "train.augment.rotation: must be in [0, 180], got inf"),
        ("train.lr=.nan", "train.lr: must be greater than 0, got nan"),
        ("train.epochs=0", "train.epochs: must be in [1, 10000], got 0"),
        ("train.patience=0", "train.patience: must be at least 1, got 0"),
        ("train.augment.crop_scale_min=0", "train.augment.crop_scale_min: must be in (0, 1], got 0.0"),
        ("data.synthetic.shortcut_size=0.5", "data.synthetic.shortcut_size: must be in (0, 0.3], got 0.5"),
        ("model.mean=[0.5, 0.5]", "model.mean: must hold 3 numbers, got 2"),
        ("model.std=[0.2, 0, 0.2]", "model.std[1]: must be in (0, 1], got 0.0"),
        ("model.mean=[0.5, .nan, 0.5]", "model.mean[1]: must be in [0, 1], got nan"),
        ("explain.tolerance=0", "explain.tolerance: must be greater than 0, got 0.0"),
        ("explain.memory_budget_mb=0", "explain.memory_budget_mb: must be at least 1, got 0"),
        ("audit.regions={tag: [0, 0, 2, 1]}", "audit.regions.tag[2]: must be in [0, 1], got 2.0"),
        ("audit.regions={tag: [0.5, 0, 0.2, 1]}", "audit.regions.tag: needs x0 < x1 and y0 < y1, got [0.5, 0.0, 0.2, 1.0]"),
        ("data.splits={train: .nan, val: 0.5, test: 0.5}", "data.splits.train: must be in [0, 1], got nan"),
        ("data.splits={train: 0.2, val: 0.2, test: 0.2}", "data.splits: fractions must be 0 or more and add up to 1"),
    ],
)
def test_out_of_range_values_name_the_key_and_range(override, message):
    with pytest.raises(ConfigError) as err:
        load_recipe(overrides=[override])
    assert str(err.value).startswith(message), str(err.value)


def test_every_numeric_default_is_in_range_and_every_bound_is_enforced():
    recipe = Recipe()
    check_ranges(recipe)  # the defaults are valid
    # Each bounded field, set just outside its lower bound, is refused by the generic checker.
    import dataclasses

    def walk(section, prefix=""):
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            key = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(value):
                yield from walk(value, key + ".")
            elif "ge" in f.metadata or "gt" in f.metadata:
                yield key, f.metadata

    checked = 0
    for key, limits in walk(recipe):
        lo = limits.get("ge", limits.get("gt"))
        bad = lo - 1 if "ge" in limits else lo
        value = [bad] * limits["length"] if "length" in limits else bad
        if key == "audit.regions":
            value = {"r": value}
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_recipe(overrides=[f"{key}={value}"])
        checked += 1
    assert checked >= 30


def test_range_text_shapes():
    assert range_text({"ge": 1}) == "must be at least 1"
    assert range_text({"ge": 0}) == "must be 0 or more"
    assert range_text({"gt": 0}) == "must be greater than 0"
    assert range_text({"gt": 0, "le": 1}) == "must be in (0, 1]"
    assert range_text({"ge": 0, "lt": 1.5}) == "must be in [0, 1.5)"
    assert range_text({}) == "must be a finite number"


def test_docs_list_every_declared_range():
    import dataclasses
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "recipe.md").read_text()
    rows = []

    def walk(section, prefix=""):
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, prefix + f.name + ".")
            elif f.metadata:
                limits = dict(f.metadata)
                allowed = range_text({k: v for k, v in limits.items() if k != "length"}).replace("must be ", "")
                if "length" in limits:
                    allowed += f"; {limits['length']} numbers"
                rows.append(f"| `{prefix}{f.name}` | {allowed} |")

    walk(Recipe())
    assert len(rows) >= 30
    assert [r for r in rows if r not in text] == []


@pytest.mark.parametrize("name", ["a\nb", "run\x1b[31m", "tab\there", "evil\u202etxt.exe", "del\x7f"])
def test_control_characters_in_a_run_name_are_refused(name):
    with pytest.raises(ConfigError, match=r"^name: .* cannot name a run folder \(.*no control or "
                                          r"bidirectional-control characters") as err:
        load_recipe(name=name)
    assert "\n" not in str(err.value) and "\x1b" not in str(err.value) and "\u202e" not in str(err.value)
    assert load_recipe(name="run-ü_猫 2").name == "run-ü_猫 2"  # letters of any script, spaces: kept
