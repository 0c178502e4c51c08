"""When a deletion or insertion curve can say something about a map.

Per image: a curve whose two ends (the image and the baseline it moves to) score the class
alike cannot tell orderings apart by where they end, only by the path between two equal
scores; that image's area is left out (NaN) for every map. Per audit: a random map's mean
curve that does most of its change at once, or none at all, makes every ordering score alike.
"""

from __future__ import annotations

import numpy as np

EARLY = 0.05  # "early": the first 5% of the pixels removed (or inserted)
# An image informs a curve when its two ends differ by at least this share of the score's
# range: 0.05 of a probability. Logits have no range of their own: there the range is the
# spread of the scores the curves' ends take over the audited images.
MIN_CHANGE = 0.05


def min_change(score: str, ends: list[np.ndarray]) -> float:
    """The smallest change of the class score between a curve's ends that informs it."""
    if score == "prob":
        return MIN_CHANGE
    values = np.concatenate([np.asarray(e, dtype=np.float64) for e in ends])
    values = values[np.isfinite(values)]
    return MIN_CHANGE * float(np.ptp(values)) if values.size else 0.0


def informative_images(start: np.ndarray, end: np.ndarray, least: float) -> np.ndarray:
    """Per image: whether the curve's ends differ by at least ``least`` (and at all)."""
    change = np.abs(np.asarray(end, dtype=np.float64) - np.asarray(start, dtype=np.float64))
    return np.isfinite(change) & (change >= least) & (change > 0)


def uninformative(curve: np.ndarray, fractions: np.ndarray, max_early_share: float) -> str:
    """Why a random map's mean deletion (or insertion) curve makes the test uninformative,
    or "": when removing (revealing) any ``EARLY`` share of the pixels already does
    ``max_early_share`` of the whole change, every ordering scores alike; when the whole
    change is below 0.01, the baseline does not move the score at all."""
    total = float(curve[-1] - curve[0])
    if not np.isfinite(total) or abs(total) < 0.01:
        return f"the score moves by {abs(total):.3f} from no pixels to all pixels"
    early = float(np.interp(EARLY, fractions, curve) - curve[0]) / total
    if early >= max_early_share:
        return (f"a random {EARLY:.0%} of the pixels already does {early:.0%} of the change "
                f"(>= {max_early_share:.0%}): any ordering scores alike")
    return ""


def baseline_keeps_class(start: np.ndarray, end: np.ndarray, targets: np.ndarray,
                         classes: list[str]) -> dict[str, bool]:
    """Per class explained: whether the baseline image keeps at least half of the class score
    (means over that class's images). Per class, because a baseline that resembles one class
    (black for a dark class) says nothing of that class's images yet may be fine for the rest."""
    start, end, targets = (np.asarray(v) for v in (start, end, targets))
    out = {}
    for c in sorted({int(t) for t in targets}):
        pick = targets == c
        s, e = float(np.nanmean(start[pick])), float(np.nanmean(end[pick]))
        out[classes[c]] = bool(np.isfinite(s) and np.isfinite(e) and s > 0 and e >= 0.5 * s)
    return out
