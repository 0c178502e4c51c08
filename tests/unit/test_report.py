"""Report stage: heat-map scaling, figures, and the self-contained HTML report."""

from __future__ import annotations

import base64
import hashlib
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from xaudit.errors import XauditError
from xaudit.report import figures as F
from xaudit.report import map_figures as M
from xaudit.report import render_report
from xaudit.report.captions import display_width
from xaudit.report.html import build_context, csv_table, fmt_number
from xaudit.run import write_csv, write_json

XSS = "<img src=x onerror=alert(1)>"
XSS_ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"
HARD_TITLE = "Tomato___Spider_mites Two-spotted_spider_mite " * 3 + "日本語 $x^ ünïcødé\n\t" + XSS


@pytest.fixture
def strict_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def _image(seed: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _map(seed: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(size, size))


def _png_size(path: Path) -> tuple[int, int]:
    """The size a figure is shown at in the report: drawn at 2x, its pixels halved."""
    with Image.open(path) as im:
        w, h = im.size
    shown = display_width(path.read_bytes())
    assert shown == w // 2, "figures are drawn at 2x and say so in their pHYs"
    return shown, h // 2


# ---------------------------------------------------------------- scale_map ----------------------


def _outlier_map() -> np.ndarray:
    # 201 pixels: p99 of |map| sits exactly on sorted index 198, which is 2.0.
    a = np.full((3, 67), 2.0)
    a[0, 0], a[0, 1], a[0, 2] = -1.0, 50.0, -80.0
    return a


def test_scale_map_signed_clips_at_p99_with_symmetric_limits():
    scaled, note = F.scale_map(_outlier_map(), "signed")
    assert note is None
    assert scaled[0, 0] == pytest.approx(-0.5)  # -1 / 2
    assert scaled[0, 1] == 1.0 and scaled[0, 2] == -1.0  # outliers clipped, same limit both sides
    assert np.all(scaled[1:] == 1.0)


def test_scale_map_absolute_is_magnitude_over_p99():
    scaled, note = F.scale_map(_outlier_map(), "absolute")
    assert note is None
    assert scaled[0, 0] == pytest.approx(0.5)
    assert scaled[0, 2] == 1.0 and scaled.min() >= 0.0


def test_scale_map_matches_numpy_percentile_on_random_maps():
    a = _map(3, 50)
    p = np.percentile(np.abs(a), 99)
    scaled, _ = F.scale_map(a, "signed")
    np.testing.assert_allclose(scaled * p, np.clip(a, -p, p))


@pytest.mark.parametrize(
    "bad, note",
    [(np.zeros((8, 8)), "all zero"), (np.full((8, 8), np.nan), "contains NaN/inf"),
     (np.where(np.eye(8) > 0, np.inf, 1.0), "contains NaN/inf")],
)
def test_scale_map_degenerate_maps_are_blank_with_a_note(bad, note, strict_warnings):
    for mode in ("signed", "absolute"):
        scaled, got = F.scale_map(bad, mode)
        assert got == note
        assert np.array_equal(scaled, np.zeros((8, 8)))


def test_scale_map_sparse_map_falls_back_to_the_maximum():
    a = np.zeros((20, 20))
    a[3, 4] = -0.25  # one pixel in 400: p99 of |a| is 0
    scaled, note = F.scale_map(a, "signed")
    assert note is None and scaled[3, 4] == -1.0 and np.count_nonzero(scaled) == 1


def test_scale_map_rejects_unknown_mode_and_bad_shapes():
    with pytest.raises(XauditError, match="'signed' or 'absolute'"):
        F.scale_map(np.ones((4, 4)), "both")
    with pytest.raises(XauditError, match="H×W heat map"):
        F.scale_map(np.ones((3, 4, 4)))


def test_colorbar_label_states_the_clipping():
    assert "p99" in F.colorbar_label("signed") and "p99" in F.colorbar_label("absolute")


# ---------------------------------------------------------------- drawing ------------------------


@pytest.mark.parametrize("bad, note", [(np.zeros((32, 32)), "all zero"),
                                       (np.full((32, 32), np.nan), "contains NaN/inf")])
def test_draw_overlay_writes_the_note_and_draws_no_heat_map(bad, note, strict_warnings):
    ax = Figure().subplots()
    _, got = F.draw_overlay(ax, _image(0), bad, "signed")
    assert got == note
    assert [t.get_text() for t in ax.texts] == [note]
    assert len(ax.images) == 1  # only the greyed image


def test_draw_overlay_normal_map_has_overlay_and_no_note():
    ax = Figure().subplots()
    _, note = F.draw_overlay(ax, _image(0), _map(0), "absolute")
    assert note is None and len(ax.texts) == 0 and len(ax.images) == 2


def test_short_wraps_and_truncates():
    assert F.short("a" * 60, width=20, lines=2) == "a" * 20 + "\n" + "a" * 19 + "…"
    assert F.short("healthy") == "healthy"


def test_safe_text_escapes_mathtext_and_drops_control_characters():
    assert F.safe_text("a$b\x00c") == r"a\$bc"
    assert "\n" not in F.safe_text("x\ny")


def test_as_rgb_accepts_grey_float_and_rgba():
    assert F.as_rgb(np.ones((4, 5))).tolist() == np.full((4, 5, 3), 255).tolist()
    assert F.as_rgb(np.zeros((4, 5, 4), dtype=np.uint8)).shape == (4, 5, 3)
    with pytest.raises(XauditError, match="H×W×3"):
        F.as_rgb(np.zeros((4, 5, 2)))


# ---------------------------------------------------------------- figures ------------------------


def test_explanation_panel_with_degenerate_maps_and_hard_titles(tmp_path, strict_warnings):
    maps = {"integrated_gradients": _map(1), "zero": np.zeros((32, 32)),
            "nan": np.full((32, 32), np.nan), HARD_TITLE: _map(2)}
    for mode in ("signed", "absolute", "both"):
        out = M.explanation_panel(_image(1), maps, HARD_TITLE, tmp_path / f"p_{mode}.png", mode)
        assert out == tmp_path / f"p_{mode}.png"
        assert _png_size(out)[0] <= 1050
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files


def test_a_never_negative_method_gets_no_signed_overlay(tmp_path, monkeypatch):
    drawn = []
    real = M.draw_overlay
    monkeypatch.setattr(M, "draw_overlay", lambda ax, image, attr, mode: drawn.append(mode) or
                        real(ax, image, attr, mode))
    maps = {"integrated_gradients": _map(1) - 0.5, "grad_cam": np.abs(_map(2))}
    M.explanation_panel(_image(1), maps, "t", tmp_path / "p.png", "both",
                        signed={"integrated_gradients"}, wrong=True)
    # IG signed and absolute; Grad-CAM absolute only: its signed cell is a note
    assert sorted(drawn) == ["absolute", "absolute", "signed"]
    drawn.clear()
    M.explanation_panel(_image(1), maps, "t", tmp_path / "q.png", "both")
    assert len(drawn) == 4  # unknown: every method may be signed


def test_wide_panels_stay_within_the_column(tmp_path):
    maps = {f"method_{i}": _map(i) for i in range(10)}
    w, _ = _png_size(M.explanation_panel(_image(0), maps, "t", tmp_path / "wide.png"))
    assert 900 < w <= 1050


def test_many_methods_wrap_into_blocks_of_rows(tmp_path, monkeypatch):
    grids, real = [], M.draw_overlay
    monkeypatch.setattr(M, "draw_overlay", lambda ax, image, attr, mode: grids.append(
        (ax.get_subplotspec().get_gridspec().get_geometry(), ax.get_title(), mode))
        or real(ax, image, attr, mode))
    maps = {f"method_{i}": _map(i) for i in range(23)}
    w, h = _png_size(M.explanation_panel(_image(0), maps, "t", tmp_path / "many.png"))
    per_row = M.PANEL_METHODS_PER_ROW
    blocks = -(-23 // per_row)
    assert {g for g, _, _ in grids} == {(2 * blocks, 1 + per_row)}  # signed + absolute per block
    assert sorted(t for _, t, m in grids if m == "signed") == sorted(maps)  # every method, once
    assert w <= 1050 and w / (1 + per_row) >= 140  # overlays stay readable
    _, h_few = _png_size(M.explanation_panel(_image(0), dict(list(maps.items())[:5]), "t",
                                             tmp_path / "few.png"))
    assert h > 3 * h_few


def test_top_losses_maps_draws_one_overlay_per_image(tmp_path, monkeypatch):
    drawn, real = [], M.draw_overlay
    monkeypatch.setattr(M, "draw_overlay", lambda ax, image, attr, mode: drawn.append(mode)
                        or real(ax, image, attr, mode))
    rows = [{"true": "a", "pred": "b", "loss": 3.0 - i, "prob": 0.9} for i in range(8)]
    out = M.top_losses_maps([_image(i) for i in range(8)], [_map(i) for i in range(8)], rows,
                            "grad_cam", tmp_path / "tl.png")
    assert drawn == ["absolute"] * 8 and _png_size(out)[0] <= 1400
    with pytest.raises(XauditError, match="same length"):
        M.top_losses_maps([_image(0)], [], rows[:1], "grad_cam", tmp_path / "bad.png")


def test_every_figure_function_writes_a_png(tmp_path, strict_warnings):
    imgs = [_image(i) for i in range(7)]
    names = ["healthy", "bean_rust", HARD_TITLE, XSS, "a", "b", "c"]
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": None if e == 1 else 1.2 / e,
                "train_acc": 1 - 0.5 / e, "val_acc": None} for e in range(1, 6)]
    cm = np.array([[5, 1, 0], [0, 0, 0], [2, 0, 7]])  # an empty row must not divide by zero
    outs = [
        F.dataset_examples(imgs, names, tmp_path / "dataset_examples.png"),
        F.training_history(history, tmp_path / "history.png"),
        F.training_history(history, tmp_path / "history_best.png", best_epoch=3),
        F.confusion_matrix(cm, names[:3], tmp_path / "confusion_matrix.png"),
        F.top_losses(imgs[:3], [{"true": n, "pred": "x", "loss": 2.5, "prob": 0.8}
                                for n in names[:3]], tmp_path / "top_losses.png"),
        M.method_grid(imgs, [_map(i) for i in range(6)] + [np.zeros((32, 32))], names,
                      tmp_path / "grid.png", ncols=4),
        M.correct_vs_incorrect([(imgs[0], _map(0), names[2])], [], "grad_cam",
                               tmp_path / "cvi.png"),
        F.dataset_examples([], [], tmp_path / "empty.png"),
    ]
    for out in outs:
        assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert _png_size(out)[0] <= 1050


