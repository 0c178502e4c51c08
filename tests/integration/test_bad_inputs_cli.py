"""The catalogue of docs/bad-inputs.md through the real CLI.

One run over a folder holding one of each bad file that can live in a folder: each refused
file has its row in skipped.csv with the documented reason, each odd but valid file is
used (it is predicted), and the run still finishes with every result. Then one line per
problem that stops a run.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import class_image, write_png

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["healthy leaf", "rostfleck 猫", "<em>spot"]  # a space, Unicode, HTML
MAX_PIXELS = 10_000

# file -> the reason docs/bad-inputs.md states for it in skipped.csv
REFUSED = {
    "zero.jpg": "empty file (0 bytes)",
    "truncated.jpg": "truncated image data",
    "text.jpg": "not an image (text content)",
    "page.jpg": "not an image (an HTML page: a failed download?)",
    "binary.png": "not an image (unrecognised binary content)",
    "nan.tif": "image has NaN or infinite values",
    "huge.png": f"image too large: 120×100 = 12000 pixels exceeds the limit of {MAX_PIXELS} "
    "(data.max_image_pixels)",
    "notes.txt": "extension '.txt' is not an image type",
    "masked.png": "mask size 10×10 differs from its image 16×16",
}
# odd but valid files: loaded and used
ACCEPTED = ["png_named.jpg", "grey16.png", "grey.png", "rgba.png", "palette.png", "cmyk.jpg",
            "exif.jpg", "one_pixel.png", "animated.gif", "dup.png"]


def xaudit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "xaudit.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def run_args(tmp_path: Path, root: Path, *extra: str) -> list[str]:
    args = ["run", str(ROOT / "configs" / "demo.yaml"), "--set", f"output_dir={tmp_path}",
            "--set", "name=r"]
    for s in ("data.source=folder", f"data.path={root}", "model.weights=none", "model.image_size=32",
              "model.resize_size=32", "train.epochs=1", "audit.enabled=false",
              "explain.methods=[{name: saliency}]", "explain.select.per_class=1", *extra):
        args += ["--set", s]
    return args


def table(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def one_error(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, res.stderr
    return errors[0]


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def write_bad_files(folder: Path, masks: Path) -> None:
    rng = np.random.default_rng(1)
    rgb = Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "zero.jpg": b"",
        "truncated.jpg": encoded(rgb, "JPEG", quality=90)[:200],
        "text.jpg": b"name,label\ncat.jpg,0\n",
        "page.jpg": b"<!DOCTYPE html><html><body>404 Not Found</body></html>",
        "binary.png": bytes(range(7, 200)),
        "nan.tif": encoded(Image.fromarray(np.full((16, 16), np.nan, np.float32)), "TIFF"),
        "huge.png": encoded(Image.new("RGB", (120, 100), (9, 9, 9)), "PNG"),
        "notes.txt": b"collected in June",
        "masked.png": encoded(rgb, "PNG"),
        "png_named.jpg": encoded(rgb, "PNG"),
        "grey16.png": encoded(Image.fromarray((np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)), "PNG"),
        "grey.png": encoded(rgb.convert("L"), "PNG"),
        "rgba.png": encoded(rgb.convert("RGBA"), "PNG"),
        "cmyk.jpg": encoded(rgb.convert("CMYK"), "JPEG", quality=95),
        "one_pixel.png": encoded(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"),
    }
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    files["palette.png"] = encoded(palette, "PNG", transparency=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90°: stored 16×24, shown 24×16
    files["exif.jpg"] = encoded(Image.fromarray(rng.integers(0, 255, (24, 16, 3), dtype=np.uint8)),
                                "JPEG", exif=exif, quality=95)
    frames = [Image.new("P", (16, 16), i) for i in range(3)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=50)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    write_png(masks / "masked.png", np.zeros((10, 10), np.uint8))  # the image is 16×16


@pytest.fixture(scope="module")
def messy_run(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("messy")
    rng = np.random.default_rng(0)
    root = tmp / "imgs"
    for label, cls in enumerate(CLASSES):
        for i in range(5):
            write_png(root / "train" / cls / f"{i}.png", class_image(label, rng, 16))
        for i in range(2):
            write_png(root / "test" / cls / f"{i}.png", class_image(label, rng, 16))
    odd = root / "test" / CLASSES[0]
    write_bad_files(odd, tmp / "masks" / "test" / CLASSES[0])
    shutil.copy(root / "train" / CLASSES[1] / "0.png", odd / "dup.png")  # leaks into test
    res = xaudit(*run_args(tmp, root, f"data.max_image_pixels={MAX_PIXELS}", f"data.masks={tmp / 'masks'}"),
                 cwd=tmp)
    return tmp / "r", odd, res


def test_every_refused_file_has_its_reason_in_skipped_csv(messy_run):
    run, _, res = messy_run
    assert res.returncode == 0, res.stderr
    skipped = {Path(r["file"]).name: r["reason"] for r in table(run / "tables" / "skipped.csv")}
    assert skipped == REFUSED


def test_every_odd_but_valid_file_is_used(messy_run):
    run, _, res = messy_run
    assert res.returncode == 0, res.stderr
    predicted = {r["id"] for r in table(run / "tables" / "predictions.csv")}
    for name in ACCEPTED:
        assert f"test/{CLASSES[0]}/{name}" in predicted, name
    assert not {f"test/{CLASSES[0]}/{name}" for name in REFUSED} & predicted


def test_the_rest_of_the_run_is_complete(messy_run):
    run, _, res = messy_run
    assert res.returncode == 0, res.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    assert set(manifest["stages"]) == {"train", "evaluate", "explain", "audit", "report"}
    summary = json.loads((run / "summary.json").read_text())
    n_test = 2 * len(CLASSES) + len(ACCEPTED)
    assert summary["test"]["n"] == n_test == len(table(run / "tables" / "predictions.csv"))
    assert 0 <= summary["test"]["accuracy"] <= 1
    assert summary["dataset"]["skipped"] == len(REFUSED)
    assert summary["dataset"]["classes"] == sorted(CLASSES)
    # the same image in train and test: warned before training, and recorded
    assert "1 image pair(s) appear in two splits" in res.stderr
    assert summary["dataset"]["info"]["leakage"]["pairs"] == 1
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "&lt;em&gt;spot" in html and "<em>spot" not in html
    assert "rostfleck 猫" in html
    for f in (run / "figures").iterdir():
        assert not set(f.name) & set("<>/ "), f.name


def one_class(root: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(4):
        write_png(root / "only" / f"{i}.png", class_image(0, rng, 16))


def all_bad(root: Path) -> None:
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            (root / cls / f"{i}.jpg").write_bytes(b"")


def two_classes(root: Path) -> None:
    rng = np.random.default_rng(0)
    for label, cls in enumerate(["a", "b"]):
        for i in range(4):
            write_png(root / cls / f"{i}.png", class_image(label, rng, 16))


@pytest.mark.parametrize(
    "make, extra, message",
    [
        (one_class, [], "imgs: found 1 class (only); a classifier needs at least 2 classes"),
        (all_bad, [], "no usable images left in the train split (see skipped.csv for the reasons)"),
        (two_classes, ["data.classes=[a, zebra]"], "data.classes: ['zebra'] not found. Classes present: a, b"),
        (two_classes, ["train.epochs=0"], "train.epochs: must be in [1, 10000], got 0"),
        (two_classes, ["data.max_image_pixels=-5"], "data.max_image_pixels: must be at least 1, got -5"),
    ],
    ids=["one class", "every image bad", "unknown class asked for", "out of range", "negative limit"],
)
def test_a_problem_that_stops_the_run_is_one_line(tmp_path, make, extra, message):
    root = tmp_path / "imgs"
    make(root)
    line = one_error(xaudit(*run_args(tmp_path, root, *extra), cwd=tmp_path))
    assert line == f"error: {message}"
