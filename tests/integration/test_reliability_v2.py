"""Hostile and careless use through the real CLI: concurrent runs, bad recipes, interrupts."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import class_image, write_png

ROOT = Path(__file__).resolve().parents[2]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def image_folder(root: Path, classes=("a", "b"), n: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for label, cls in enumerate(classes):
        for i in range(n):
            write_png(root / cls / f"{i}.png", class_image(label, rng, 16))
    return root


def run_args(out: Path, data: Path, name: str = "r", *extra: str) -> list[str]:
    args = [sys.executable, "-m", "xaudit.cli", "run", str(ROOT / "configs" / "demo.yaml"),
            "--set", f"output_dir={out}", "--set", f"name={name}"]
    for s in ("data.source=folder", f"data.path={data}", "model.weights=none", "model.image_size=32",
              "model.resize_size=32", "train.epochs=2", "audit.enabled=false",
              "explain.methods=[{name: saliency}]", "explain.select.per_class=1", *extra):
        args += ["--set", s]
    return args


def xaudit(args: list[str], cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)


def one_error(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, res.stderr
    return errors[0]


def table(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------- one run per folder


@pytest.mark.heavy
def test_second_run_on_the_same_folder_fails_at_once_and_the_first_completes(tmp_path):
    data = image_folder(tmp_path / "imgs")
    first = subprocess.Popen(run_args(tmp_path, data), env=env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "r" / "xaudit.lock"
    deadline = time.time() + 120
    while time.time() < deadline and first.poll() is None:
        if lock.is_file() and lock.read_text().strip():
            break
        time.sleep(0.02)
    assert first.poll() is None, "the first run ended before it took its lock"
    os.kill(first.pid, signal.SIGSTOP)  # hold it mid-run, lock taken, so the timing is not a race
    try:
        t0 = time.perf_counter()
        second = xaudit(run_args(tmp_path, data, "r", "seed=7"), timeout=120)
        took = time.perf_counter() - t0
    finally:
        os.kill(first.pid, signal.SIGCONT)
    line = one_error(second)
    assert line.startswith(f"error: run folder {tmp_path / 'r'} is in use by another xaudit run (pid {first.pid} on ")
    assert took < 30  # start-up (imports) and the refusal; nothing is loaded or decoded
    assert first.wait(timeout=300) == 0, first.stderr.read()
    run = tmp_path / "r"
    assert not lock.exists()
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert recipe["seed"] == 0 and summary["seed"] == 0  # the second run's seed=7 left no trace
    assert set(json.loads((run / "manifest.json").read_text())["stages"]) == {
        "train", "evaluate", "explain", "audit", "report"}
    ids = json.loads((run / "maps" / "saliency" / "index.json").read_text())
    stored = [i for c in ids["chunks"] for i in c["ids"]]
    explained = [r["id"] for r in table(run / "tables" / "explained_images.csv")]
    assert len(stored) == len(set(stored)) and sorted(stored) == sorted(explained)


@pytest.mark.heavy
def test_under_torchrun_rank_0_holds_the_lock_and_a_second_run_fails_at_once(tmp_path):
    from tests.integration.test_distributed_pipeline import torchrun

    data = image_folder(tmp_path / "imgs")
    first = subprocess.Popen(torchrun(run_args(tmp_path, data)), env=env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "r" / "xaudit.lock"
    deadline = time.time() + 180
    while time.time() < deadline and first.poll() is None:
        if lock.is_file() and lock.read_text().strip():
            break
        time.sleep(0.02)
    assert first.poll() is None, "the torchrun job ended before it took its lock"
    holder = json.loads(lock.read_text())["pid"]
    # rank 0, a worker of the launcher, holds it (not the launcher, not rank 1)
    assert holder != first.pid and b"RANK=0" in Path(f"/proc/{holder}/environ").read_bytes().split(b"\0")
    os.kill(holder, signal.SIGSTOP)  # rank 1 waits for it in the next collective
    try:
        second = xaudit(run_args(tmp_path, data, "r", "seed=7"), timeout=120)
    finally:
        os.kill(holder, signal.SIGCONT)
    assert one_error(second).startswith(
        f"error: run folder {tmp_path / 'r'} is in use by another xaudit run (pid {holder} on ")
    assert first.wait(timeout=600) == 0, first.stderr.read()[-3000:]
    assert "(2 processes)" in first.stderr.read()
    run = tmp_path / "r"
    assert not lock.exists()
    assert json.loads((run / "summary.json").read_text())["seed"] == 0
    assert set(json.loads((run / "manifest.json").read_text())["stages"]) == {
        "train", "evaluate", "explain", "audit", "report"}


# ----------------------------------------------------------------- classes after decoding


def corrupt_class(data: Path, cls: str = "c", n: int = 6) -> None:
    for i in range(n):
        (data / cls).mkdir(parents=True, exist_ok=True)
        (data / cls / f"{i}.png").write_text("not an image at all\n")


def test_class_whose_every_file_is_refused_stops_the_run_naming_it(tmp_path):
    data = image_folder(tmp_path / "imgs")
    corrupt_class(data)
    res = xaudit(run_args(tmp_path, data))
    skipped = tmp_path / "r" / "tables" / "skipped.csv"
    assert one_error(res) == (
        f"error: class 'c' has no usable image in the train split after decoding: its files were refused "
        f"(their rows are in {skipped}); fix or remove those files, or set data.on_empty_class: drop")
    rows = table(skipped)
    assert len(rows) == 6 and {r["reason"] for r in rows} == {"not an image (text content)"}
    assert not (tmp_path / "r" / "model").exists()  # nothing was trained


def test_on_empty_class_drop_trains_without_it_and_the_report_says_so(tmp_path):
    data = image_folder(tmp_path / "imgs")
    corrupt_class(data)
    res = xaudit(run_args(tmp_path, data, "r", "data.on_empty_class=drop"))
    assert res.returncode == 0, res.stderr
    run = tmp_path / "r"
    meta = json.loads((run / "model" / "model.json").read_text())
    assert meta["classes"] == ["a", "b"] and meta["num_classes"] == 2
    summary = json.loads((run / "summary.json").read_text())
    assert summary["dataset"]["classes"] == ["a", "b"]
    assert summary["test"]["macro_f1_classes"] == 2
    html = (run / "report.html").read_text()
    assert "Classes dropped: dropped 1 class(es) with no usable image in the train split" in html


# ----------------------------------------------------------------- report notices


def test_leakage_warning_is_in_the_report(tmp_path):
    data = image_folder(tmp_path / "imgs")
    # the same pixels under two names: the split puts them apart often enough with 4 copies
    for i in range(4):
        (data / "a" / f"copy{i}.png").write_bytes((data / "a" / "0.png").read_bytes())
    res = xaudit(run_args(tmp_path, data))
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    pairs = summary["dataset"]["info"]["leakage"]["pairs"]
    assert pairs >= 1, "the split kept every copy in one split; choose more copies"
    html = (tmp_path / "r" / "report.html").read_text()
    assert "Leakage: " in html and "appear in two splits" in html


# ----------------------------------------------------------------- interrupts


@pytest.mark.heavy
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_ends_the_run_with_its_code_and_a_line_then_report_and_resume(tmp_path, sig, code):
    data = image_folder(tmp_path / "imgs")
    slow = ["explain.select.all=true", "explain.methods=[{name: occlusion, window: 4, stride: 1}]"]
    args = run_args(tmp_path, data, "r", *slow)
    proc = subprocess.Popen(args, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    manifest = tmp_path / "r" / "manifest.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if manifest.is_file() and "evaluate" in json.loads(manifest.read_text() or "{}").get("stages", {}):
            break
        time.sleep(0.02)
    time.sleep(0.3)  # into the explain stage, which takes seconds here
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == code
    lines = [ln for ln in proc.stderr.read().splitlines() if ln.startswith("interrupted")]
    name = signal.Signals(sig).name
    assert lines == [f"interrupted by {name} during the explain stage: finished stages and chunks are kept; "
                     "run `xaudit run` again with the same recipe to resume"]
    assert not (tmp_path / "r" / "xaudit.lock").exists()
    report = xaudit([sys.executable, "-m", "xaudit.cli", "report", str(tmp_path / "r")])
    assert report.returncode == 0, report.stderr
    html = (tmp_path / "r" / "report.html").read_text()
    assert "Not up to date: the explain, audit stages have not finished" in html
    resumed = xaudit(args)
    assert resumed.returncode == 0, resumed.stderr
    assert "Not up to date" not in (tmp_path / "r" / "report.html").read_text()


# ----------------------------------------------------------------- class values and fingerprints


def test_target_that_is_not_a_class_fails_before_training(tmp_path):
    data = image_folder(tmp_path / "imgs")
    res = xaudit(run_args(tmp_path, data, "r", "explain.target=defect"))
    assert one_error(res) == ("error: explain.target: 'defect' is not allowed. Allowed: predicted, true, "
                              "or a class name (a, b).")
    assert not (tmp_path / "r" / "model").exists()
    assert "decoding" not in res.stderr  # refused from the listing, before any image is decoded


@pytest.mark.heavy
def test_changing_which_images_are_explained_keeps_the_audit(tmp_path):
    data = image_folder(tmp_path / "imgs")
    audit = ["audit.enabled=true", "audit.n_images=2", "audit.audits=[{name: correctness}]"]
    first = xaudit(run_args(tmp_path, data, "r", *audit))
    assert first.returncode == 0, first.stderr
    table_path = tmp_path / "r" / "tables" / "audit_correctness.csv"
    before = (table_path.read_bytes(), table_path.stat().st_mtime_ns)
    again = xaudit(run_args(tmp_path, data, "r", *audit, "explain.select.all=true", "report.max_figures=1"))
    assert again.returncode == 0, again.stderr
    for kept in ("train", "evaluate", "audit"):
        assert f"{kept}: already done, kept" in again.stderr
    assert "explain: already done" not in again.stderr
    assert (table_path.read_bytes(), table_path.stat().st_mtime_ns) == before
    n_test = len(table(tmp_path / "r" / "tables" / "predictions.csv"))
    assert len(table(tmp_path / "r" / "tables" / "explained_images.csv")) == n_test
    changed = xaudit(run_args(tmp_path, data, "r", *audit, "explain.select.all=true",
                              "report.max_figures=1", "explain.methods=[{name: saliency}, {name: grad_cam}]"))
    assert changed.returncode == 0, changed.stderr
    assert "audit: already done" not in changed.stderr  # the methods are what the audit reads


# ----------------------------------------------------------------- names in outputs


def test_colliding_class_names_get_their_own_figures_and_formula_names_are_escaped(tmp_path):
    classes = ("rust spot", "rust_spot", "=SUM(1)")
    data = image_folder(tmp_path / "imgs", classes=classes)
    res = xaudit(run_args(tmp_path, data, "r", "explain.select.all=true"))
    assert res.returncode == 0, res.stderr
    run = tmp_path / "r"
    grids = sorted(p.name for p in (run / "figures").glob("grid_saliency_class_*.png"))
    assert grids == ["grid_saliency_class_SUM_1.png", "grid_saliency_class_rust_spot-2.png",
                     "grid_saliency_class_rust_spot.png"]
    raw = list(csv.reader(open(run / "tables" / "predictions.csv", encoding="utf-8")))
    header, body = raw[0], raw[1:]
    assert "p['=SUM(1)]" not in header and "p[=SUM(1)]" in header  # "p[" is harmless
    true_col = header.index("true")
    cells = {row[true_col] for row in body}
    assert "'=SUM(1)" in cells and "=SUM(1)" not in cells
    ids = {row[0] for row in body}
    assert any(i.startswith("'=SUM(1)/") for i in ids)  # the id is the file's path from the class folder
    from xaudit.run import read_csv

    explained = read_csv(run / "tables" / "explained_images.csv")
    assert {r["true"] for r in explained} == set(classes)  # xaudit reads them back unescaped


def test_a_file_name_with_a_newline_and_bidi_control_stays_one_line(tmp_path):
    data = image_folder(tmp_path / "imgs")
    (data / "a" / "evil\u202egnp.\nerror: forged.png").write_text("not an image\n")
    res = xaudit(run_args(tmp_path, data, "r", "data.on_bad_image=fail"))
    line = one_error(res)
    assert "\\u202e" in line and "\\nerror: forged" in line and "\u202e" not in res.stderr


# ----------------------------------------------------------------- links and special files


@pytest.mark.heavy
def test_links_and_special_files_get_rows_and_outside_links_are_refused(tmp_path):
    data = image_folder(tmp_path / "imgs")
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes((data / "a" / "0.png").read_bytes())
    (data / "a" / "out.png").symlink_to(outside)
    (data / "a" / "inside.png").symlink_to(data / "a" / "1.png")
    (data / "a" / "dangling.png").symlink_to(tmp_path / "missing.png")
    (data / "a" / "zero.png").symlink_to("/dev/zero")
    os.mkfifo(data / "a" / "fifo.png")
    res = xaudit(run_args(tmp_path, data), timeout=300)
    assert res.returncode == 0, res.stderr
    rows = {Path(r["file"]).name: r["reason"] for r in table(tmp_path / "r" / "tables" / "skipped.csv")}
    assert rows == {
        "out.png": "symbolic link leading outside the dataset folder (data.follow_symlinks: true follows it)",
        "dangling.png": "broken symbolic link (its target does not exist)",
        "zero.png": "symbolic link leading outside the dataset folder (data.follow_symlinks: true follows it)",
        "fifo.png": "not a regular file (a FIFO)",
    }
    counts = {(r["split"], r["class"]): int(r["n"]) for r in table(tmp_path / "r" / "tables" / "dataset.csv")}
    assert sum(n for (s, c), n in counts.items() if c == "a") == 9  # 8 files and the link inside

    followed = xaudit(run_args(tmp_path, data, "f", "data.follow_symlinks=true"), timeout=300)
    assert followed.returncode == 0, followed.stderr
    rows = {Path(r["file"]).name: r["reason"] for r in table(tmp_path / "f" / "tables" / "skipped.csv")}
    assert "out.png" not in rows and rows["zero.png"] == "not a regular file (a device)"


@pytest.mark.heavy
def test_report_does_not_embed_a_symlinked_figure(tmp_path):
    data = image_folder(tmp_path / "imgs")
    res = xaudit(run_args(tmp_path, data))
    assert res.returncode == 0, res.stderr
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG\r\n\x1a\n" + b"SECRET-BYTES" * 10)
    (tmp_path / "r" / "figures" / "grid_extra.png").symlink_to(secret)
    report = xaudit([sys.executable, "-m", "xaudit.cli", "report", str(tmp_path / "r")])
    assert report.returncode == 0, report.stderr
    html = (tmp_path / "r" / "report.html").read_text()
    import base64

    assert base64.b64encode(secret.read_bytes())[:40].decode() not in html
    assert "Not embedded: figures/grid_extra.png is a symbolic link" in html


# ----------------------------------------------------------------- what the console says


@pytest.mark.heavy
def test_skipped_files_and_a_class_without_test_images_are_said_on_the_console(tmp_path):
    data = image_folder(tmp_path / "imgs")
    write_png(data / "c" / "only.png", class_image(2, np.random.default_rng(3), 16))
    (data / "a" / "notes.png").write_text("not an image\n")
    res = xaudit(run_args(tmp_path, data))
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    assert ("warning: 1 file(s) skipped (1 not an image (text content)): one row each in "
            "tables/skipped.csv") in out
    assert "warning: 1 class(es) with no test image: 'c'; test metrics leave it out " \
           "(macro F1 over 2 of 3 classes)" in out
    assert "macro F1" in out and "over 2 of 3 classes" in out.split("done in")[-1]


@pytest.mark.heavy
def test_a_run_that_cannot_fit_in_memory_is_refused_naming_the_key(tmp_path):
    data = image_folder(tmp_path / "imgs")
    res = xaudit(run_args(tmp_path, data, "r", "model.image_size=1024", "model.resize_size=1024",
                          "model.mode=finetune", "train.batch_size=100000"))
    line = one_error(res)
    assert line.startswith("error: train.batch_size 100000 at model.image_size 1024: a batch's "
                           "gradient pass needs at least "), line
    assert "images per batch fit" in line
    assert not (tmp_path / "r" / "model" / "model.json").exists()  # refused before training