def test_figure_inputs_are_checked():
    with pytest.raises(XauditError, match="same length"):
        M.method_grid([_image(0)], [], ["t"], "unused.png")
    with pytest.raises(XauditError, match="3×3 matrix"):
        F.confusion_matrix(np.ones((2, 2)), ["a", "b", "c"], "unused.png")
    with pytest.raises(XauditError, match="mode must be one of"):
        M.explanation_panel(_image(0), {}, "t", "unused.png", mode="raw")


# ---------------------------------------------------------------- html report --------------------


SUMMARY = {
    "name": "demo",
    "created": "2026-11-22T03:00:00Z",
    "seed": 7,
    "versions": {"xaudit": "0.1.0", "python": "3.11.7", "torch": "2.15.0",
                 "torchvision": "0.29.0", "captum": "0.9.0"},
    "dataset": {"name": "synthetic bean leaves", "source": "synthetic",
                "classes": ["healthy", "angular_leaf_spot", XSS],
                "n": {"train": 6, "val": 3, "test": 3},
                "per_class": {"train": {"healthy": 2, "angular_leaf_spot": 2, XSS: 2},
                              "val": {"healthy": 1, "angular_leaf_spot": 1, XSS: 1},
                              "test": {"healthy": 1, "angular_leaf_spot": 1, XSS: 1}},
                "skipped": 1, "has_masks": True},
    "model": {"name": "mobilenet_v2", "weights": "imagenet", "mode": "frozen",
              "trainable_params": 3843, "total_params": 2227715, "image_size": 224},
    "train": {"epochs_run": 5, "best_epoch": 4, "best_val_accuracy": 0.95, "seconds": 20.1},
    "test": {"accuracy": 0.9417, "n": 120, "loss": 0.2, "macro_f1": 0.9391},
    "explanations": {
        "occlusion": {"n_images": 3, "seconds": 1.5, "model_evals": 300, "params": {}},
        "occlusion_w15": {"n_images": 3, "seconds": 3.0, "model_evals": 600,
                          "params": {"window": 15}},
    },
    "audits": {"verdict": "Trust occlusion_w15 on this model.", "trusted": ["occlusion_w15"],
               "sections": [{"title": "Randomisation " + XSS, "text": "para one\n\npara two",
                             "figures": ["audit_random.png", "cvi_x.png"],
                             "tables": ["audit_random"]}]},
}


