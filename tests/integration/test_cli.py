"""End to end through the real CLI on a tiny synthetic set; numbers are read back and checked."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import class_image, write_png
from tests.helpers.cli_runs import ROOT, cli, needs_offline, table

TINY = [
    "data.synthetic.n_train=6", "data.synthetic.n_val=2", "data.synthetic.n_test=3",
    "data.synthetic.image_size=64", "model.image_size=64", "model.resize_size=64",
    "train.epochs=2", "train.batch_size=8", "explain.select.per_class=1", "audit.enabled=false",
    "explain.methods=[{name: saliency}, {name: integrated_gradients, n_steps: 4}, {name: grad_cam}, "
    "{name: occlusion, window: 16, stride: 16}]",
]


@pytest.mark.heavy
@needs_offline
def test_run_tiny_synthetic_end_to_end(tmp_path):
    args = ["run", str(ROOT / "configs" / "demo.yaml"), "--set", "name=tiny", "--set", f"output_dir={tmp_path}"]
    for s in TINY:
        args += ["--set", s]
    res = cli(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    run = tmp_path / "tiny"
    summary = json.loads((run / "summary.json").read_text())
    preds = table(run / "tables" / "predictions.csv")
    # numbers read back: test size and accuracy agree with the predictions table
    assert summary["test"]["n"] == len(preds) == 9
    accuracy = sum(int(r["correct"]) for r in preds) / len(preds)
    assert summary["test"]["accuracy"] == pytest.approx(accuracy)
    assert summary["dataset"]["n"] == {"train": 18, "val": 6, "test": 9}
    assert summary["model"]["mode"] == "frozen" and summary["model"]["trainable_params"] == 1280 * 3 + 3
    # frozen mode: the backbone ran once per cached view and validation image, not per epoch
    assert summary["train"]["backbone_passes"] == 2 * 18 + 6
    explained = table(run / "tables" / "explained_images.csv")
    n = len(explained)
    assert n >= 3
    ex = summary["explanations"]
    assert set(ex) == {"saliency", "integrated_gradients", "grad_cam", "occlusion_w16"}
    assert all(v["n_images"] == n for v in ex.values())
    # cost known answers: saliency = one forward per image; IG = n_steps per image, plus f(x)
    # per image for the delta and one forward of the black baseline (the same image for the
    # whole batch) per batch; occlusion at 64 px with 16-px windows, stride 16 = 16 windows
    # + 1 reference per image
    assert ex["saliency"]["model_evals"] == n
    assert ex["integrated_gradients"]["model_evals"] == n * 4 + n + math.ceil(n / 16)
    # Occlusion ran incrementally: + 12 to check the batch's first image (its clean pass,
    # 5 windows, 6 full forwards), + 1 one-off trace of the model's stages
    occ = ex["occlusion_w16"]
    assert occ["path"].startswith("incremental (prefix to features.") and 0 < occ["work_per_window"] < 1
    assert occ["model_evals"] == n * (16 + 1) + 12 + 1
    assert ex["integrated_gradients"]["mean_abs_delta"] >= 0
    html = (run / "report.html").read_text()
    assert f"{100 * summary['test']['accuracy']:.1f}%" in html
    assert "http://" not in html and "https://" not in html
    figures = sorted(p.name for p in (run / "figures").glob("explain_*.png"))
    assert len(figures) == n and html.count("data:image/png;base64") >= n
    # resume: a second identical run keeps every finished stage
    manifest = json.loads((run / "manifest.json").read_text())
    res2 = cli(*args, cwd=tmp_path)
    assert res2.returncode == 0, res2.stderr
    manifest2 = json.loads((run / "manifest.json").read_text())
    for stage in ("train", "evaluate", "explain"):
        assert manifest2["stages"][stage]["finished"] == manifest["stages"][stage]["finished"]
    # a changed explain section re-runs explain but keeps training
    res3 = cli(*args, "--set", "explain.methods=[{name: saliency}]", cwd=tmp_path)
    assert res3.returncode == 0, res3.stderr
    manifest3 = json.loads((run / "manifest.json").read_text())
    assert manifest3["stages"]["train"]["finished"] == manifest["stages"]["train"]["finished"]
    assert manifest3["stages"]["explain"]["finished"] != manifest["stages"]["explain"]["finished"]
    assert set(json.loads((run / "summary.json").read_text())["explanations"]) == {"saliency"}
    # the report re-renders from stored results alone
    (run / "report.html").unlink()
    res4 = cli("report", str(run), cwd=tmp_path)
    assert res4.returncode == 0 and (run / "report.html").is_file()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.name=resnet19"], "unknown model 'resnet19'"),
        (["explain.methods=[{name: integrated_gradient}]"], "unknown explanation method 'integrated_gradient'"),
        (["data.source=foldr"], "unknown data source 'foldr'"),
        (["data.source=folder", "data.path=/nonexistent/leaves"], "folder not found: /nonexistent/leaves"),
        (["train.epochs=zero"], "train.epochs: expected int"),
        (["trian.epochs=1"], "unknown key 'trian'"),
    ],
)
def test_bad_input_gives_one_clear_line(tmp_path, overrides, message):
    args = ["run", str(ROOT / "configs" / "demo.yaml"), "--set", f"output_dir={tmp_path}"]
    for s in overrides:
        args += ["--set", s]
    res = cli(*args, cwd=tmp_path)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], res.stderr


def _folder(tmp_path: Path, empty_class=False, corrupt=False) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for label, cls in enumerate(["a", "b"]):
        for i in range(6):
            write_png(root / cls / f"{i}.png", class_image(label, rng, 16))
    if empty_class:
        (root / "c").mkdir()
    if corrupt:
        (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def _folder_args(tmp_path, root, *extra):
    args = ["run", str(ROOT / "configs" / "demo.yaml"), "--set", f"output_dir={tmp_path}", "--set", "name=f",
            "--set", "data.source=folder", "--set", f"data.path={root}", "--set", "model.weights=none",
            "--set", "model.image_size=32", "--set", "model.resize_size=32", "--set", "train.epochs=1",
            "--set", "audit.enabled=false", "--set", "explain.methods=[{name: saliency}]"]
    for e in extra:
        args += ["--set", e]
    return args


def test_empty_class_is_one_line(tmp_path):
    res = cli(*_folder_args(tmp_path, _folder(tmp_path, empty_class=True)), cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "class 'c' has no images" in res.stderr


@pytest.mark.heavy
def test_corrupt_image_skipped_or_failed_per_policy(tmp_path):
    root = _folder(tmp_path, corrupt=True)
    res = cli(*_folder_args(tmp_path, root, "data.on_bad_image=fail"), cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "broken.jpg" in res.stderr and "on_bad_image: fail" in res.stderr
    res = cli(*_folder_args(tmp_path, root), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    skipped = table(tmp_path / "f" / "skipped.csv") if (tmp_path / "f" / "skipped.csv").exists() else table(
        tmp_path / "f" / "tables" / "skipped.csv")
    assert [Path(r["file"]).name for r in skipped] == ["broken.jpg"]
    summary = json.loads((tmp_path / "f" / "summary.json").read_text())
    assert summary["dataset"]["skipped"] == 1 and sum(summary["dataset"]["n"].values()) == 12


def test_unusable_output_folder_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    args = ["run", str(ROOT / "configs" / "demo.yaml"), "--set", f"output_dir={blocker}",
            "--set", "data.synthetic.n_train=2", "--set", "data.synthetic.n_val=1",
            "--set", "data.synthetic.n_test=1", "--set", "data.synthetic.image_size=32"]
    res = cli(*args, cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "cannot create run folder" in errors[0], res.stderr
    assert blocker.read_text() == "not a folder"  # nothing written was lost


@pytest.mark.heavy
@needs_offline
def test_a_changed_method_setting_recomputes_its_maps(tmp_path):
    """Maps of another setting under the same label (IG with 4, then 32 steps) are never reused."""
    from xaudit.explain.engine import MapStore

    base = ["run", str(ROOT / "configs" / "demo.yaml"), "--set", "name=steps", "--set",
            f"output_dir={tmp_path}"]
    for s in TINY[:-1]:
        base += ["--set", s]
    run = tmp_path / "steps"
    found = {}
    for steps in (4, 32):
        res = cli(*base, "--set", f"explain.methods=[{{name: integrated_gradients, n_steps: {steps}}}]",
                  cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        info = json.loads((run / "summary.json").read_text())["explanations"]["integrated_gradients"]
        found[steps] = (info, MapStore(run / "maps", "integrated_gradients").load()["maps"])
    (coarse, coarse_maps), (fine, fine_maps) = found[4], found[32]
    assert fine["params"]["n_steps"] == 32 and fine["model_evals"] >= 32 * fine["n_images"]
    assert not np.allclose(coarse_maps.numpy(), fine_maps.numpy())
    assert fine["mean_abs_delta"] < coarse["mean_abs_delta"]


def test_a_folder_named_like_a_shipped_recipe_does_not_hide_it(tmp_path):
    (tmp_path / "demo").mkdir()  # e.g. a run folder left in the working directory
    res = cli("run", "demo", "--set", "trian.epochs=1", cwd=tmp_path)
    # The shipped demo recipe was loaded: the error is about the key, not the folder.
    assert res.returncode == 2 and "unknown key 'trian'" in res.stderr, res.stderr
    res = cli("run", "nosuchrecipe", cwd=tmp_path)
    assert "is neither a file nor a shipped recipe" in res.stderr, res.stderr
