"""IG, occlusion and Grad-CAM: xaudit's engine against per-image Captum and the plain limits."""

from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path

import torch
from captum.attr import IntegratedGradients, Occlusion

from xaudit.data.base import Record
from xaudit.explain import ExplainContext, build_explainer
from xaudit.explain.engine import MapStore, explain_records
from xaudit.explain.fastpath import FastPath

from .common import (
    Results,
    images,
    limit_forward,
    limit_forward_backward,
    resnet18,
    timed,
    to_standard_layout,
)

MEAN, STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])


def context(model) -> ExplainContext:
    return ExplainContext(mean=MEAN, std=STD, target_layer=getattr(model, "layer4", None),
                          layers=dict(model.named_modules()), generator=torch.Generator().manual_seed(0))


def engine(model, spec: dict, x: torch.Tensor, targets: list[int], fast: FastPath, batch_size: int):
    """Seconds and stats of the engine explaining ``x`` into a throw-away run directory."""
    records = [Record(id=f"i{n}", label=0, image=None) for n in range(len(x))]
    pos = {r.id: n for n, r in enumerate(records)}
    explainer = build_explainer(spec)
    with tempfile.TemporaryDirectory() as tmp:
        store = MapStore(Path(tmp), explainer.label)
        stats = {}

        def go():
            stats.update(explain_records(
                model, explainer, records, targets, lambda recs: x[[pos[r.id] for r in recs]],
                context(model), store, batch_size, 64, torch.device("cpu"), fast=fast))

        seconds = timed(go)
        maps = store.load()["maps"]
    return seconds, stats, maps


def predicted(model, x: torch.Tensor) -> list[int]:
    """The class each image is explained for: the model's prediction, as in the seeds
    (``target=pred_idx``) and xaudit's default ``explain.target: predicted``."""
    with torch.inference_mode():
        return torch.cat([model(x[i : i + 16]).argmax(1) for i in range(0, len(x), 16)]).tolist()


def captum_ig_loop(model, x, targets, n_steps) -> tuple[float, torch.Tensor]:
    """The seeds' way: one IntegratedGradients call per image, default settings."""
    to_standard_layout(model)
    ig = IntegratedGradients(model)
    base = ((torch.zeros(3) - MEAN) / STD).view(1, 3, 1, 1)
    out = []

    def go():
        for n in range(len(x)):
            xi = x[n : n + 1].clone().requires_grad_(True)
            out.append(ig.attribute(xi, baselines=base.expand_as(xi), target=targets[n],
                                    n_steps=n_steps).detach().sum(1))

    return timed(go), torch.cat(out)


