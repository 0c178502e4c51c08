"""A scorecard cell in words: what the rule found, against which yardstick, with no raw
formula; the report's grid cells and the verdict's lines (CLI and report) both say this.

Made from a scorecard entry of summary.json (``audits.scorecard``): its status, the test
that decided it (``against``: a negative control or the rule's threshold, ``effect`` and its
interval, ``images_to_decide``) and the audit's note. Numbers are those of the entry; a
value the run left undefined is a dash, never "nan".
"""

from __future__ import annotations

import math
import re

from .controls import PREFIX


def fmt(value: float | None) -> str:
    """A number in 3 significant digits (or a dash when undefined)."""
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "–"
    return f"{value:.3g}"


# Negative controls by what they are, for a reader who does not know the labels.
CONTROL_WORDS = {
    "random": "random noise", "blurred random": "blurred noise", "edge": "the edge detector",
    "centre": "the centre prior", "constant": "a constant map",
}
# What a metric measures, in a few words (ids stay in the cell's data and the scorecard).
METRIC_WORDS = {
    "deletion_auc": "class score as its top pixels are deleted",
    "insertion_auc": "class score as its top pixels are inserted",
    "infidelity": "infidelity (error on random perturbations)",
    "road_gap": "ROAD gap (removing most vs least relevant pixels)",
    "auroc": "map as a lesion detector (AUROC)",
    "pointing_game": "map's peak on the lesion",
    "relevance_mass": "share of relevance on the lesion",
    "relevance_rank": "share of top pixels on the lesion",
    "cascade_final_spearman_abs": "similarity to its own map once the model is fully randomized",
    "cascade_final_ssim": "SSIM to its own map once the model is fully randomized",
    "spearman_abs_vs_shuffled": "similarity to the map of a model trained on shuffled labels",
    "completeness_rel_delta": "completeness error",
    "spearman_vs_finest": "agreement with the finest integration",
    "mean_pairwise_spearman_abs": "agreement between baselines",
    "faithfulness_correlation": "correlation of relevance with score drops",
    "monotonicity_correlation": "monotonicity of score drops",
    "random_logit_spearman": "similarity to the map of a random other class",
}
_CASCADE_STEP = re.compile(r"^cascade_(.+)_spearman_abs$")
_NAN = re.compile(r"\bnan\b", re.IGNORECASE)


def control_words(label: str | None) -> str:
    """``control: edge`` → "the edge detector"; the rule's threshold and other labels as they are."""
    if label is None:
        return "its threshold"
    if label == "threshold":
        return "the rule's threshold"
    if label.startswith(PREFIX):
        kind = label[len(PREFIX):]
        return CONTROL_WORDS.get(kind, kind)
    return label


def metric_words(metric: str) -> str:
    if metric in METRIC_WORDS:
        return METRIC_WORDS[metric]
    step = _CASCADE_STEP.match(metric)
    if step:
        return f"similarity to its own map once {step.group(1).replace('_', ' ')} is randomized"
    return metric.replace("_", " ")


def no_nan(text: str) -> str:
    """A run's text with "nan" said as undefined (a control's rule formatted from no value)."""
    return _NAN.sub("undefined", text)


def _yardstick(e: dict) -> str:
    """Where the threshold of a one-sample rule comes from, read from the rule's own words."""
    rule = str(e.get("rule") or "")
    level = re.search(r"random-pair level \(mean (-?[0-9.]+|nan)\)", rule)
    value = no_nan(level.group(1)).replace("-0.00", "0.00") if level else ""
    if level and "half-way" in rule:
        return f"half-way between the random-pair level ({value}) and 1"
    if level:
        return f"the random-pair level ({value}: its maps of different images)"
    return f"{fmt(e.get('threshold'))}"


def _effect(e: dict) -> str:
    lo, hi = (e.get("effect_ci") or [None, None])[:2]
    interval = f" [{fmt(lo)}, {fmt(hi)}]" if lo is not None and hi is not None else ""
    return f"{fmt(e.get('effect'))}{interval}"


def _to_decide(e: dict) -> str:
    need = e.get("images_to_decide")
    return f"; about {need} images would decide" if need else ""


def cell_words(e: dict, margin: bool = False) -> str:
    """One or two short sentences: what the deciding rule found for this cell; ``margin``: a
    failure against a control says it is by the smallest difference that matters (the
    interval may reach past zero, not past that difference)."""
    status = e.get("status") or ""
    note = no_nan(str(e.get("note") or ""))
    what = metric_words(str(e.get("metric")))
    if status == "not informative":
        return f"cannot decide here: {note}" if note else "cannot decide here on this data"
    if status == "not tested":
        return f"not tested: {note}" if note else "not tested"
    if not status:
        return f"{what}: reported for ranking, no pass/fail rule"
    against = e.get("against")
    if against is None:  # a scorecard read back from an old CSV keeps no test
        return f"{what}: {status}"
    if e.get("check") == "controls":
        control = control_words(against)
        if status == "pass":
            return f"{what}: beats every negative control (closest: {control}, by {_effect(e)})"
        if status == "fail":
            by = " by a difference that matters" if margin else ""
            return f"{what}: no better than {control}{by} (difference {_effect(e)})"
        return f"{what}: not yet told apart from {control} (difference {_effect(e)}){_to_decide(e)}"
    # One-sample rules: the threshold is named by where it comes from.
    origin = _yardstick(e)
    higher = bool(e.get("higher_is_better"))
    if status == "pass":
        side = "above" if higher else "below"
        return f"{what}: {side} {origin}, as it must be (margin {_effect(e)})"
    if status == "fail":
        side = "not above" if higher else "stays above"
        return f"{what}: {side} {origin} (margin {_effect(e)})"
    return f"{what}: too close to {origin} to say (margin {_effect(e)}){_to_decide(e)}"
