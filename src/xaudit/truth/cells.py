"""One case's answer sheet: per method and control, the known truth, xaudit's state and
whether they agree, and the "musts" (what the verdict may never say) checked on it.

Truths, and what "agree" means for each:

- ``faithful`` — the map is right by construction: agree when the verdict trusts it; the
  must is weaker, the verdict may never say "do not trust";
- ``unfaithful`` — the map is known to be wrong for this model: agree when it is not
  trusted, and it must never be trusted;
- ``control`` — a map that ignores the model: as ``unfaithful``;
- ``unknown`` — nothing is known by construction: reported, never counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ..audit.controls import KINDS, control_label

TRUTHS = ("faithful", "unfaithful", "control", "unknown")
STATES = ("trusted", "do not trust", "undecided", "no verdict")
# The audits every case runs: the two families the verdict requires. Occlusion on the
# patch model costs 65 evaluations per image, just above the default budget of 64.
AUDITS: tuple[Any, ...] = ({"name": "model_randomization", "max_method_evals": 128}, "faithfulness")


@dataclass
class Cell:
    """One method or control of one case."""

    case: str
    method: str
    truth: str
    state: str
    why: str = ""  # what the truth rests on (a measured number, or the construction)

    @property
    def counted(self) -> bool:
        return self.truth != "unknown"

    @property
    def agrees(self) -> bool | None:
        if not self.counted:
            return None
        if self.truth == "faithful":
            return self.state == "trusted"
        return self.state != "trusted"

    @property
    def must(self) -> str:
        """The state this cell may never have ("" for none)."""
        return {"faithful": "do not trust", "unfaithful": "trusted", "control": "trusted"}.get(
            self.truth, "")

    @property
    def holds(self) -> bool:
        return not self.must or self.state != self.must

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "agrees": self.agrees, "must_not_be": self.must,
                "holds": self.holds}


@dataclass
class CaseResult:
    """A case's cells, the numbers its truths were computed from, and its run time."""

    name: str
    cells: list[Cell]
    numbers: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def agreement(self) -> tuple[int, int]:
        counted = [c for c in self.cells if c.counted]
        return sum(bool(c.agrees) for c in counted), len(counted)

    @property
    def broken(self) -> list[Cell]:
        return [c for c in self.cells if not c.holds]

    def as_dict(self) -> dict[str, Any]:
        agree, total = self.agreement
        return {"case": self.name, "agree": agree, "cells": total, "seconds": round(self.seconds, 1),
                "musts_hold": not self.broken, "rows": [c.as_dict() for c in self.cells],
                "numbers": self.numbers}


def case_cells(case: str, states: Mapping[str, str], truths: Mapping[str, str],
               why: Mapping[str, str] | None = None) -> list[Cell]:
    """Cells for every method in ``truths`` and every control, read from ``AuditReport.states``.

    A method or control the report has no state for is recorded as "no verdict"."""
    why = why or {}
    bad = {m: t for m, t in truths.items() if t not in TRUTHS}
    if bad:
        raise ValueError(f"truth: expected one of {', '.join(TRUTHS)}, got {bad}")
    cells = [Cell(case, m, t, states.get(m, "no verdict"), why.get(m, "")) for m, t in truths.items()]
    for kind in KINDS:
        label = control_label(kind)
        cells.append(Cell(case, label, "control", states.get(label, "no verdict"),
                          "ignores the model by construction"))
    return cells


def randomization_cells(scorecard: list[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """``{method: {metric: status}}`` of the model-randomization cells that carry a rule."""
    out: dict[str, dict[str, str]] = {}
    for row in scorecard:
        if row.get("audit") == "model_randomization" and row.get("status"):
            out.setdefault(str(row["method"]), {})[str(row["metric"])] = str(row["status"])
    return out


def open_cells(scorecard: list[Mapping[str, Any]], methods: list[str]) -> dict[str, dict[str, str]]:
    """``{method: {"audit/metric": status}}`` of the ruled cells that did not pass: what kept
    a method from being trusted."""
    out: dict[str, dict[str, str]] = {m: {} for m in methods}
    for row in scorecard:
        status = str(row.get("status") or "")
        if row.get("method") in out and status and status != "pass":
            out[str(row["method"])][f"{row['audit']}/{row['metric']}"] = status
    return out
