"""The audit stage's cost: overhead over pure model work, model evaluations, the demo's time.

- overhead: the audit run's seconds against the seconds its model evaluations take at the
  model's own measured throughput (batched plain forwards, and forward+backward passes for
  the evaluations made with gradients), measured here, one after the other;
- model evaluations of the demo's audits (its five methods, six images, the previous
  release's audits with their defaults) against the count the previous release made on the
  same inputs (a count, not a timing: it does not depend on the machine; measured at the
  commit named below);
- the demo pipeline end to end, from its summary.json timing.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

from xaudit.explain.base import context_for

from .common import Results, images, limit_forward, limit_forward_backward
from .verdict import report as report_decisions

DEMO_METHODS = [
    {"name": "integrated_gradients", "n_steps": 32, "baseline": "black"},
    {"name": "saliency"},
    {"name": "gradient_shap", "n_samples": 16},
    {"name": "grad_cam"},
    {"name": "occlusion", "window": 32, "stride": 16},
]
# Model evaluations of the previous release's audit stage (commit 5e9e45f, its 8 audits with
# their defaults) on this module's workload at 224 px, 6 images, without controls. The same
# audits are counted today: the audits added since are not "the same statistics".
PREVIOUS_RELEASE_EVALS = {224: 15_757}
PREVIOUS_RELEASE_AUDITS = ("convergence", "baseline_sensitivity", "model_randomization",
                           "label_randomization", "faithfulness", "localization", "shortcut",
                           "correctness")
REFERENCE_BATCHES = (8, 16, 32, 64)


def _counting_hook(counts: dict, kind: type[nn.Module] | None = None):
    """A forward pre-hook adding each call's images to ``counts`` (with / without gradients),
    for modules of class ``kind`` only when given."""

    def hook(module, args):
        if (kind is None or isinstance(module, kind)) and args and hasattr(args[0], "shape"):
            counts["grad" if torch.is_grad_enabled() else "nograd"] += int(args[0].shape[0])

    return hook


@contextlib.contextmanager
def grad_split(model: nn.Module):
    """Counts of images through the model with and without gradients, in one dict."""
    counts = {"grad": 0, "nograd": 0}
    handle = model.register_forward_pre_hook(_counting_hook(counts))
    try:
        yield counts
    finally:
        handle.remove()


def workload(n: int, size: int):
    """A frozen-style MobileNetV2 (random weights: cost does not depend on the values), ``n``
    images with a central evidence mask, the demo's methods."""
    import xaudit
    from xaudit.audit import AuditImages, AuditInput
    from xaudit.explain import validate_method_specs

    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=3).eval()
    model.to(memory_format=torch.channels_last)
    clf = xaudit.Classifier.from_module(model, classes=["a", "b", "c"], image_size=size)
    pixels = images(n, size).sigmoid()
    x = clf.preprocessing.normalize(pixels)
    with torch.no_grad():
        preds = model(x).argmax(1)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    masks[:, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = True
    test = AuditImages(x=x, pixels=pixels, labels=torch.arange(n) % 3, preds=preds, targets=preds,
                       ids=[f"i{k}" for k in range(n)], masks=masks, object_masks=masks.clone())

    def make() -> AuditInput:
        return AuditInput(model=model, explainers=validate_method_specs(DEMO_METHODS),
                          ctx=context_for(clf, torch.Generator().manual_seed(4)),
                          classes=clf.classes, splits={"test": test, "train": test},
                          generator=torch.Generator().manual_seed(5),
                          blocks=clf.anatomy.randomization_blocks)

    return model, x, make


def run_stage(make, n: int, controls: bool, audits: tuple[str, ...] = ()) -> tuple[float, dict, dict]:
    """The audit stage on the workload: ``audits`` with their defaults, or every audit."""
    from xaudit.audit import run_audits
    from xaudit.run import RunDir

    inp = make()
    specs = [{"name": name} for name in audits]
    with tempfile.TemporaryDirectory() as tmp, grad_split(inp.model) as counts:
        t0 = time.perf_counter()
        summary = run_audits(inp, specs, RunDir(Path(tmp)).create(), n_images=n, controls=controls)
        seconds = time.perf_counter() - t0
    return seconds, counts, summary


def bench_audit(res: Results, n: int, size: int, demo: bool = True) -> None:
    print(f"\naudit stage: MobileNetV2, {n} images at {size} px, the demo's 5 methods, every audit")
    model, x, make = workload(n, size)
    seconds, counts, summary = run_stage(make, n, controls=True)
    total = counts["grad"] + counts["nograd"]
    # Pure model work: each evaluation at the model's best measured throughput over the
    # reference batches, so that no batch size of the engine's is taken as the yardstick.
    fwd = min(limit_forward(model, x, 64, b, channels_last=True) for b in REFERENCE_BATCHES) / 64
    fb = min(limit_forward_backward(model, x, 64, b, channels_last=True)
             for b in REFERENCE_BATCHES) / 64
    work = counts["nograd"] * fwd + counts["grad"] * fb
    res.add("audit: stage seconds / pure model work (overhead)", seconds / work, 1.3,
            f"{seconds:.0f} s for {total:,} evals ({counts['grad']:,} with gradients); "
            f"model work {work:.0f} s at the best of batches {REFERENCE_BATCHES}", lower=True)
    by_audit = ", ".join(f"{k} {v['model_evals']:,}" for k, v in summary["cost"].items())
    print(f"  evaluations by audit: {by_audit}")
    plain_seconds, plain_counts, plain = run_stage(make, n, controls=False, audits=PREVIOUS_RELEASE_AUDITS)
    plain_total = plain_counts["grad"] + plain_counts["nograd"]
    print(f"  the previous release's {len(PREVIOUS_RELEASE_AUDITS)} audits, without controls: "
          f"{plain_seconds:.0f} s, {plain_total:,} evals")
    by_audit = ", ".join(f"{k} {v['model_evals']:,}" for k, v in plain["cost"].items())
    print(f"    by audit: {by_audit}")
    previous = PREVIOUS_RELEASE_EVALS.get(size)
    if previous:
        res.add("audit: model evaluations / previous release's (no controls)",
                plain_total / previous, 0.5, f"{plain_total:,} against {previous:,}", lower=True)
    else:
        print(f"  (no previous-release count recorded at {size} px: the evaluation ratio is "
              "printed at the benchmark's full size only)")
    if demo:
        bench_demo(res, quick=size < 224, per_eval=(fwd, fb))


@contextlib.contextmanager
def whole_model_split(kind: type[nn.Module]):
    """``grad_split`` for every model of class ``kind`` built while it is open (the pipeline
    builds its own), counting whole-model calls only (not a backbone called alone)."""
    counts = {"grad": 0, "nograd": 0}
    handle = nn.modules.module.register_module_forward_pre_hook(_counting_hook(counts, kind))
    try:
        yield counts
    finally:
        handle.remove()


def bench_demo(res: Results, quick: bool, per_eval: tuple[float, float]) -> None:
    """The demo recipe end to end (``summary.json`` timing), against the README's 2 minutes,
    and the floor its model evaluations set: each at the throughput ``per_eval`` (seconds of
    a plain forward, of a forward+backward) measured on the same architecture in this run."""
    import json

    from xaudit.pipeline import run_recipe

    overrides = ["audit.enabled=true"]
    if quick:  # wiring only: a tiny demo
        overrides += ["data.synthetic.n_train=8", "data.synthetic.n_val=4", "data.synthetic.n_test=4",
                      "data.synthetic.image_size=64", "model.image_size=64", "model.resize_size=64",
                      "train.epochs=1", "audit.n_images=2"]
    with tempfile.TemporaryDirectory() as tmp, whole_model_split(torchvision.models.MobileNetV2) as counts:
        run_recipe(Path(__file__).parents[1] / "configs" / "demo.yaml",
                   [*overrides, f"output_dir={tmp}"])
        summary = json.loads(next(Path(tmp).glob("*/summary.json")).read_text())
        timing = summary["timing"]
    report_decisions(res, summary.get("audits") or {}, "demo")
    total = sum(v for v in timing.values() if isinstance(v, (int, float)))
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in timing.items() if isinstance(v, (int, float)))
    if quick:  # a tiny demo says nothing about the real one's two minutes
        res.add("demo (tiny, --quick): pipeline seconds / 120", total / 120, None, stages)
    else:
        res.add("demo: pipeline seconds / 120 (README: under two minutes)", total / 120, 1.0,
                stages, lower=True)
    # The whole-model evaluations after training (evaluate, explain, audit) as pure model
    # work: the least time these statistics can take, before any solve or training.
    floor = counts["nograd"] * per_eval[0] + counts["grad"] * per_eval[1]
    res.add("demo: its model evaluations as pure model work / 120", floor / 120, None,
            f"{counts['grad'] + counts['nograd']:,} evals ({counts['grad']:,} with gradients), "
            f"{floor:.0f} s at the measured throughput")