def captum_occlusion_loop(model, x, targets, window, stride) -> tuple[float, torch.Tensor]:
    to_standard_layout(model)
    occ = Occlusion(model)
    out = []

    def go():
        for n in range(len(x)):
            out.append(occ.attribute(x[n : n + 1], sliding_window_shapes=(3, window, window),
                                     strides=(3, stride, stride), baselines=0.0,
                                     target=targets[n]).sum(1))

    return timed(go), torch.cat(out)


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def bench_ig(res: Results, n_images: int, size: int = 224, n_steps: int = 32) -> None:
    print(f"IG: ResNet-18, {size} px, {n_steps} steps, {n_images} images", flush=True)
    model, x = resnet18(), images(n_images, size)
    targets = predicted(model, x)
    t_captum, ref = captum_ig_loop(model, x, targets, n_steps)
    spec = {"name": "integrated_gradients", "n_steps": n_steps, "baseline": "black"}
    t32, s32, m32 = engine(model, spec, x, targets, FastPath(), batch_size=16)
    t16, s16, m16 = engine(model, spec, x, targets, FastPath(precision="bf16"), batch_size=16)
    tad, sad, mad = engine(model, spec, x, targets, FastPath(precision="bf16", adaptive_steps=True), 16)
    batch = s32["samples_per_pass"] // len(x[:16]) * len(x[:16])
    t_limit = limit_forward_backward(model, x, n_images * n_steps, batch, channels_last=True)
    t_limit_nchw = limit_forward_backward(to_standard_layout(model), x, n_images * n_steps, batch)
    print(f"  seconds: captum per image {t_captum:.1f}, xaudit fp32 {t32:.1f}, bf16 {t16:.1f}, "
          f"bf16+adaptive {tad:.1f}, limit fp32 (channels-last) {t_limit:.1f}, "
          f"limit fp32 (NCHW) {t_limit_nchw:.1f}; pass size {batch}", flush=True)
    print(f"  fp32 maps vs Captum: relative L2 {relative_l2(m32, ref):.2e}; bf16: "
          f"{relative_l2(m16, ref):.2e}; bf16 images redone in fp32: {s16['fp32_recomputed']}/"
          f"{n_images}; bf16+adaptive: {relative_l2(mad, ref):.2e}, {sad['refined']} refined, "
          f"{sad['fp32_recomputed']} redone", flush=True)
    res.add("IG fp32: xaudit / fp32 fwd+bwd limit (throughput)", t_limit / t32, 0.9)
    # The fast path is every engine option that does the work faster or does less of it:
    # bf16 autocast and adaptive steps, each guarded by the completeness check.
    res.add("IG fast path (bf16 + adaptive steps): xaudit / Captum loop", t_captum / tad, 2.5)
    res.add("IG fp32: xaudit / Captum per-image loop", t_captum / t32)
    res.add("IG bf16 alone: xaudit / Captum per-image loop", t_captum / t16)


