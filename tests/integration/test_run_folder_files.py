"""`xaudit report` reads only a run folder's own regular files (the real CLI)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.cli_runs import env, image_folder, one_error, run_args, xaudit

pytestmark = pytest.mark.heavy  # one end-to-end run, then `xaudit report` per case; the reader
# itself is covered in the fast suite by tests/unit/test_read_inside.py


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("run")
    res = xaudit(run_args(tmp, image_folder(tmp / "imgs")))
    assert res.returncode == 0, res.stderr[-2000:]
    return tmp / "r"


def report(run: Path) -> subprocess.CompletedProcess:
    # a reader that blocked on a FIFO would run into this time-out
    return subprocess.run([sys.executable, "-m", "xaudit.cli", "report", str(run)], env=env(),
                          capture_output=True, text=True, timeout=60)


def copy_of(run: Path, tmp_path: Path) -> tuple[Path, Path]:
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, symlinks=True)
    return copy, copy / "maps" / "saliency" / "chunk_00000.safetensors"


def test_the_untouched_copy_reports(finished_run, tmp_path):
    copy, _ = copy_of(finished_run, tmp_path)
    res = report(copy)
    assert res.returncode == 0, res.stderr[-2000:]


def _fifo(chunk: Path) -> None:
    chunk.unlink()
    os.mkfifo(chunk)


def _link(target: str):
    def make(chunk: Path) -> None:
        chunk.unlink()
        chunk.symlink_to(target)
    return make


def _foreign(chunk: Path) -> None:
    chunk.write_bytes(Path("/etc/passwd").read_bytes())


@pytest.mark.parametrize(("make", "reason"), [
    (_fifo, "not a regular file (a FIFO); xaudit reads only regular files here"),
    (_link("/dev/zero"), "leads outside {maps} (a symbolic link or '..'); xaudit reads only the folder's own files"),
    (_link("/etc/passwd"), "leads outside {maps} (a symbolic link or '..'); xaudit reads only the folder's own files"),
    (_foreign, "not a chunk of stored maps (SafetensorError: "),
], ids=["fifo", "link-to-dev-zero", "link-to-etc-passwd", "not-safetensors"])
def test_a_map_chunk_that_is_not_the_folders_own_file_is_one_line_naming_it(finished_run, tmp_path,
                                                                            make, reason):
    copy, chunk = copy_of(finished_run, tmp_path)
    make(chunk)
    line = one_error(report(copy))
    assert line.startswith(f"error: {chunk}: {reason.format(maps=copy / 'maps')}"), line


@pytest.mark.parametrize("name", ["/dev/zero", "../../../../../etc/passwd", "/etc/passwd"])
def test_an_index_naming_a_file_outside_its_folder_is_refused(finished_run, tmp_path, name):
    copy, _ = copy_of(finished_run, tmp_path)
    index = copy / "maps" / "saliency" / "index.json"
    data = json.loads(index.read_text())
    data["chunks"][0]["file"] = name
    index.write_text(json.dumps(data))
    line = one_error(report(copy))
    assert line == (f"error: {index}: chunks[0].file: {name!r} is not a chunk file name of this "
                    "folder"), line


def test_a_fifo_summary_or_recipe_never_blocks_the_report(finished_run, tmp_path):
    copy, _ = copy_of(finished_run, tmp_path)
    (copy / "summary.json").unlink()
    os.mkfifo(copy / "summary.json")
    assert "summary.json" in one_error(report(copy))
    copy2 = tmp_path / "copy2"
    shutil.copytree(finished_run, copy2, symlinks=True)
    (copy2 / "recipe.yaml").unlink()
    (copy2 / "recipe.yaml").symlink_to("/etc/passwd")
    line = one_error(report(copy2))
    assert line.startswith(f"error: {copy2 / 'recipe.yaml'}: leads outside {copy2}"), line


def test_a_recipe_yaml_that_is_a_fifo_or_a_link_out_stops_a_stage_command_at_once(finished_run, tmp_path):
    copy, _ = copy_of(finished_run, tmp_path)
    recipe = copy / "recipe.yaml"
    recipe.unlink()
    os.mkfifo(recipe)
    res = subprocess.run([sys.executable, "-m", "xaudit.cli", "evaluate", str(copy)], env=env(),
                         capture_output=True, text=True, timeout=60)
    assert one_error(res) == (f"error: {recipe}: not a regular file (a FIFO); xaudit reads only "
                              "regular files here")
    recipe.unlink()
    recipe.symlink_to("/dev/zero")
    assert one_error(report(copy)).startswith(f"error: {recipe}: leads outside {copy}")