def _make_run(root: Path, summary: dict | None = None) -> Path:
    write_json(root / "summary.json", SUMMARY if summary is None else summary)
    (root / "recipe.yaml").write_text(f"name: demo\nnote: '{XSS}'\n", encoding="utf-8")
    classes = SUMMARY["dataset"]["classes"]
    write_csv(root / "tables/metrics_per_class.csv",
              [{"class": c, "precision": 0.91234, "recall": 1.0, "support": 1} for c in classes])
    write_csv(root / "tables/most_confused.csv", [{"true": XSS, "pred": "healthy", "count": 4}])
    write_csv(root / "tables/skipped.csv", [{"path": "train/bad.jpg", "reason": "truncated"}])
    write_csv(root / "tables/scorecard.csv", [{"method": "occlusion_w15", "score": 0.5}])
    write_csv(root / "tables/audit_random.csv", [{"method": "occlusion", "spearman": 0.12345}])
    fig = root / "figures"
    imgs = [_image(i, 16) for i in range(3)]
    F.dataset_examples(imgs, classes, fig / "dataset_examples.png")
    F.confusion_matrix(np.eye(3, dtype=int), classes, fig / "confusion_matrix.png")
    M.explanation_panel(imgs[0], {"occlusion": _map(0, 16)}, XSS, fig / "explain_0001.png")
    M.method_grid(imgs, [_map(i, 16) for i in range(3)], classes,
                  fig / "grid_occlusion_w15_healthy.png")
    M.method_grid(imgs, [_map(i, 16) for i in range(3)], classes, fig / "grid_occlusion.png")
    M.correct_vs_incorrect([(imgs[0], _map(0, 16), "a")], [], "occlusion", fig / "cvi_x.png")
    M.method_grid(imgs[:1], [_map(0, 16)], ["a"], fig / "audit_random.png")
    M.method_grid(imgs[:1], [_map(0, 16)], ["a"], fig / "extra.png")
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, str]:
    root = _make_run(tmp_path_factory.mktemp("run"))
    out = render_report(root)
    return root, out.read_text(encoding="utf-8")


