"""Rewrite the registries' part of src/xaudit/catalog.py from the registries themselves.

`xaudit --help` and `xaudit list` read catalog.py so that they need no torch import; run this
after adding a method, audit, data source or torchvision release (tests/unit/test_catalog.py
fails until then): python scripts/catalog.py
"""

from __future__ import annotations

import inspect
import re
import textwrap
from pathlib import Path

from xaudit.audit import AUDITS
from xaudit.audit.base import audit_params
from xaudit.data import SOURCES
from xaudit.explain import EXPLAINERS
from xaudit.models import classification_models

PATH = Path(__file__).resolve().parents[1] / "src" / "xaudit" / "catalog.py"


def _defaults(cls) -> dict:
    sig = inspect.signature(cls.__init__)
    return {k: p.default for k, p in sig.parameters.items()
            if k != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def block() -> str:
    lines = ["# name -> (kind, {parameter: default})", "METHODS: dict[str, tuple[str, dict]] = {"]
    lines += [f"    {n!r}: ({EXPLAINERS.get(n).kind!r}, {_defaults(EXPLAINERS.get(n))!r}),"
              for n in EXPLAINERS.names()]
    lines += ["}", "# name -> {parameter: default}", "AUDITS: dict[str, dict] = {"]
    lines += [f"    {n!r}: {audit_params(n)!r}," for n in AUDITS.names()]
    lines += ["}", f"SOURCES: tuple[str, ...] = {tuple(SOURCES.names())!r}", "MODELS: tuple[str, ...] = ("]
    lines += textwrap.wrap(", ".join(repr(m) for m in classification_models()) + ",",
                           width=96, initial_indent="    ", subsequent_indent="    ")
    lines += [")"]
    return "\n".join(lines) + "\n"


def main() -> None:
    text = PATH.read_text(encoding="utf-8")
    new = re.sub(r"# name -> \(kind, \{parameter: default\}\)\n.*?\n\)\n", lambda _m: block(), text,
                 count=1, flags=re.S)
    PATH.write_text(new, encoding="utf-8")


if __name__ == "__main__":
    main()
