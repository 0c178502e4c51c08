"""``xaudit.explain`` and ``xaudit.audit`` are both a subpackage and the library's verb.

Python binds a subpackage to its parent's attribute of the same name once it is imported,
so a plain function ``xaudit.audit`` would be replaced by the package. Instead the two
packages are made callable: ``xaudit.audit(clf, ...)`` runs ``xaudit.api.audit`` and
``from xaudit.audit import similarity`` still finds the package's modules.
"""

from __future__ import annotations

import sys
import types


def make_callable(module_name: str, verb: str) -> None:
    def __call__(self, *args, **kwargs):  # noqa: N807
        from . import api

        return getattr(api, verb)(*args, **kwargs)

    def __repr__(self) -> str:  # noqa: N807
        return f"<xaudit.{verb}: the {verb} verb (xaudit.api.{verb}) and its package>"

    cls = type(f"{verb.title()}Package", (types.ModuleType,), {"__call__": __call__,
                                                               "__repr__": __repr__})
    sys.modules[module_name].__class__ = cls
