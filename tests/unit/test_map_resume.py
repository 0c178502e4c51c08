"""Which stored maps a re-run may keep: only those of the same method setting and shards."""

from pathlib import Path

import torch

from xaudit.distributed import keep_or_reset_maps
from xaudit.explain.engine import MapStore


def write(root: Path, label: str, ids: list[str], part: str | None = None) -> None:
    MapStore(root, label, part).write_chunk(ids, torch.ones(len(ids), 4, 4), torch.zeros(len(ids)), None)


def test_same_key_and_ids_keeps_the_maps(tmp_path):
    assert not keep_or_reset_maps(tmp_path, "ig", "k1", [["a", "b", "c"]])  # nothing yet
    write(tmp_path, "ig", ["a", "b"])
    assert keep_or_reset_maps(tmp_path, "ig", "k1", [["a", "b", "c"]])
    assert MapStore(tmp_path, "ig").done_ids() == {"a", "b"}


def test_another_key_deletes_the_maps(tmp_path):
    keep_or_reset_maps(tmp_path, "ig", "n_steps=4", [["a", "b"]])
    write(tmp_path, "ig", ["a", "b"])
    assert not keep_or_reset_maps(tmp_path, "ig", "n_steps=8", [["a", "b"]])
    assert MapStore(tmp_path, "ig").done_ids() == set()
    assert not list((tmp_path / "ig").glob("*.safetensors"))


def test_ids_outside_the_selection_delete_the_maps(tmp_path):
    keep_or_reset_maps(tmp_path, "ig", "k", [["a", "b"]])
    write(tmp_path, "ig", ["a", "z"])
    assert not keep_or_reset_maps(tmp_path, "ig", "k", [["a", "b"]])


def test_shards_are_kept_only_for_the_same_split_over_ranks(tmp_path):
    shards = [["a", "c"], ["b", "d"]]
    keep_or_reset_maps(tmp_path, "ig", "k", shards)
    write(tmp_path, "ig", ["a"], "rank0")
    write(tmp_path, "ig", ["b"], "rank1")
    MapStore(tmp_path, "ig", "rank0").merge_parts(["rank0", "rank1"])
    assert keep_or_reset_maps(tmp_path, "ig", "k", shards)  # a resumed job of two ranks
    assert MapStore(tmp_path, "ig").done_ids() == {"a", "b"}
    # three ranks now: rank 1 would be given other images than it holds
    assert not keep_or_reset_maps(tmp_path, "ig", "k", [["a", "d"], ["c"], ["b"]])
    assert not list((tmp_path / "ig").glob("index.rank*.json"))


def test_a_single_process_does_not_resume_a_sharded_store(tmp_path):
    keep_or_reset_maps(tmp_path, "ig", "k", [["a"], ["b"]])
    write(tmp_path, "ig", ["a"], "rank0")
    assert not keep_or_reset_maps(tmp_path, "ig", "k", [["a", "b"]])


def test_costs_of_the_ranks_add_up():
    from xaudit.distributed import merge_stats

    a = {"seconds": 2.0, "model_evals": 10, "fp32_recomputed": 1, "path": "incremental",
         "work_per_window": 0.55, "samples_per_pass": 64, "precision": "fp32"}
    b = {**a, "seconds": 3.0, "model_evals": 12, "fp32_recomputed": 0, "path": "plain (why)"}
    out = merge_stats([a, b])
    assert out["seconds"] == 3.0 and out["model_evals"] == 22 and out["fp32_recomputed"] == 1
    assert out["work_per_window"] == 0.55 and out["samples_per_pass"] == 64
    assert out["path"] == "incremental | plain (why)" and out["precision"] == "fp32"
    assert out["ranks"] == 2
    assert merge_stats([a, a])["path"] == "incremental"
