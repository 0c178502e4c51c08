"""RISE, LIME and KernelSHAP: xaudit's engine against the plain ways of computing the same maps.

RISE against a per-image loop over the same masks (one image, one chunk of masks per
forward, as RISE's reference code does). LIME and KernelSHAP against Captum's own ``Lime``
and ``KernelShap``, one call per image with the same SLIC superpixels and, from the same
seed, the same samples; both at Captum's default ``perturbations_per_eval`` (1) and at the
pass size xaudit's engine chose. Superpixels are computed inside the timed region on both
sides. Maps are compared by relative L2.
"""

from __future__ import annotations

import torch
from captum.attr import KernelShap, Lime

from xaudit.explain import build_explainer
from xaudit.explain.fastpath import FastPath
from xaudit.explain.gradient import baseline_for, sample_seeds, seeded_global_rng

from .attribution import context, engine, predicted, relative_l2
from .common import Results, images, resnet18, timed, to_standard_layout


def rise_loop(model, x, targets, spec: dict, batch: int) -> tuple[float, torch.Tensor]:
    """Per image: the same masks in chunks of ``batch``, Σ score · mask / (n · p)."""
    to_standard_layout(model)
    explainer = build_explainer(spec)
    n_masks, p = explainer.n_masks, explainer.p
    out = []

    def go():
        masks = explainer.masks(tuple(x.shape[-2:]), context(model), x.device)
        for i in range(len(x)):
            saliency = torch.zeros(x.shape[-2] * x.shape[-1])
            for start in range(0, n_masks, batch):
                m = masks(start, min(n_masks, start + batch))[0]
                with torch.no_grad():
                    scores = model(x[i : i + 1] * m.unsqueeze(1))[:, targets[i]]
                saliency += scores @ m.flatten(1)
            out.append((saliency / (n_masks * p)).view(x.shape[-2:]))

    return timed(go), torch.stack(out)


def bench_rise(res: Results, n_images: int, size: int = 224, n_masks: int = 1000) -> None:
    print(f"RISE: ResNet-18, {size} px, {n_masks} masks (7×7 grid), {n_images} images", flush=True)
    model, x = resnet18(), images(n_images, size, seed=3)
    targets = predicted(model, x)
    spec = {"name": "rise", "n_masks": n_masks}
    t32, s32, m32 = engine(model, spec, x, targets, FastPath(), batch_size=n_images)
    t16, s16, m16 = engine(model, spec, x, targets, FastPath(precision="bf16"), batch_size=n_images)
    per_pass = max(1, s32["samples_per_pass"] // n_images) * n_images
    t_loop, ref = rise_loop(model, x, targets, spec, batch=per_pass)
    print(f"  seconds: per-image loop (chunks of {per_pass} masks) {t_loop:.1f}, xaudit fp32 {t32:.1f}, "
          f"bf16 {t16:.1f} ({s16['fp32_recomputed']} redone in fp32); engine pass size {per_pass}",
          flush=True)
    print(f"  maps vs the loop, relative L2: fp32 {relative_l2(m32, ref):.2e}, bf16 "
          f"{relative_l2(m16, ref):.2e}", flush=True)
    res.add("RISE fp32: xaudit / per-image loop, same masks", t_loop / t32, 2.0)
    res.add("RISE bf16: xaudit / per-image loop, same masks", t_loop / t16)


def captum_surrogate_loop(model, x, targets, spec: dict, per_eval: int) -> tuple[float, torch.Tensor]:
    """One Captum call per image: the same superpixels and, from the same seed, the same samples."""
    to_standard_layout(model)
    explainer = build_explainer(spec)
    cls = {"lime": Lime, "kernel_shap": KernelShap}[spec["name"]]
    ctx = context(model)
    out = []

    def go():
        for i in range(len(x)):
            xi = x[i : i + 1]
            segments = explainer.segments(xi, ctx)
            base = baseline_for(explainer.baseline, xi, ctx)
            with seeded_global_rng(sample_seeds(xi, ctx)[0], x.device), torch.no_grad():
                attr = cls(model).attribute(xi, baselines=base, target=targets[i], n_samples=explainer.n_samples,
                                            feature_mask=segments[None], perturbations_per_eval=per_eval)
            out.append(attr.sum(1)[0])

    return timed(go), torch.stack(out)


def bench_surrogates(res: Results, n_images: int, size: int = 224, n_samples: int = 200) -> None:
    print(f"LIME and KernelSHAP: ResNet-18, {size} px, 50 SLIC superpixels, {n_samples} samples, "
          f"{n_images} images", flush=True)
    model, x = resnet18(), images(n_images, size, seed=4)
    targets = predicted(model, x)
    for name, label in (("lime", "LIME"), ("kernel_shap", "KernelSHAP")):
        spec = {"name": name, "n_samples": n_samples}
        # warm-up: the first call imports scikit-learn and scikit-image's SLIC on both sides
        engine(model, {**spec, "n_samples": 4}, x[:1, :, :32, :32], targets[:1], FastPath(), 1)
        captum_surrogate_loop(model, x[:1, :, :32, :32], targets[:1], {**spec, "n_samples": 4}, 1)
        t_ours, stats, ours = engine(model, spec, x, targets, FastPath(), batch_size=n_images)
        per_eval = max(1, stats["samples_per_pass"] // n_images)
        t_default, ref = captum_surrogate_loop(model, x, targets, spec, per_eval=1)
        t_best, ref_best = captum_surrogate_loop(model, x, targets, spec, per_eval=per_eval)
        print(f"  {label} seconds: Captum default (1 per eval) {t_default:.1f}, Captum at "
              f"{per_eval} per eval {t_best:.1f}, xaudit {t_ours:.1f} (pass size "
              f"{stats['samples_per_pass']}); maps vs Captum, relative L2: "
              f"{relative_l2(ours, ref):.2e} / {relative_l2(ours, ref_best):.2e}", flush=True)
        res.add(f"{label}: xaudit / Captum default, same samples", t_default / t_ours, 2.0)
        res.add(f"{label}: xaudit / Captum at xaudit's pass size", t_best / t_ours, 2.0)
