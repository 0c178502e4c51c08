"""The light catalog that `xaudit list` and `--help` read equals the registries."""

from __future__ import annotations

import inspect

from xaudit import catalog
from xaudit.audit import AUDITS
from xaudit.audit.base import audit_params
from xaudit.data import SOURCES
from xaudit.explain import EXPLAINERS
from xaudit.models import OFFLINE_WEIGHTS, classification_models


def test_methods_equal_the_explainer_registry():
    assert list(catalog.METHODS) == EXPLAINERS.names()
    for name, (kind, params) in catalog.METHODS.items():
        cls = EXPLAINERS.get(name)
        sig = inspect.signature(cls.__init__)
        defaults = {k: p.default for k, p in sig.parameters.items() if k != "self"
                    and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        assert (kind, params) == (cls.kind, defaults), name
        assert kind in catalog.COST_BY_KIND, kind


def test_audits_sources_and_models_equal_their_registries():
    assert catalog.AUDITS == {n: audit_params(n) for n in AUDITS.names()}
    assert list(catalog.SOURCES) == SOURCES.names()
    assert list(catalog.MODELS) == classification_models()
    packaged = {parts[0] for _, _, parts in OFFLINE_WEIGHTS.values()}
    assert {p for p, _ in catalog.PACKAGED_WEIGHTS.values()} == packaged


def test_offline_weights_reads_the_hub_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(catalog, "PACKAGED_WEIGHTS", {})
    assert catalog.offline_weights("resnet18") == ""
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth").write_bytes(b"x")
    assert catalog.offline_weights("resnet18").startswith("cached in ")
    assert catalog.offline_weights("resnet34") == ""


def test_the_all_methods_demo_runs_every_registered_method():
    from pathlib import Path

    from xaudit.recipe import load_recipe

    recipe = load_recipe(Path(__file__).parents[2] / "configs" / "demo-all-methods.yaml")
    names = [m["name"] if isinstance(m, dict) else m.name for m in recipe.explain.methods]
    assert sorted(names) == sorted(EXPLAINERS.names()) and recipe.audit.enabled
