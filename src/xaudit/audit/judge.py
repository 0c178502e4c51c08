"""The verdict's rules: each ruled cell tested against the negative controls, each method judged.

A ``controls`` cell is paired, image by image, with the same metric of every negative control
(for a control: every *other* control; where a run has no controls, the audit's own reference
maps), and passes only when it beats each of them (an intersection–union test: every test
at the look's level). A ``superior`` / ``noninferior`` cell is a one-sample test against its
stated threshold. Tests and boundaries: ``stats.py``.

A method is **trusted** when every counted cell passes and it passed a check of each required
family (randomization and faithfulness, whether or not the run audited them): the trust statement errs at most at the look's level (α / (k (k + 1))
at look k, ``rounds.py``; these sum to α over all looks). It is **do not trust** when one of its
tests is shown to fail under Holm's step-down over all of the method's fail tests, so the
chance of a false "do not trust" is at most α as well. Anything else is **undecided**, with
the images its open tests are estimated to need.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .controls import is_control
from .registry import INFO, model_level_audits
from .stats import ALPHA, MIN_EFFECT, Test, holm, one_sided, paired
from .types import Cell

NOT_TESTED, NOT_INFORMATIVE = "not tested", "not informative"
# Families a trusted method must pass a check of: maps of noise
# pass randomization, maps of the image (edges, the centre) can pass faithfulness or
# localization; only a map that explains the model passes both kinds.
REQUIRED_FAMILIES = ("randomization", "faithfulness")
THRESHOLD = "threshold"  # the yardstick's name of a one-sample test


@dataclass
class CellVerdict:
    """One cell's status and the tests behind it (``against``: a control, or THRESHOLD)."""

    status: str  # pass | fail | inconclusive | not tested | not informative | "" (no rule)
    tests: list[tuple[str, Test]] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)  # each test's pass / fail / open
    why: str = ""  # for "not tested" without a note of the audit's own

    def deciding(self) -> tuple[str, Test] | None:
        """The test that decided the cell: a failed one, else the weakest pass (the control
        it beat by least), else the open test farthest from a decision."""
        if not self.tests:
            return None
        ranked = list(zip(self.decisions, self.tests, strict=True))
        for decision, test in ranked:
            if decision == "fail":
                return test
        if self.status == "pass":
            return max(ranked, key=lambda r: r[1][1].p_pass)[1]
        opened = [r for r in ranked if r[0] == "open"]
        return max(opened or ranked, key=lambda r: min(r[1][1].p_pass, r[1][1].p_fail))[1]

    def images_to_decide(self) -> int | None:
        """The most images any of the cell's open tests is estimated to need."""
        needs = [t.images_to_decide() for d, (_, t) in zip(self.decisions, self.tests, strict=True)
                 if d == "open"]
        needs = [n for n in needs if n is not None]
        return max(needs) if needs else None


@dataclass
class Judgement:
    """How the rules read one method's cells."""

    counted: list[Cell]  # judged cells that can decide (not "not informative")
    failed: list[Cell]
    unsure: list[Cell]  # inconclusive or not tested
    passed: list[Cell]
    missing: list[str]  # required families without a passed check
    state: str = ""  # trusted | fail | unsure | missing | none | fooled
    hopeless: bool = False  # a required family none of whose checks can count: more images cannot help


@dataclass
class Assessment:
    """Every cell's verdict and every method's judgement, at one level."""

    cells: dict[int, CellVerdict]
    methods: dict[str, Judgement]
    trusted: list[str]
    fooled: list[str]
    alpha: float
    levels: dict[str, float]  # the level each method was judged at (its look's)
    min_effect: float

    def of(self, cell: Cell) -> CellVerdict:
        return self.cells.get(id(cell)) or CellVerdict("")

    def status(self, cell: Cell) -> str:
        return self.of(cell).status

    def state_word(self, method: str) -> str:
        """"trusted" | "do not trust" | "undecided" | "no verdict"."""
        state = self.methods[method].state
        if method in self.trusted:
            return "trusted"
        return {"fail": "do not trust", "none": "no verdict"}.get(state, "undecided")


def ruled(cell: Cell) -> bool:
    return bool(cell.check) or bool(cell.forced)


def _yardsticks(cell: Cell, cells: list[Cell]) -> list[Cell]:
    """The cells a ``controls`` cell is compared with: the same metric's controls (others, for
    a control), or, in a run without controls, the audit's own reference maps."""
    same = [c for c in cells if c.audit == cell.audit and c.metric == cell.metric
            and c.method != cell.method and c.forced is None and len(c.values)]
    controls = [c for c in same if is_control(c.method)]
    if controls or any(is_control(c.method) for c in cells):
        return controls
    return [c for c in same if c.method.endswith("(reference)")]