def bench_occlusion(res: Results, n_images: int, size: int = 224, window: int = 15, stride: int = 8) -> None:
    windows = (math.ceil((size - window) / stride) + 1) ** 2  # Captum's count: the last windows are cut
    print(f"Occlusion: ResNet-18, {size} px, {window}x{window} stride {stride} "
          f"({windows} windows), {n_images} images", flush=True)
    model, x = resnet18(), images(n_images, size, seed=1)
    targets = predicted(model, x)
    t_captum, ref = captum_occlusion_loop(model, x, targets, window, stride)
    spec = {"name": "occlusion", "window": window, "stride": stride, "baseline": "zero"}
    plain = {**spec, "incremental": False}
    t32, s32, m32 = engine(model, spec, x, targets, FastPath(), batch_size=n_images)
    tp, sp, mp = engine(model, plain, x, targets, FastPath(), batch_size=n_images)
    t16, s16, m16 = engine(model, spec, x, targets, FastPath(precision="bf16"), batch_size=n_images)
    per_eval = max(1, sp["samples_per_pass"] // n_images) * n_images
    t_limit = limit_forward(model, x, n_images * (windows + 1), per_eval, channels_last=True)
    print(f"  seconds: captum default {t_captum:.1f}, xaudit fp32 incremental {t32:.1f}, fp32 plain "
          f"{tp:.1f}, bf16 incremental {t16:.1f}, limit fp32 forward (channels-last) {t_limit:.1f}; "
          f"pass size {per_eval}", flush=True)
    print(f"  path: {s32.get('path')}; estimated work per window {s32.get('work_per_window', 1):.2f} "
          f"of a full forward", flush=True)
    print(f"  maps vs Captum, relative L2: fp32 incremental {relative_l2(m32, ref):.2e}, fp32 plain "
          f"{relative_l2(mp, ref):.2e}, bf16 incremental {relative_l2(m16, ref):.2e}; bf16 images redone "
          f"in fp32: {s16['fp32_recomputed']}", flush=True)
    # the fast path as users get it: the default settings (fp32, incremental)
    res.add("Occlusion fast path (fp32 incremental): xaudit / Captum", t_captum / t32, 3.0)
    res.add("Occlusion fp32 plain: xaudit / fp32 fwd limit (throughput)", t_limit / tp, 0.9)
    res.add("Occlusion fp32 incremental: xaudit / fp32 forward limit", t_limit / t32)
    res.add("Occlusion fp32 plain: xaudit / Captum default", t_captum / tp)
    res.add("Occlusion bf16 incremental: xaudit / Captum default", t_captum / t16)
    occlusion_real_weights(res, size, window, stride)


def chelsea(size: int) -> torch.Tensor:
    """skimage's cat photo, resized to ``size`` and normalised with ImageNet's statistics."""
    from skimage import data

    photo = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float().div(255)[None]
    photo = torch.nn.functional.interpolate(photo, size=(size, size), mode="bilinear", antialias=True)
    return (photo - MEAN.view(1, 3, 1, 1)) / STD.view(1, 3, 1, 1)


def occlusion_real_weights(res: Results, size: int, window: int, stride: int) -> None:
    """ImageNet MobileNetV2 (offline weights) on a real photo: does bf16 pass its check there?"""
    from xaudit.models import Classifier

    try:
        model = Classifier.from_torchvision("mobilenet_v2", "IMAGENET1K_V1").module.eval()
    except Exception as err:  # no offline weights installed: say so, skip the line
        print(f"  real weights: skipped ({type(err).__name__}: {err})", flush=True)
        return
    x = chelsea(size)
    with torch.inference_mode():
        target = [int(model(x).argmax())]
    print(f"Occlusion, real weights: ImageNet MobileNetV2, skimage chelsea at {size} px, class "
          f"{target[0]}, 1 image", flush=True)
    t_captum, ref = captum_occlusion_loop(model, x, target, window, stride)
    spec = {"name": "occlusion", "window": window, "stride": stride, "baseline": "zero"}
    t32, s32, m32 = engine(model, spec, x, target, FastPath(), batch_size=1)
    t16, s16, m16 = engine(model, spec, x, target, FastPath(precision="bf16"), batch_size=1)
    kept = "kept" if s16["fp32_recomputed"] == 0 else "redone in fp32"
    print(f"  seconds: captum default {t_captum:.1f}, xaudit fp32 {t32:.1f}, bf16 {t16:.1f} ({kept}); "
          f"path: {s32.get('path')}, work per window {s32.get('work_per_window', 1):.2f}", flush=True)
    print(f"  maps vs Captum, relative L2: fp32 {relative_l2(m32, ref):.2e}, bf16 "
          f"{relative_l2(m16, ref):.2e}", flush=True)
    res.add("Occlusion real weights fp32: xaudit / Captum default", t_captum / t32)
    res.add("Occlusion real weights bf16: xaudit / Captum default", t_captum / t16, note=f"bf16 {kept}")


def bench_gradcam(res: Results, n_images: int, size: int = 224, batch: int = 32) -> None:
    print(f"Grad-CAM: ResNet-18 layer4, {size} px, {n_images} images", flush=True)
    model, x = resnet18(), images(n_images, size, seed=2)
    targets = [n % 1000 for n in range(n_images)]
    t32, _, _ = engine(model, {"name": "grad_cam"}, x, targets, FastPath(), batch_size=batch)
    t16, s16, _ = engine(model, {"name": "grad_cam"}, x, targets, FastPath(precision="bf16"), batch)
    t_limit = limit_forward_backward(model, x, n_images, batch, channels_last=True)
    print(f"  seconds: xaudit fp32 {t32:.1f}, bf16 {t16:.1f} ({s16['fp32_recomputed']} redone), "
          f"limit fp32 fwd+bwd {t_limit:.1f}", flush=True)
    res.add("Grad-CAM fp32: xaudit / fp32 fwd+bwd limit (throughput)", t_limit / t32, 0.9)
    res.add("Grad-CAM bf16: xaudit / fp32 fwd+bwd limit (throughput)", t_limit / t16)


def quiet() -> None:
    warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")
