"""Attention rollout against a plain forward, Chefer et al. against a plain forward+backward,
on one ViT-S/16 (random init: speed does not depend on the values), side by side."""

from __future__ import annotations

import torch

from xaudit.explain import build_explainer
from xaudit.explain.cam.hooks import target_scores

from .common import Results, images, timed

REPEATS = 3


def vit_small(size: int) -> torch.nn.Module:
    import timm

    torch.manual_seed(0)
    return timm.create_model("vit_small_patch16_224", pretrained=False, img_size=size).eval()


def bench_attention(res: Results, n_images: int, size: int = 224) -> None:
    print(f"attention methods: timm ViT-S/16 (fused attention), {size} px, batch of {n_images}",
          flush=True)
    model, x = vit_small(size), images(n_images, size, seed=4)
    with torch.no_grad():
        target = model(x).argmax(1)
    ctx = None  # the attention methods read nothing from the context
    rollout, chefer = build_explainer("attention_rollout"), build_explainer("chefer")

    def forward():
        with torch.inference_mode():
            model(x)

    def forward_backward():
        xi = x.detach().requires_grad_(True)
        torch.autograd.grad(target_scores(model(xi), target).sum(), xi)

    def run_rollout():
        with torch.inference_mode():  # as the engine runs a method without gradients
            rollout.attribute(model, x, target, ctx)

    runs = {"forward": forward, "rollout": run_rollout, "forward+backward": forward_backward,
            "chefer": lambda: chefer.attribute(model, x, target, ctx)}
    for fn in runs.values():  # warm-up
        fn()
    best = {k: float("inf") for k in runs}
    for _ in range(REPEATS):  # interleaved, so the machine's state is shared
        for k, fn in runs.items():
            best[k] = min(best[k], timed(fn))
    print("  best of {} (s): {}".format(REPEATS, ", ".join(f"{k} {v:.3f}" for k, v in best.items())),
          flush=True)
    res.add("attention_rollout time / plain forward", best["rollout"] / best["forward"], 1.2,
            lower=True)
    res.add("chefer throughput / plain forward+backward", best["forward+backward"] / best["chefer"],
            0.9)
