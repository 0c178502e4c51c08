"""``python -m benchmarks.lxt_timing N SIZE``: xaudit's CP-LRP and lxt's on one torchvision
ViT-S/16, in a process of its own (lxt patches torch's classes for the whole process). Ours is
timed first, lxt's after its patch; each best of REPEATS after a warm-up. Prints one JSON line."""

from __future__ import annotations

import json
import sys

import torch
from torchvision.models import vision_transformer

from tests.helpers.lxt_oracle import import_lxt_rules
from xaudit.explain import build_explainer

from .common import images, timed

REPEATS = 3


def main(n_images: int, size: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = vision_transformer.VisionTransformer(
        image_size=size, patch_size=16, num_layers=12, num_heads=6, hidden_dim=384,
        mlp_dim=1536).eval()
    torch.nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision starts it at zero
    x = images(n_images, size, seed=4)
    with torch.no_grad():
        target = model(x).argmax(1)
    rows = torch.arange(n_images)
    ours = build_explainer({"name": "attn_lrp", "variant": "cp"})

    def run_ours():
        return ours.attribute(model, x, target, None)

    def run_lxt():
        xi = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(xi)[rows, target].sum(), xi)
        return grad * xi

    mine = run_ours()
    best = {"ours": min(timed(run_ours) for _ in range(REPEATS))}
    import_lxt_rules()
    from lxt.efficient import monkey_patch
    from lxt.efficient.models import vit_torch

    monkey_patch(vision_transformer, vit_torch.cp_LRP)
    theirs = run_lxt()
    best["lxt"] = min(timed(run_lxt) for _ in range(REPEATS))
    best["max_abs_gap"] = float((mine - theirs).abs().max() / theirs.abs().max())
    return best


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), int(sys.argv[2]))))
