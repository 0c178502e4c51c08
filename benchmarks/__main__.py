"""``python -m benchmarks [--quick] [--only NAME ...]``: every ratio with its target.

All timings of one ratio are taken in this process, one after the other, so they share
the machine's state; on a shared machine only such side-by-side ratios mean anything.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from .attention import bench_attention, bench_attn_lrp_vs_lxt
from .attribution import bench_gradcam, bench_ig, bench_occlusion, quiet
from .audit import bench_audit
from .beans import bench_beans
from .breadth import bench_rise, bench_surrogates
from .cam import bench_score_cam
from .common import Results
from .memory import bench_memory

# (images, resolution): the sizes the benchmarks are specified at (about 13 minutes on 2 quiet
# cores); the ratios compare per-image costs, so --quick's smaller sizes only check the wiring
FULL = {"ig": (64, 224), "occlusion": (8, 224), "gradcam": (256, 224), "beans": ((1034, 133, 128), 1),
        "memory": (200, 2000), "rise": (4, 224, 1000), "surrogates": (4, 224, 200),
         "scorecam": (2, 224), "audit": (6, 224), "attention": (8, 224)}
QUICK = {"ig": (2, 96), "occlusion": (1, 96), "gradcam": (16, 96), "beans": ((60, 12, 12), 1),
         "memory": (50, 200), "rise": (2, 64, 100), "surrogates": (2, 64, 40), "scorecam": (1, 96),
         "audit": (3, 64), "attention": (2, 64)}


def main(argv: list[str] | None = None) -> Results:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of a minute or two")
    parser.add_argument("--only", nargs="*", choices=list(FULL), help="run only these benchmarks")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    quiet()
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; GPU: {'yes' if torch.cuda.is_available() else 'none (CPU figures only)'}")
    res = Results()
    t0 = time.perf_counter()
    wanted = args.only or list(FULL)
    if "ig" in wanted:
        bench_ig(res, *sizes["ig"])
    if "occlusion" in wanted:
        bench_occlusion(res, *sizes["occlusion"])
    if "gradcam" in wanted:
        bench_gradcam(res, *sizes["gradcam"])
    if "beans" in wanted:
        bench_beans(res, *sizes["beans"])
    if "memory" in wanted:
        bench_memory(res, *sizes["memory"])
    if "rise" in wanted:
        bench_rise(res, *sizes["rise"])
    if "surrogates" in wanted:
        bench_surrogates(res, *sizes["surrogates"])
    if "scorecam" in wanted:
        bench_score_cam(res, *sizes["scorecam"])
    if "audit" in wanted:
        bench_audit(res, *sizes["audit"])
    if "attention" in wanted:
        bench_attention(res, *sizes["attention"])
        bench_attn_lrp_vs_lxt(res, *sizes["attention"])
    print(f"\nratios (each with its target; {time.perf_counter() - t0:.0f} s in all):")
    print(res.table())
    return res


if __name__ == "__main__":
    main()
