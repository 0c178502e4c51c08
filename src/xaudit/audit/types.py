"""The audits' data types: images, inputs, scorecard cells, results, maps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from ..explain.base import ExplainContext, Explainer
from ..explain.fastpath import FastPath


@dataclass
class AuditImages:
    """One split's sample of images to audit."""

    x: Tensor  # N×3×H×W normalised, CPU
    pixels: Tensor  # N×3×H×W in [0, 1]
    labels: Tensor  # (N,) long
    preds: Tensor  # (N,) long, the model's predictions
    targets: Tensor  # (N,) long, the class explained
    ids: list[str]
    masks: Tensor | None = None  # N×H×W bool evidence masks (e.g. lesions)
    object_masks: Tensor | None = None  # N×H×W bool object masks (e.g. the leaf)
    mask_missing: Tensor | None = None  # (N,) bool: no evidence mask (its row in ``masks`` is empty)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: list[int] | Tensor) -> AuditImages:
        idx = torch.as_tensor(index, dtype=torch.long)

        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[idx]

        return AuditImages(
            x=self.x[idx],
            pixels=self.pixels[idx],
            labels=self.labels[idx],
            preds=self.preds[idx],
            targets=self.targets[idx],
            ids=[self.ids[i] for i in idx.tolist()],
            masks=pick(self.masks),
            object_masks=pick(self.object_masks),
            mask_missing=pick(self.mask_missing),
        )


@dataclass
class AuditInput:
    """Everything an audit needs; the real model is never modified."""

    model: nn.Module  # eval mode, trained
    explainers: list[Explainer]  # configured methods from the recipe
    ctx: ExplainContext
    classes: list[str]
    splits: dict[str, AuditImages]  # "test" always; "train" too (shortcut screening)
    generator: torch.Generator  # all randomness from here (seeded by the recipe)
    retrain_shuffled: Callable[[int], nn.Module] | None = None  # seed -> shuffled-label model
    blocks: list[str] | None = None  # randomization blocks override (module names)
    regions: dict[str, list[float]] | None = None  # name -> [x0, y0, x1, y1] fractions
    # The explain engine's execution settings (precision, adaptive steps, memory budget):
    # the audits compute every map as the explain stage does.
    fast: FastPath = field(default_factory=FastPath)
    # Maps of the trained model, computed once and shared by the audits of one run.
    cache: dict = field(default_factory=dict, repr=False)
    # label -> (model evaluations, seconds) per map, measured where maps put in ``cache`` at
    # no cost were computed (the explain stage): what the plan prices such a method at.
    map_costs: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass
class Cell:
    """One scorecard cell: a method's per-image values on one audit metric."""

    method: str
    audit: str
    metric: str
    values: np.ndarray  # per image
    higher_is_better: bool
    passed: bool | None  # None when no rule applies
    rule: str  # the stated rule
    seconds: float = 0.0
    model_evals: int = 0
    # The number the rule compares the mean with; with the interval it makes the status.
    threshold: float | None = None
    # A status the numbers cannot give: "not tested" (the method was refused or skipped) or
    # "not informative" (the check's own controls cannot be told apart); ``note`` says why.
    forced: str | None = None
    note: str = ""
    # How the verdict tests the cell (``stats.py``): "" = no rule (reported for ranking);
    # "controls" = paired, per image, against every negative control's values on the same
    # images (superiority); "superior" / "noninferior" = one-sample against ``threshold``.
    check: str = ""
    ids: list[str] | None = None  # the image of each value, to pair cells image by image
    # The smallest difference that matters, in the values' units, where the metric has a
    # documented one; None = ``audit.min_effect`` standard deviations of the difference.
    min_difference: float | None = None


@dataclass
class AuditResult:
    name: str
    title: str
    text: str  # how to read it, 2-4 sentences
    rows: list[dict]  # long table -> tables/audit_<name>.csv
    cells: list[Cell]  # scorecard cells
    figures: list[str]  # file names written under run_dir/figures/
    summary: dict  # -> summary.json audits.<name>
    seconds: float
    model_evals: int


@dataclass
class Maps:
    """Attributions of one method on one set of images, with their cost."""

    attributions: Tensor  # N×1×H×W: summed over channels, as the explain stage stores them
    seconds: float
    model_evals: float  # images through the model (a share of a batch for one image)
    delta: Tensor | None = None

    @property
    def maps(self) -> Tensor:
        """N×H×W signed maps (summed over channels)."""
        return self.attributions.sum(dim=1)
