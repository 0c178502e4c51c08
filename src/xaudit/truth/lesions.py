"""Case 3, lesion interventions on the synthetic bean leaves.

A lesion's true importance is the drop of the explained class's logit when that lesion alone
is removed, the leaf re-drawn without it (``render_leaf_without``: in distribution, not a
deletion). A map's truth score on an image is the Spearman correlation between its mass
inside each lesion and those drops, averaged over the images with at least three lesions.
Controls, which ignore the model, get scores too (a constant map ranks lesions by area, the
centre map by area and centrality): a method scoring no better than the best control does
not explain this model's use of the lesions, and the verdict must not trust it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from .. import api
from ..audit.controls import KINDS, ControlMap, control_label
from ..data.leaf_edit import lesion_components, render_leaf_without
from ..data.leaf_render import CLASSES, render_leaf
from .cells import AUDITS, CaseResult, case_cells
from .fit import as_classifier, fit, to_input

NAME = "lesion interventions"
MIN_LESIONS = 3
# Healthy against bean rust: dozens of pustules, so every diseased leaf has lesions to rank,
# and a model of this size learns it in seconds (angular leaf spot at 64 px does not).
RUST = CLASSES.index("bean_rust")
CASE_CLASSES = ("healthy", "bean_rust")


class LeafCNN(nn.Module):
    """Three ReLU convolutions (two poolings), global average pooling and a linear head:
    averaging lets every pustule add to the logit, so removing one moves it."""

    def __init__(self, n_classes: int = len(CASE_CLASSES)):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.conv3 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.conv3(self.conv2(self.conv1(x)))).flatten(1))


def leaves(seeds: Sequence[int], labels: Sequence[int], size: int) -> torch.Tensor:
    """uint8 N×3×H×W renders."""
    return torch.stack([torch.from_numpy(render_leaf(s, int(lab), size).image).permute(2, 0, 1)
                        for s, lab in zip(seeds, labels, strict=True)])


def lesion_interventions(seed, label: int, size: int, max_lesions: int,
                         **render) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``max_lesions`` largest lesions of a leaf: their masks (L×H×W bool) and the leaf
    followed by the leaf re-drawn without each of them ((1 + L)×3×H×W uint8).

    ``render``: the other arguments of ``render_leaf`` (shortcut, tag_fraction,
    lesion_strength), as the leaf was drawn."""
    leaf = render_leaf(seed, label, size, **render)
    regions, n = lesion_components(leaf.lesion_mask)
    areas = np.bincount(regions.ravel(), minlength=n + 1)[1:]
    keep = [int(i) + 1 for i in np.argsort(-areas, kind="stable")[:max_lesions]]
    images = [leaf.image]
    images += [render_leaf_without(seed, label, k, size, **render).image for k in keep]
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    masks = torch.from_numpy(np.stack([regions == k for k in keep])) if keep else \
        torch.zeros(0, size, size, dtype=torch.bool)
    return masks, pixels


def lesion_drops(score: Callable[[torch.Tensor], torch.Tensor], seed: int, label: int, size: int,
                 target: int, max_lesions: int, **render) -> tuple[torch.Tensor, torch.Tensor]:
    """The masks of ``lesion_interventions`` and the drop of ``score``'s column ``target``
    when each lesion alone is removed (L).

    ``score`` maps uint8 N×3×H×W images to N×K class scores."""
    masks, pixels = lesion_interventions(seed, label, size, max_lesions, **render)
    with torch.no_grad():
        s = score(pixels)[:, target].double()
    return masks, s[0] - s[1:]


def lesion_mass(maps: torch.Tensor, masks: torch.Tensor, absolute: bool = False) -> torch.Tensor:
    """A map's (H×W, signed, as stored; or its magnitude) sum inside each lesion mask (L×H×W)
    → L."""
    m = maps.double().abs() if absolute else maps.double()
    return (m.unsqueeze(0) * masks.double()).sum((1, 2))


def image_truth_score(maps: torch.Tensor, masks: torch.Tensor, drops: torch.Tensor,
                      absolute: bool = False) -> float | None:
    """Spearman(mass in each lesion, true drop) on one image; None with fewer than
    ``MIN_LESIONS`` lesions or where either side is constant (no rank correlation)."""
    if len(drops) < MIN_LESIONS:
        return None
    mass, d = lesion_mass(maps, masks, absolute).numpy(), drops.double().numpy()
    if np.ptp(mass) == 0 or np.ptp(d) == 0:
        return None
    return float(spearmanr(mass, d)[0])


