"""Attention rollout against a plain forward; Chefer et al. and AttnLRP against a plain
forward+backward, on one ViT-S/16 (random init: speed does not depend on the values), side by
side; AttnLRP against lxt's on a torchvision ViT-S/16 (``lxt_timing``, a process of its own)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

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
    attn_lrp = build_explainer("attn_lrp")

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
            "chefer": lambda: chefer.attribute(model, x, target, ctx),
            "attn_lrp": lambda: attn_lrp.attribute(model, x, target, ctx)}
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
    res.add("attn_lrp throughput / plain forward+backward",
            best["forward+backward"] / best["attn_lrp"], 0.9)


def bench_attn_lrp_vs_lxt(res: Results, n_images: int, size: int = 224) -> None:
    if importlib.util.find_spec("lxt") is None:
        print("attn_lrp against lxt: skipped (lxt is not installed; it is a dev dependency)")
        return
    print(f"attn_lrp (CP-LRP) against lxt's: torchvision ViT-S/16, {size} px, batch of {n_images}",
          flush=True)
    done = subprocess.run([sys.executable, "-m", "benchmarks.lxt_timing", str(n_images), str(size)],
                          capture_output=True, text=True, check=True)
    best = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  best of 3 (s): attn_lrp {best['ours']:.3f}, lxt {best['lxt']:.3f}; largest gap "
          f"between the maps {best['max_abs_gap']:.1e} of lxt's largest value", flush=True)
    res.add("lxt time / attn_lrp time (same relevance)", best["lxt"] / best["ours"], 1.0)
