"""Fuzzing the recipe loader: any YAML document or ``--set`` string gives a recipe or one error."""

from __future__ import annotations

import dataclasses
import time

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xaudit.config import Recipe
from xaudit.errors import XauditError
from xaudit.recipe import load_recipe


def _keys(cls: type, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        out.append(key)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            out += _keys(type(default), key + ".")
    return out


KEYS = _keys(Recipe)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.sampled_from(["folder", "synthetic", "frozen", "saliency", "grad_cam", "cpu"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.sampled_from(["name", "n_steps", "window", "train", "x"]) | st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


def nest(flat: dict[str, object]) -> dict:
    out: dict = {}
    for dotted, value in flat.items():
        node = out
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {}) if isinstance(node.get(p, {}), dict) else node
        node[last] = value
    return out


def outcome(**kw) -> str:
    t0 = time.perf_counter()
    try:
        result = load_recipe(**kw)
        assert isinstance(result, Recipe)
        text = "ok"
    except XauditError as err:  # the CLI prints exactly this as its one `error:` line
        text = str(err)
        assert "\n" not in text, text
        assert len(text) < 2000
    assert time.perf_counter() - t0 < 1.0
    return text


load_recipe()  # imports the registries once, so the timings below measure the loader itself
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=10), values, max_size=6))
def test_random_recipe_documents(tmp_path, flat):
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(nest(flat), allow_unicode=True), encoding="utf-8")
    outcome(path=path)


@FUZZ
@given(st.text(max_size=200))
def test_random_recipe_text(tmp_path, text):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    outcome(path=path)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(KEYS) | st.text(max_size=10), st.text(max_size=40)), max_size=3))
def test_random_set_overrides(pairs):
    outcome(overrides=[f"{k}={v}" for k, v in pairs])


@FUZZ
@given(st.lists(st.text(max_size=40), max_size=3))
def test_random_set_strings(texts):
    outcome(overrides=texts)