def truth_score(maps: Sequence[torch.Tensor], masks: Sequence[torch.Tensor],
                drops: Sequence[torch.Tensor], absolute: bool = False) -> tuple[float, int]:
    """Mean of ``image_truth_score`` over the images that have one, and how many (NaN, 0
    when none)."""
    rhos = [r for m, k, d in zip(maps, masks, drops, strict=True)
            if (r := image_truth_score(m, k, d, absolute)) is not None]
    return (float(np.mean(rhos)), len(rhos)) if rhos else (float("nan"), 0)


def run(n_images: int, seed: int = 0, size: int = 64, train_per_class: int = 32, steps: int = 150,
        max_lesions: int = 8, truth_images: int = 12,
        methods: Sequence[str] = ("saliency", "integrated_gradients", "grad_cam"),
        log=print) -> CaseResult:
    """Train the leaf model, audit ``methods`` on ``n_images`` rusty leaves, and score every
    map's lesion ranking on ``max(n_images, truth_images)`` of them (scoring is cheap; the
    audit is not)."""
    t0 = time.perf_counter()
    train_labels = [c for _ in range(train_per_class) for c in (0, 1)]
    train_seeds = [10_000 * (seed + 1) + i for i in range(len(train_labels))]
    train = leaves(train_seeds, [RUST * c for c in train_labels], size)
    with torch.random.fork_rng(devices=[]):  # the initial weights, without touching the caller's RNG
        torch.manual_seed(seed)
        net = LeafCNN()
    accuracy = fit(net, train, torch.tensor(train_labels), steps, seed, lr=5e-3)
    log(f"{NAME}: trained in {time.perf_counter() - t0:.1f} s (training accuracy {accuracy:.2f})")
    seeds = _rusty_leaves(max(n_images, truth_images), seed, size)
    pixels = leaves(seeds, [RUST] * len(seeds), size)
    labels = [1] * len(seeds)
    clf = as_classifier(net, CASE_CLASSES, size, cam_layer="conv3")
    report = api.audit(clf, pixels[:n_images], labels[:n_images], methods=list(methods),
                       audits=list(AUDITS), n_images=n_images, seed=seed)
    explainers = list(methods) + [ControlMap(k) for k in KINDS]
    maps = api.explain(clf, pixels, explainers, target="true", labels=labels, seed=seed)
    with torch.no_grad():
        correct = (net(to_input(pixels)).argmax(1) == 1).tolist()

    def score(p: torch.Tensor) -> torch.Tensor:
        return net(to_input(p))

    use = [i for i, ok in enumerate(correct) if ok]  # a wrong prediction's drops explain nothing
    truth = [lesion_drops(score, seeds[i], RUST, size, 1, max_lesions) for i in use]
    scores = {m: truth_score([maps[m].maps[i] for i in use], [t[0] for t in truth],
                             [t[1] for t in truth]) for m in maps}
    best_control = max((scores[control_label(k)][0] for k in KINDS
                        if not np.isnan(scores[control_label(k)][0])), default=float("nan"))
    truths, why = {}, {}
    for m in methods:
        label = maps[m].label
        s, n = scores[label]
        # Better than every control is necessary, not sufficient: such a method stays "unknown".
        truths[label] = "unfaithful" if not s > best_control else "unknown"
        why[label] = f"truth score {s:.3f} on {n} images; best control {best_control:.3f}"
    numbers = {"accuracy": accuracy, "truth_images_correct": f"{len(use)}/{len(correct)}",
               "truth_score": {m: round(s, 3) for m, (s, _) in scores.items()},
               "images_scored": {m: n for m, (_, n) in scores.items()},
               "best_control": round(best_control, 3)}
    return CaseResult(NAME, case_cells(NAME, report.states, truths, why), numbers,
                      time.perf_counter() - t0)


def _rusty_leaves(n: int, seed: int, size: int) -> list[int]:
    """Seeds of ``n`` bean-rust leaves with at least ``MIN_LESIONS`` lesions each, disjoint
    from the training leaves'."""
    seeds, s = [], 20_000 * (seed + 1)
    while len(seeds) < n:
        if lesion_components(render_leaf(s, RUST, size).lesion_mask)[1] >= MIN_LESIONS:
            seeds.append(s)
        s += 1
    return seeds
