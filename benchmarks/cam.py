"""Score-CAM: xaudit's engine against pytorch-grad-cam's ScoreCAM at its best batch_size."""

from __future__ import annotations

import contextlib
import io
import warnings

import torch

from xaudit.explain.fastpath import FastPath

from .attribution import engine, predicted, relative_l2
from .common import Results, images, resnet18, timed, to_standard_layout

GRAD_CAM_BATCHES = (16, 32, 64, 128)


def grad_cam_score_cam(model, x, targets, batch_size: int) -> tuple[float, torch.Tensor]:
    """pytorch-grad-cam's ScoreCAM on layer4, one call per image (its own loop is per image)."""
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    to_standard_layout(model)
    out = []

    def go():
        with ScoreCAM(model, [model.layer4]) as cam, contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cam.batch_size = batch_size
            for n in range(len(x)):
                out.append(torch.from_numpy(cam(x[n : n + 1], [ClassifierOutputTarget(targets[n])])))

    return timed(go), torch.cat(out)


def scaled(maps: torch.Tensor) -> torch.Tensor:
    """Each map shifted and scaled to [0, 1], as pytorch-grad-cam returns them."""
    flat = maps.flatten(1) - maps.flatten(1).amin(1, keepdim=True)
    return (flat / flat.amax(1, keepdim=True).clamp_min(1e-30)).view_as(maps)


def bench_score_cam(res: Results, n_images: int, size: int = 224) -> None:
    print(f"Score-CAM: ResNet-18 layer4 (512 channels), {size} px, {n_images} images", flush=True)
    model, x = resnet18(), images(n_images, size, seed=3)
    targets = predicted(model, x)
    sweep = {b: grad_cam_score_cam(model, x[:1], targets[:1], b)[0] for b in GRAD_CAM_BATCHES}
    best = min(sweep, key=sweep.get)
    t_theirs, ref = grad_cam_score_cam(model, x, targets, best)
    t_ours, stats, maps = engine(model, {"name": "score_cam"}, x, targets, FastPath(), batch_size=n_images)
    ours = scaled(maps)
    sweep_text = ", ".join(f"{b}: {s:.1f}" for b, s in sweep.items())
    print(f"  pytorch-grad-cam batch_size sweep on 1 image (s): {sweep_text}; best {best}", flush=True)
    print(f"  seconds: pytorch-grad-cam (batch_size {best}) {t_theirs:.1f}, xaudit fp32 {t_ours:.1f}; "
          f"xaudit pass size {stats['samples_per_pass']}, model evaluations {stats['model_evals']} "
          f"(pytorch-grad-cam: {n_images * 513})", flush=True)
    print(f"  maps ([0, 1]-scaled) vs pytorch-grad-cam: relative L2 {relative_l2(ours, ref):.2e}, "
          f"max abs {float((ours - ref).abs().max()):.2e}", flush=True)
    res.add("Score-CAM fp32: xaudit / pytorch-grad-cam (best batch_size)", t_theirs / t_ours, 2.0)

