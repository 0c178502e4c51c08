"""Peak resident memory of explaining N images (run in a fresh process per N)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from xaudit.data.base import Record
from xaudit.explain import ExplainContext, build_explainer
from xaudit.explain.engine import MapStore, explain_dataset
from xaudit.explain.fastpath import FastPath

from .common import Results, resnet18

SIZE = 32


def explain_n(n: int) -> dict:
    """Explain ``n`` generated images with two methods, streaming maps to disk."""
    model = resnet18(10)
    records = [Record(id=f"img{i:06d}", label=0, image=None) for i in range(n)]

    def batch_fn(recs):  # images made on demand, as a decoded-image store would hand them out
        return torch.stack([
            torch.randn(3, SIZE, SIZE, generator=torch.Generator().manual_seed(int(r.id[3:])))
            for r in recs
        ])

    ctx = ExplainContext(mean=torch.zeros(3), std=torch.ones(3), target_layer=model.layer4,
                         generator=torch.Generator().manual_seed(0))
    methods = [build_explainer({"name": "saliency"}), build_explainer({"name": "grad_cam"})]
    with tempfile.TemporaryDirectory() as tmp:
        stores = [MapStore(Path(tmp), e.label) for e in methods]
        explain_dataset(model, methods, records, [i % 10 for i in range(n)], batch_fn, ctx, stores,
                        32, 64, torch.device("cpu"), fast=FastPath())
        loaded = stores[0].load([records[-1].id])  # read back by id
    return {"n": n, "peak_rss_mb": peak_rss_mb(),
            "last_map_shape": list(loaded["maps"].shape)}


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the
    parent that spawned it)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def peak_for(n: int) -> float:
    out = subprocess.run([sys.executable, "-m", "benchmarks.memory", str(n)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def bench_memory(res: Results, small: int, large: int) -> None:
    print(f"Peak memory: saliency + Grad-CAM on ResNet-18 at {SIZE} px, {small} vs {large} images",
          flush=True)
    a, b = peak_for(small), peak_for(large)
    print(f"  peak RSS: {small} images {a:.0f} MB, {large} images {b:.0f} MB", flush=True)
    # lower is better here: report it as a ratio to stay under, and its inverse for the table
    res.add(f"Peak memory {small} / {large} images (>= 1/1.2 means flat)", a / b, 1 / 1.2)


if __name__ == "__main__":
    print(json.dumps(explain_n(int(sys.argv[1]))))
