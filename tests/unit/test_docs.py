"""The docs stay true: every recipe key is documented, every method and audit listed."""

import dataclasses
import typing
from pathlib import Path

from xaudit.config import Recipe

DOCS = Path(__file__).resolve().parents[2] / "docs"


def dotted_keys(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from dotted_keys(tp, key + ".")
        else:
            yield key


def test_every_recipe_key_is_documented():
    text = (DOCS / "recipe.md").read_text()
    missing = [k for k in dotted_keys(Recipe) if f"`{k}`" not in text]
    assert not missing, f"undocumented recipe keys: {missing}"


def test_every_method_is_documented():
    from xaudit.explain import EXPLAINERS

    text = (DOCS / "methods.md").read_text()
    assert [m for m in EXPLAINERS.names() if f"`{m}`" not in text] == []


def test_every_audit_is_documented():
    from xaudit.audit import AUDITS

    text = (DOCS / "audits.md").read_text()
    assert [a for a in AUDITS.names() if a not in text] == []