def test_report_is_self_contained(report):
    root, html = report
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", html, re.I)
    assert "@import" not in html and "url(" not in html
    # One executable script, allowed by its own hash and nothing else.
    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    assert len(scripts) == 1 and html.lower().count("<script") == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    assert csp == ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
                   f"script-src 'sha256-{digest}'")


def test_every_figure_is_embedded_once(report):
    root, html = report
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    on_disk = sorted(p.read_bytes() for p in (root / "figures").glob("*.png"))
    assert sorted(base64.b64decode(u) for u in uris) == on_disk


def test_report_shows_the_numbers(report):
    _, html = report
    for text in ("94.2%", "0.939", "3,843", "2,227,715", "seed 7", "captum 0.9.0",
                 "Trust occlusion_w15 on this model.", "0.912", "600"):
        assert text in html, text


def test_user_strings_are_escaped(report):
    _, html = report
    assert XSS not in html
    assert "onerror=alert(1)>" not in html
    assert html.count(XSS_ESCAPED) >= 5  # dataset, per class, most confused, audit title, recipe


def test_sections_come_in_order(report):
    _, html = report
    ids = ["answer", "scorecard", "dataset", "model", "training", "test", "explanations", "audits",
           "other", "recipe"]
    positions = [html.index(f'id="{i}"') for i in ids]
    assert positions == sorted(positions)


def test_explanation_figures_are_grouped_by_the_longest_method_label(report):
    root = report[0]
    ctx = build_context(root)
    groups = {label: [f["name"] for f in figs] for label, figs in ctx["explanations"]["methods"]}
    assert groups == {"occlusion": ["grid_occlusion.png"],
                      "occlusion_w15": ["grid_occlusion_w15_healthy.png"]}
    assert ctx["explanations"]["other"] == []  # cvi_x.png is shown by the audit that names it
    assert [f["name"] for f in ctx["other_figures"]] == ["extra.png"]


def test_optional_parts_are_left_out(tmp_path):
    summary = {k: v for k, v in SUMMARY.items() if k not in ("audits", "explanations")}
    root = _make_run(tmp_path, summary)
    for p in (root / "figures").glob("*"):
        p.unlink()
    html = render_report(root).read_text(encoding="utf-8")
    assert 'src="data:image' not in html
    assert 'id="scorecard"' not in html and 'id="explanations"' not in html
    assert 'id="top-grid"' not in html and 'id="explorer"' not in html
    assert 'id="audits"' not in html and 'id="test"' in html


def test_missing_summary_names_the_stage(tmp_path):
    (tmp_path / "recipe.yaml").write_text("name: x\n")
    with pytest.raises(XauditError, match=r"no summary.json in .*run `xaudit evaluate .*` first"):
        render_report(tmp_path)


