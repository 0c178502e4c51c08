"""The known-truth suite (`xaudit validate`): every case through the product's audits, the
verdict beside the truth, an agreement figure and the musts.

Musts (exit 1 when one breaks): no negative control is ever trusted, nothing faithful by
construction is called "do not trust", guided backprop is never trusted.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from . import lesions, patch_model, sanity
from .cells import CaseResult

# Images audited per case, and the lesion case's training and scoring sizes. ``small`` runs
# in the unit tests (about a minute on two busy cores); ``full`` audits more images, which
# narrows the intervals the verdict reads, and adds methods whose truth is not known.
SIZES: dict[str, dict[str, Any]] = {
    "small": {"patch": {"n_images": 6}, "sanity": {"n_images": 6},
              "lesions": {"n_images": 6, "truth_images": 12}},
    "full": {"patch": {"n_images": 16, "extra_methods": True},
             "sanity": {"n_images": 16, "train_images": 256, "steps": 300},
             "lesions": {"n_images": 12, "truth_images": 32, "train_per_class": 64, "steps": 300,
                         "methods": ("saliency", "integrated_gradients", "grad_cam",
                                     "guided_backprop")}},
}
QUIET = ("randomization_controls", "images_scored")  # in validate.json, not the table
CASES: dict[str, Callable[..., CaseResult]] = {
    "patch": patch_model.run, "sanity": sanity.run, "lesions": lesions.run}


@dataclass
class SuiteResult:
    size: str
    seed: int
    cases: list[CaseResult]
    seconds: float

    @property
    def agreement(self) -> tuple[int, int]:
        pairs = [c.agreement for c in self.cases]
        return sum(a for a, _ in pairs), sum(n for _, n in pairs)

    @property
    def musts_hold(self) -> bool:
        return not any(c.broken for c in self.cases)

    def as_dict(self) -> dict[str, Any]:
        agree, total = self.agreement
        return {"size": self.size, "seed": self.seed, "torch": torch.__version__,
                "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "seconds": round(self.seconds, 1), "musts_hold": self.musts_hold,
                "agree": agree, "cells": total, "cases": [c.as_dict() for c in self.cases]}


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """The cases' models are tiny: on shared cores, intra-op threads cost far more than they
    save (measured: 150 training steps took 0.9 s on one thread, 8 s on two)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_suite(size: str = "small", seed: int = 0, cases: tuple[str, ...] = tuple(CASES),
              log: Callable[[str], None] = print) -> SuiteResult:
    if size not in SIZES:
        raise ValueError(f"size: expected one of {', '.join(SIZES)}, got {size!r}")
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise ValueError(f"cases: unknown {', '.join(unknown)}; allowed: {', '.join(CASES)}")
    t0 = time.perf_counter()
    results = []
    with one_thread():
        for name in cases:
            results.append(CASES[name](seed=seed, log=log, **SIZES[size][name]))
            log(f"{results[-1].name}: done in {results[-1].seconds:.1f} s")
    return SuiteResult(size, seed, results, time.perf_counter() - t0)


def table_lines(result: SuiteResult) -> list[str]:
    """Per case and method: truth, xaudit's state, agreement and the must; then the totals."""
    lines = []
    width = max(len(c.method) for case in result.cases for c in case.cells)
    for case in result.cases:
        agree, total = case.agreement
        lines.append(f"── {case.name}: {agree}/{total} agree ({case.seconds:.0f} s)")
        lines.append(f"  {'method':<{width}}  {'truth':<10}  {'xaudit':<12}  agree  must")
        for c in case.cells:
            agrees = "–" if c.agrees is None else ("yes" if c.agrees else "no")
            must = "–" if not c.must else (f"ok (not {c.must})" if c.holds else f"BROKEN ({c.state})")
            lines.append(f"  {c.method:<{width}}  {c.truth:<10}  {c.state:<12}  {agrees:<5}  {must}")
        lines.append("  " + "; ".join(f"{k}: {_short(v)}" for k, v in case.numbers.items()
                                      if k not in QUIET))
    agree, total = result.agreement
    share = f"{agree / total:.0%}" if total else "n/a"
    lines.append(f"── agreement {agree}/{total} ({share}); musts "
                 + ("hold" if result.musts_hold else "BROKEN") + f"; {result.seconds:.0f} s")
    return lines


def _short(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    return str(value)


def save(result: SuiteResult, folder: str | Path) -> Path:
    """``validate.json`` in ``folder`` (atomic)."""
    from ..run import write_json

    path = Path(folder) / "validate.json"
    write_json(path, _no_nan(result.as_dict()))
    return path


def _no_nan(value: Any) -> Any:
    """NaN (a score with nothing to rank) as null: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(v) for v in value]
    return value
