"""Explaining under torchrun: 2 CPU processes (gloo) give the maps of a single-process run."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from xaudit.explain.engine import MapStore

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import torch
    from torch import nn
    from xaudit.data.base import Record
    from xaudit.distributed import explain_sharded, init_from_env
    from xaudit.explain import ExplainContext, build_explainer
    from xaudit.explain.fastpath import FastPath

    def main(root, world):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                              nn.Flatten(), nn.Linear(4, 3)).eval()
        images = torch.randn(11, 3, 12, 12, generator=torch.Generator().manual_seed(1))
        records = [Record(id=f"r{i}", label=0, image=images[i]) for i in range(11)]
        pos = {r.id: i for i, r in enumerate(records)}
        ctx = ExplainContext(mean=torch.zeros(3), std=torch.ones(3),
                             generator=torch.Generator().manual_seed(0))
        methods = [build_explainer({"name": "integrated_gradients", "n_steps": 8}),
                   build_explainer({"name": "occlusion", "window": 4, "stride": 4})]
        explain_sharded(model, methods, records, [i % 3 for i in range(11)],
                        lambda recs: images[[pos[r.id] for r in recs]], ctx, Path(root), 3, 2,
                        torch.device("cpu"), fast=FastPath(), world=world)

    if __name__ == "__main__":
        world = init_from_env("gloo") if sys.argv[2] == "torchrun" else None
        main(sys.argv[1], world)
    """
)


@pytest.mark.heavy
def test_two_gloo_ranks_write_the_maps_of_one_process(tmp_path: Path):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    single, multi = tmp_path / "single", tmp_path / "multi"
    subprocess.run([sys.executable, str(script), str(single), "single"], check=True, timeout=120)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
         str(script), str(multi), "torchrun"],
        capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for label in ("integrated_gradients", "occlusion_w4"):
        ids = [f"r{i}" for i in range(11)]
        a, b = MapStore(single, label).load(ids), MapStore(multi, label).load(ids)
        chunk_files = {c["file"] for c in MapStore(multi, label).index()["chunks"]}
        assert any("rank0" in f for f in chunk_files) and any("rank1" in f for f in chunk_files)
        for key in a:
            if key != "ids":
                torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


FAILING = textwrap.dedent(
    """
    import sys
    from xaudit.distributed import OtherRankFailed, init_from_env, step

    world = init_from_env("gloo")

    def work():
        if world.rank == 1:
            raise ValueError("rank 1 broke")
        return "fine"

    try:
        step(world, work)
    except OtherRankFailed as err:
        print(f"rank {world.rank}: {err}")
        sys.exit(3)
    except ValueError as err:
        print(f"rank {world.rank}: own error {err}")
        sys.exit(4)
    """
)


def test_a_failing_rank_stops_the_others_with_a_message(tmp_path: Path):
    script = tmp_path / "fail.py"
    script.write_text(FAILING)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
         "--tee", "3", str(script)],
        capture_output=True, text=True, timeout=180,
    )
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "rank 1: own error rank 1 broke" in out
    assert "rank 0: rank 1 of this torchrun job stopped with an error" in out
