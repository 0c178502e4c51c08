"""Stage fingerprints cover exactly what each stage reads."""

from __future__ import annotations

import pytest

from xaudit.recipe import load_recipe, to_dict
from xaudit.run import STAGES, dependents, stage_fingerprints

ALL = set(STAGES)


@pytest.mark.parametrize(
    "override, changed",
    [
        ("seed=3", ALL),
        ("data.max_per_class=5", ALL),
        ("model.image_size=64", ALL),
        ("train.epochs=2", ALL),
        ("evaluate.top_losses=3", {"evaluate", "explain", "audit", "report"}),
        ("explain.select.per_class=4", {"explain", "report"}),
        ("explain.select.all=true", {"explain", "report"}),
        ("explain.batch_size=4", {"explain", "report"}),
        ("explain.chunk_size=8", {"explain", "report"}),
        ("explain.methods=[{name: saliency}]", {"explain", "audit", "report"}),
        ("explain.target='true'", {"explain", "audit", "report"}),
        ("audit.n_images=4", {"audit", "report"}),
        ("audit.enabled=true", {"audit", "report"}),
        ("report.max_figures=3", {"explain", "report"}),
    ],
)
def test_a_key_changes_the_stages_that_read_it_and_those_using_them(override, changed):
    base = stage_fingerprints(to_dict(load_recipe()))
    new = stage_fingerprints(to_dict(load_recipe(overrides=[override])))
    assert {s for s in STAGES if base[s] != new[s]} == changed


def test_dependents_follow_the_stage_inputs():
    assert dependents("train") == list(STAGES)
    assert dependents("evaluate") == ["evaluate", "explain", "audit", "report"]
    assert dependents("explain") == ["explain", "report"]
    assert dependents("audit") == ["audit", "report"]
    assert dependents("report") == ["report"]
