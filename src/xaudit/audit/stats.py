"""The verdict's statistics: one-sided t-tests with an indifference zone, Holm, sample sizes.

Every ruled check reduces to a per-image *advantage* ``a_i`` (positive = in the method's
favour): the method's value minus a negative control's on the same image (paired), or the
value's distance from a stated threshold (one-sample). Two one-sided tests read it, with a
smallest difference that matters δ = ``min_effect`` × the standard deviation of ``a``
(Cohen's d_z; 0.5, a "medium" effect, by default):

- superiority (``controls``, ``superior``): pass when μ > 0 is shown, fail when μ < δ is;
- non-inferiority (``noninferior``): pass when μ > −δ is shown, fail when μ < 0 is.

"Shown" means the one-sided p-value is at most the level of the look. μ > 0 against μ ≤ 0
is Student's t-test; μ < δ against μ ≥ δ (δ in units of σ) is the non-central t-test of a
standardised effect. Between the two boundaries either answer is right, so as images are
added every check ends decided (unless its effect sits exactly on a boundary, which the
zone's width makes a finite-n question); where both are shown at once, the boundary the
mean is farther from decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05  # error rate of each decision the verdict states
MIN_EFFECT = 0.5  # Cohen's d_z "medium": the smallest standardised difference that matters
POWER = 0.8  # power the images-to-decide estimate plans for
KINDS = ("controls", "superior", "noninferior")


@dataclass(frozen=True)
class Test:
    """One one-sided test pair on an advantage series (see the module's docstring)."""

    kind: str
    n: int
    mean: float  # mean advantage
    sd: float
    delta: float  # the smallest difference that matters, in the advantage's units
    p_pass: float  # p-value of "the method is not better" (of "worse by δ" for noninferior)
    p_fail: float  # p-value of "better by δ" (of "not worse" for noninferior)
    level: float  # the level the raw decision used

    @property
    def zone(self) -> tuple[float, float]:
        """(boundary a pass rules out, boundary a fail rules out) in advantage units."""
        return (0.0, self.delta) if self.kind != "noninferior" else (-self.delta, 0.0)

    def decision(self, fail_shown: bool | None = None) -> str:
        """``pass`` / ``fail`` / ``open`` at this test's level; ``fail_shown`` overrides the
        fail side's raw decision (e.g. with Holm's over a family of tests)."""
        if self.n < 2 or not math.isfinite(self.mean):
            return "open"
        passes = self.p_pass <= self.level
        fails = self.p_fail <= self.level if fail_shown is None else fail_shown
        if passes and fails:  # inside the zone: the farther boundary is ruled out more firmly
            bad, good = self.zone
            return "pass" if self.mean - bad >= good - self.mean else "fail"
        return "pass" if passes else "fail" if fails else "open"

    def bounds(self) -> tuple[float, float]:
        """The two-sided interval at this test's level (the one-sided bounds' pair)."""
        if self.n < 2:
            return float("nan"), float("nan")
        half = float(stats.t.ppf(1 - self.level, self.n - 1)) * self.sd / math.sqrt(self.n)
        return self.mean - half, self.mean + half

    def images_to_decide(self) -> int | None:
        """Images at which this effect, if it is what was observed, would be decided with
        ``POWER``: the normal approximation n = ((z_level + z_power) / distance)², with the
        distance from the observed standardised effect to the boundary it is heading past."""
        if self.n < 2 or not math.isfinite(self.mean):
            return None
        if self.sd == 0:
            return self.n
        dz = self.mean / self.sd
        bad, good = (b / self.sd for b in self.zone)
        distance = max(dz - bad, good - dz)  # toward pass if nearer good, else toward fail
        z = stats.norm.ppf(1 - self.level) + stats.norm.ppf(POWER)
        return max(self.n + 1, int(math.ceil((z / max(distance, 1e-9)) ** 2)) + 1)


def advantage(values: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Orient a difference so that positive favours the method."""
    return values if higher_is_better else -values


def one_sided(a: np.ndarray, kind: str, level: float, min_effect: float = MIN_EFFECT,
              delta: float | None = None) -> Test:
    """The test pair of ``kind`` on advantage ``a`` (non-finite values dropped); ``delta``:
    the smallest difference that matters in ``a``'s units, else ``min_effect`` × its SD."""
    if kind not in KINDS:
        raise ValueError(f"check: expected one of {', '.join(KINDS)}, got {kind!r}")
    a = np.asarray(a, dtype=np.float64).ravel()
    a = a[np.isfinite(a)]
    n = int(a.size)
    if n < 2:
        mean = float(a.mean()) if n else float("nan")
        return Test(kind, n, mean, float("nan"), float("nan"), 1.0, 1.0, level)
    mean, sd = float(a.mean()), float(a.std(ddof=1))
    df, root = n - 1, math.sqrt(n)
    if sd == 0:
        # Every image agrees exactly: nothing is uncertain. A tie with the yardstick is no
        # advantage (superiority fails), but is no harm either (non-inferiority passes).
        d = delta or 0.0
        if kind == "noninferior":
            passes, fails = mean >= -d, mean < 0
        else:
            passes, fails = mean > 0, mean <= d
        return Test(kind, n, mean, 0.0, d, 0.0 if passes else 1.0, 0.0 if fails else 1.0, level)
    se = sd / root
    t_obs = mean / se
    if delta is not None:  # a stated difference: both halves are Student's t-tests
        if kind == "noninferior":
            p_pass, p_fail = float(stats.t.sf((mean + delta) / se, df)), float(stats.t.cdf(t_obs, df))
        else:
            p_pass, p_fail = float(stats.t.sf(t_obs, df)), float(stats.t.cdf((mean - delta) / se, df))
        return Test(kind, n, mean, sd, delta, p_pass, p_fail, level)
    shift = min_effect * root  # δ = min_effect·σ as a non-centrality
    if kind == "noninferior":
        p_pass = _tail(stats.nct.sf(t_obs, df, -shift), t_obs > -shift)
        p_fail = float(stats.t.cdf(t_obs, df))
    else:
        p_pass = float(stats.t.sf(t_obs, df))
        p_fail = _tail(stats.nct.cdf(t_obs, df, shift), t_obs < shift)
    return Test(kind, n, mean, sd, min_effect * sd, p_pass, p_fail, level)


def _tail(p: float, far_side: bool) -> float:
    """scipy's non-central t returns NaN far out in a tail, where the p-value is 0 or 1."""
    p = float(p)
    return p if math.isfinite(p) else (0.0 if far_side else 1.0)


def paired(mine: np.ndarray, theirs: np.ndarray, higher_is_better: bool, level: float,
           min_effect: float = MIN_EFFECT, mine_ids: list[str] | None = None,
           their_ids: list[str] | None = None, delta: float | None = None) -> Test:
    """Superiority of ``mine`` over ``theirs``, image by image (by id where both have ids,
    else by position); images where either value is missing are dropped."""
    mine, theirs = np.asarray(mine, np.float64), np.asarray(theirs, np.float64)
    if mine_ids is not None and their_ids is not None:
        where = {k: i for i, k in enumerate(their_ids)}
        common = [(i, where[k]) for i, k in enumerate(mine_ids) if k in where]
        a = np.array([mine[i] - theirs[j] for i, j in common], dtype=np.float64)
    elif len(mine) == len(theirs):
        a = mine - theirs
    else:
        raise ValueError(f"paired values need the same images: {len(mine)} against {len(theirs)}")
    return one_sided(advantage(a, higher_is_better), "controls", level, min_effect, delta)


def holm(p_values: list[float], alpha: float) -> list[bool]:
    """Which hypotheses Holm's step-down rejects at family-wise level ``alpha``."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    for step, i in enumerate(order):
        if p_values[i] > alpha / (len(p_values) - step):
            break
        rejected[i] = True
    return rejected
