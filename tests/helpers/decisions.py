"""The verdict's one-sample decisions on a check's values, as the audit tests assert them."""

from __future__ import annotations

import numpy as np

from xaudit.audit.stats import one_sided


def noninferior(values, level=0.05):
    """The verdict's one-sample noninferiority decision on excess values (lower is better)."""
    decision = one_sided(-np.asarray(values, dtype=float), "noninferior", level).decision()
    return {"open": "inconclusive"}.get(decision, decision)


def superior(values, level=0.05):
    """The verdict's superiority decision over 0 (higher is better)."""
    decision = one_sided(np.asarray(values, dtype=float), "superior", level).decision()
    return {"open": "inconclusive"}.get(decision, decision)
