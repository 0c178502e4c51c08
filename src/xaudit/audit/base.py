"""The audits' shared vocabulary in one import: types, registry, maps, helpers and the runner.

Each piece lives in its own module (``types``, ``registry``, ``maps``, ``helpers``,
``runner``); audit modules import them from here.
"""

from __future__ import annotations

from ..safety import safe_name
from .helpers import fork_seed, nan_to_none, plain, stratified, sub_generator
from .maps import (
    CountedExplain,
    affordable_evals,
    class_scores,
    compute_maps,
    ctx_for,
    left_out_text,
    over_budget,
    trained_maps,
)
from .registry import (
    AUDITS,
    INFO,
    AuditInfo,
    audit_info,
    audit_params,
    model_level_audits,
    no_extra_cost,
    register_audit,
    skipped,
    validate_audit_specs,
)
from .types import AuditImages, AuditInput, AuditResult, Cell, Maps

__all__ = [
    "AUDITS", "INFO", "AuditImages", "AuditInfo", "AuditInput", "AuditResult", "Cell",
    "CountedExplain", "Maps", "affordable_evals", "left_out_text", "over_budget",
    "audit_info", "audit_params", "class_scores", "compute_maps", "ctx_for", "fork_seed",
    "model_level_audits", "nan_to_none", "no_extra_cost", "plain", "register_audit",
    "safe_name", "skipped", "stratified", "sub_generator", "trained_maps",
    "validate_audit_specs",
]
