"""Audits of explanation methods: each a registered function returning an AuditResult."""

from . import (  # noqa: F401  (register the audits)
    cam_layers,
    complexity,
    convergence,
    correctness,
    correlation,
    faithfulness,
    localization,
    random_logit,
    randomization,
    robustness,
    shortcut,
    smooth_randomization,
)
from .base import (
    AUDITS,
    AuditImages,
    AuditInput,
    AuditResult,
    Cell,
    validate_audit_specs,
)
from .runner import PRESETS, resolve_specs, run_audits

__all__ = [
    "AUDITS",
    "AuditImages",
    "AuditInput",
    "AuditResult",
    "Cell",
    "PRESETS",
    "resolve_specs",
    "run_audits",
    "validate_audit_specs",
]

from .._callable import make_callable  # noqa: E402

make_callable(__name__, "audit")  # xaudit.audit(clf, images, labels, ...): see xaudit.api