def _tests(cell: Cell, cells: list[Cell], level: float, min_effect: float) -> list[tuple[str, Test]]:
    kind = cell.check
    if kind == "controls":
        return [(y.method, paired(cell.values, y.values, cell.higher_is_better, level, min_effect,
                                  cell.ids, y.ids, cell.min_difference))
                for y in _yardsticks(cell, cells)]
    threshold = cell.threshold if cell.threshold is not None else 0.0
    diff = np.asarray(cell.values, np.float64) - threshold
    return [(THRESHOLD, one_sided(diff if cell.higher_is_better else -diff, kind, level, min_effect,
                                  cell.min_difference))]


def _judged(cells: list[Cell], method: str) -> list[Cell]:
    """A method's cells that can decide its trust: ruled (or forced) method-audit cells."""
    model_level = model_level_audits()
    return [c for c in cells if c.method == method and c.audit not in model_level and ruled(c)]


def assess(cells: list[Cell], methods: list[str] | None = None, alpha: float = ALPHA,
           min_effect: float = MIN_EFFECT, levels: dict[str, float] | None = None) -> Assessment:
    """Test every ruled cell and judge every method (``methods``: all labels of ``cells``),
    each at its level in ``levels`` (its look's: ``rounds.look_level``), else at ``alpha``."""
    if methods is None:
        methods = list(dict.fromkeys(c.method for c in cells))
    levels = {m: (levels or {}).get(m, alpha) for m in methods}
    verdicts: dict[int, CellVerdict] = {}
    for method in methods:
        level = levels[method]
        judged = _judged(cells, method)
        pending: list[tuple[Cell, list[tuple[str, Test]]]] = []
        for cell in judged:
            if cell.forced:
                verdicts[id(cell)] = CellVerdict(cell.forced)
                continue
            tests = _tests(cell, cells, level, min_effect)
            if not tests:
                verdicts[id(cell)] = CellVerdict(NOT_TESTED, why="no negative control to compare with")
                continue
            pending.append((cell, tests))
        # Holm over every fail test of the method: a false "do not trust" stays within α.
        flat = [t for _, tests in pending for _, t in tests]
        rejected = iter(holm([t.p_fail for t in flat], level))
        for cell, tests in pending:
            decisions = [t.decision(fail_shown=next(rejected)) for _, t in tests]
            status = ("fail" if "fail" in decisions else
                      "pass" if all(d == "pass" for d in decisions) else "inconclusive")
            verdicts[id(cell)] = CellVerdict(status, tests, decisions)
    for cell in cells:  # unruled cells, and the model-level audits' cells
        verdicts.setdefault(id(cell), CellVerdict(cell.forced or ""))
    # Both families are required whether or not the run had them: noise passes every
    # randomization check by construction, so a run without faithfulness trusts nobody.
    required = list(REQUIRED_FAMILIES)
    judgements: dict[str, Judgement] = {}
    for method in methods:
        judged = _judged(cells, method)
        status = {id(c): verdicts[id(c)].status for c in judged}
        passed = [c for c in judged if status[id(c)] == "pass"]
        j = Judgement(
            counted=[c for c in judged if status[id(c)] != NOT_INFORMATIVE],
            failed=[c for c in judged if status[id(c)] == "fail"],
            unsure=[c for c in judged if status[id(c)] in ("inconclusive", NOT_TESTED)],
            passed=passed,
            missing=[f for f in required if not any(INFO[c.audit].family == f for c in passed)],
        )
        # a required family none of whose checks can count (all not informative, or not run)
        # is not a matter of more images: say that first
        hopeless = any(not any(INFO[c.audit].family == f for c in j.counted if c.audit in INFO)
                       for f in j.missing)
        j.hopeless = hopeless
        j.state = ("none" if not j.counted else "fail" if j.failed else "missing" if hopeless
                   else "unsure" if j.unsure else "missing" if j.missing else "trusted")
        judgements[method] = j
    # A control the checks would trust means they cannot tell a map that ignores the model
    # from one that does not: then no method is trusted either.
    fooled = [m for m, j in judgements.items() if j.state == "trusted" and is_control(m)]
    trusted = [] if fooled else [m for m, j in judgements.items() if j.state == "trusted"]
    if fooled:
        for m, j in judgements.items():
            if j.state == "trusted" and not is_control(m):
                j.state = "fooled"
    return Assessment(verdicts, judgements, trusted, fooled, alpha, levels, min_effect)