def test_missing_recipe_and_tables_are_named(tmp_path):
    with pytest.raises(XauditError, match="no recipe.yaml"):
        render_report(tmp_path)
    root = _make_run(tmp_path)
    (root / "tables/metrics_per_class.csv").unlink()
    with pytest.raises(XauditError, match=r"tables/metrics_per_class.csv.*xaudit evaluate"):
        render_report(root)


def test_missing_or_unsafe_audit_files_are_refused(tmp_path):
    root = _make_run(tmp_path)
    (root / "figures/audit_random.png").unlink()
    with pytest.raises(XauditError, match=r"figures/audit_random.png.*xaudit audit"):
        render_report(root)
    bad = dict(SUMMARY, audits={"sections": [{"title": "t", "tables": ["../../etc/passwd"]}]})
    write_json(root / "summary.json", bad)
    with pytest.raises(XauditError, match="plain file name"):
        render_report(root)


def test_table_cells_keep_names_and_format_numbers():
    table = csv_table([{"class": "1.50", "id": "007", "f1": "0.912345", "n": "12"}] * 3, limit=2)
    assert table["rows"][0] == ["1.50", "007", "0.912", "12"]
    assert table["more"] == 1
    assert table["numeric"] == [False, False, True, True]  # names stay left-aligned
    assert fmt_number(2227715) == "2,227,715" and fmt_number(True) == "yes"
    assert fmt_number(1.5e-5) == "1.50e-05"


def test_every_figure_the_pipeline_writes_has_a_caption(report):
    from xaudit.report.captions import caption_of

    src = Path(__file__).resolve().parents[2] / "src" / "xaudit"
    names = set()
    for path in [*(src / "audit").glob("*.py"), *(src / "stages").glob("*.py"), src / "pipeline.py"]:
        names |= set(re.findall(r'figure\(f?"([a-z_]+)', path.read_text()))
        names |= set(re.findall(r'figures_dir / f?"([a-z_]+)', path.read_text()))
    assert {"confusion_matrix", "audit_localization", "audit_convergence_", "explain_"} <= names
    assert [n for n in names if not caption_of(n)] == []
    assert caption_of("extra.png") == ""
    _, html = report
    assert caption_of("confusion_matrix.png") in html.replace("&#39;", "'")


def _known_truth_section(html: str) -> str:
    start = html.index('<section id="known-truth">')
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html[start:html.index("</section>", start)]))


def test_known_truth_shows_each_method_beside_its_verdict_and_the_best_control(tmp_path):
    entry = {"score": 0.25, "ci": [-0.1, 0.6], "n": 5}
    truth = {"mass": "|attribution|", "max_lesions": 8, "min_lesions": 3, "images": 5,
             "methods": {"occlusion_w15": {"score": 0.81234, "ci": [0.7, 0.9], "n": 5,
                                           "minus_best_control": 0.3, "diff_ci": [0.1, 0.5],
                                           "beats_best_control": "yes"},
                         XSS: {**entry, "beats_best_control": "no"}},
             "controls": {"control: constant": {"score": 0.5, "ci": [0.2, 0.8], "n": 5},
                          "control: random": entry},
             "best_control": "control: constant", "best_control_score": 0.5}
    audits = {**SUMMARY["audits"], "states": {"occlusion_w15": "trusted",
                                              "control: constant": "do not trust"}}
    root = _make_run(tmp_path, {**SUMMARY, "audits": audits, "known_truth": truth})
    html = render_report(root).read_text(encoding="utf-8")
    text = _known_truth_section(html)
    assert "Known truth (synthetic data)" in text and 'href="#known-truth"' in html
    assert "occlusion_w15 0.812 [0.700, 0.900] 5 yes trusted" in text
    assert "control: constant (best control) 0.500 [0.200, 0.800] 5 – do not trust" in text
    assert "no better than a map that ignores the model should not be trusted" in text
    assert "Other controls: random 0.250" in text
    assert XSS not in html and "0.250 [-0.100, 0.600] 5 no –" in text

    skipped = {**SUMMARY, "known_truth": {"skipped": "no explained image has a leaf with at least 3 lesions"}}
    html = render_report(_make_run(tmp_path, skipped)).read_text(encoding="utf-8")
    assert "Not scored: no explained image has a leaf" in _known_truth_section(html)
    other = {**SUMMARY, "dataset": {**SUMMARY["dataset"], "source": "folder"},
             "known_truth": {"skipped": "data.source is folder, not synthetic"}}
    assert 'id="known-truth"' not in render_report(_make_run(tmp_path, other)).read_text(encoding="utf-8")
