"""Case 2, the Adebayo sanity check (Adebayo et al., NeurIPS 2018): a small ReLU CNN trained
briefly on a two-class task, audited with model randomization.

Truth from that paper: guided backprop's map survives the re-initialisation of the weights
(it mostly reconstructs the image), so it fails randomization and must never be trusted;
saliency (the plain gradient) and Grad-CAM change with the weights and pass it. The case
records the randomization cells' statuses as well as the verdict's states.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from .. import api
from .cells import AUDITS, CaseResult, case_cells, randomization_cells
from .fit import as_classifier, fit

NAME = "Adebayo sanity check"
CLASSES = ("square", "cross")
# What the verdict may conclude of each method here (see the module's docstring).
TRUTHS = {"guided_backprop": "unfaithful", "saliency": "unknown", "grad_cam": "unknown"}
# Randomization is the one property known: the cell status each method should get.
RANDOMIZATION = {"guided_backprop": "fail", "saliency": "pass", "grad_cam": "pass"}


class SmallCNN(nn.Module):
    """Five ReLU convolutions (two poolings), global pooling and a linear head. Depth matters:
    with three convolutions guided backprop's survival of the head's re-initialisation was
    inconclusive on 16 images; with five it fails every step (measured, 2026-12-07)."""

    def __init__(self, n_classes: int = 2):
        super().__init__()
        widths = (3, 8, 16, 16, 32, 32)
        for i in range(5):
            layers = [nn.Conv2d(widths[i], widths[i + 1], 3, padding=1), nn.ReLU()]
            if i < 2:
                layers.append(nn.MaxPool2d(2))
            self.add_module(f"conv{i + 1}", nn.Sequential(*layers))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(5):
            x = getattr(self, f"conv{i + 1}")(x)
        return self.fc(self.pool(x).flatten(1))


def shapes(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images holding a filled square and a cross, 8 px across at random places on a
    noisy dark background; the class is the shape drawn bright (the other is dim), so the
    head's weights decide which object the evidence is. Labels alternate."""
    gen = torch.Generator().manual_seed(seed)
    x = 0.15 * torch.rand(n, 3, 1, 1, generator=gen) + 0.05 * torch.rand(n, 3, size, size, generator=gen)
    labels = torch.arange(n) % 2
    s, half = 8, size // 2
    for i in range(n):
        spots = torch.randperm(4, generator=gen)[:2].tolist()  # two of the four quadrants
        for shape, spot in enumerate(spots):
            r0, c0 = divmod(spot, 2)
            r, c = (int(v) for v in torch.randint(0, half - s, (2,), generator=gen))
            r, c = r + r0 * half, c + c0 * half
            colour = (0.9 if shape == labels[i] else 0.45) * torch.ones(3, 1, 1)
            if shape == 0:
                x[i, :, r:r + s, c:c + s] = colour
            else:
                x[i, :, r + 3:r + 5, c:c + s] = colour
                x[i, :, r:r + s, c + 3:c + 5] = colour
    return (x.clamp(0, 1) * 255).round().to(torch.uint8), labels


def run(n_images: int, seed: int = 0, size: int = 32, train_images: int = 128, steps: int = 150,
        log=print) -> CaseResult:
    t0 = time.perf_counter()
    pixels, labels = shapes(train_images, size, seed)
    with torch.random.fork_rng(devices=[]):  # the initial weights, without touching the caller's RNG
        torch.manual_seed(seed)
        net = SmallCNN()
    accuracy = fit(net, pixels, labels, steps, seed)
    log(f"{NAME}: trained in {time.perf_counter() - t0:.1f} s (training accuracy {accuracy:.2f})")
    test, test_labels = shapes(n_images, size, seed + 1)
    clf = as_classifier(net, CLASSES, size, cam_layer="conv5")
    report = api.audit(clf, test, test_labels.tolist(), methods=list(TRUTHS),
                       audits=list(AUDITS), n_images=n_images, seed=seed)
    statuses = randomization_cells(report.summary.get("scorecard") or [])
    why = {m: f"expected to {RANDOMIZATION[m]} randomization; cells: {statuses.get(m, {})}"
           for m in TRUTHS}
    steps = {m: {_step(k): v for k, v in statuses.get(m, {}).items()} for m in statuses}
    scores = {m: {} for m in TRUTHS}  # Spearman(|map|) against the threshold, per step
    for row in report.summary.get("scorecard") or []:
        if row.get("method") in scores and row.get("status") and row.get("score") is not None:
            if row.get("audit") == "model_randomization" and row.get("threshold") is not None:
                scores[row["method"]][_step(row["metric"])] = [round(float(row["score"]), 3),
                                                                round(float(row["threshold"]), 3)]
    return CaseResult(NAME, case_cells(NAME, report.states, TRUTHS, why),
                      {"accuracy": accuracy,
                       "randomization": {m: steps.get(m, {}) for m in TRUTHS},
                       "randomization_as_expected": randomization_agrees(statuses),
                       "randomization_score_threshold": scores,
                       "randomization_controls": {m: v for m, v in steps.items() if m not in TRUTHS}},
                      time.perf_counter() - t0)


def _step(metric: str) -> str:
    """cascade_head_spearman_abs → head: the cascade step a cell judges."""
    return metric.removeprefix("cascade_").removesuffix("_spearman_abs")


def randomization_agrees(statuses: dict[str, dict[str, str]]) -> dict[str, bool]:
    """Per method: does the randomization audit say what Adebayo et al. found? A method known
    to fail must fail some cell; one known to pass must fail none and pass one."""
    out = {}
    for method, expected in RANDOMIZATION.items():
        got = set(statuses.get(method, {}).values())
        out[method] = "fail" in got if expected == "fail" else ("fail" not in got and "pass" in got)
    return out
