"""Audit figures say what they mean: distinct colours, readable cell text, error bars, no
colliding axis labels. Each test inspects the matplotlib figure the plot function saves."""

from __future__ import annotations

import matplotlib.colors as mcolors
import numpy as np
import pytest

from xaudit.audit import plots


@pytest.fixture
def saved(monkeypatch, tmp_path):
    """Capture the figure instead of writing it; returns the list of captured figures."""
    figs = []

    def keep(fig, path):
        figs.append(fig)
        return str(path)

    monkeypatch.setattr(plots, "_save", keep)
    return figs


def test_similarity_matrix_sequential_when_nothing_is_negative(saved, tmp_path):
    plots.plot_similarity_matrix(tmp_path / "a.png", ["a", "b"], np.array([[1, 0.9], [0.9, 1]]), "t")
    plots.plot_similarity_matrix(tmp_path / "b.png", ["a", "b"], np.array([[1, -0.4], [-0.4, 1]]), "t")
    positive, signed = (f.axes[0].images[0] for f in saved)
    assert positive.cmap.name == "viridis" and positive.norm.vmin == 0
    assert signed.cmap.name == "RdBu_r" and signed.norm.vmin == -1


def test_similarity_matrix_text_contrasts_with_its_cell(saved, tmp_path):
    matrix = np.array([[1.0, 0.0], [0.0, 1.0]])  # viridis: 1 is light yellow, 0 dark purple
    plots.plot_similarity_matrix(tmp_path / "a.png", ["a", "b"], matrix, "t")
    colours = {t.get_text(): t.get_color() for t in saved[0].axes[0].texts}
    assert colours["1.00"] == "black" and colours["0.00"] == "white"


def test_shortcut_bars_one_colour_per_region_and_flags_hatched(saved, tmp_path):
    regions = [f"r{i}" for i in range(6)]
    share = np.full((2, 6), 0.1)
    flagged = np.zeros((2, 6), bool)
    flagged[1, 4] = True
    plots.plot_shortcut(tmp_path / "s.png", ["x", "y"], regions, {"m": (share, share + 0.1, flagged)}, "t")
    bars = saved[0].axes[0].patches
    assert len(bars) == 12
    faces = {mcolors.to_hex(b.get_facecolor()[:3]) for b in bars}
    assert len(faces) == 6  # six regions, six colours
    assert mcolors.to_hex("C3") not in faces  # red stays for flags
    hatched = [b for b in bars if b.get_hatch()]
    assert len(hatched) == 1 and abs(hatched[0].get_x() + hatched[0].get_width() / 2 - (1 + 4 * 0.8 / 6)) < 1e-9


def test_convergence_log_axis_shows_only_our_ticks(saved, tmp_path):
    steps = [8, 16, 32, 64, 128]
    plots.plot_convergence(tmp_path / "c.png", steps, {"riemann": [0.5, 0.2, 0.1, 0.05, 0.02]},
                           {"riemann": [0.8, 0.9, 0.95, 0.99, 1.0]}, 0.05, "t")
    fig = saved[0]
    fig.canvas.draw()
    for ax in fig.axes:
        minor = [t.get_text() for t in ax.get_xminorticklabels() if t.get_text()]
        assert minor == []
        assert [t.get_text() for t in ax.get_xticklabels()] == [str(s) for s in steps]


def test_group_bars_carry_intervals_and_n(saved, tmp_path):
    groups = {"correct": [(0.5, 0.4, 0.6, 10)], "incorrect": [(0.3, 0.1, 0.5, 2)]}
    plots.plot_group_bars(tmp_path / "g.png", ["gini"], groups, "t")
    ax = saved[0].axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["correct (n = 10)", "incorrect (n = 2)"]
    caps = [c for c in ax.containers if hasattr(c, "errorbar") and c.errorbar is not None]
    segments = [seg for c in caps for seg in c.errorbar.lines[2][0].get_segments()]
    spans = sorted(round(float(seg[1][1] - seg[0][1]), 6) for seg in segments)
    assert spans == [0.2, 0.4]


def test_many_curves_get_distinct_styles_and_one_legend_outside(saved, tmp_path):
    xs = np.linspace(0, 1, 11)
    curves = {f"method_{i}": np.linspace(1, 0, 11) * (1 - i / 40) for i in range(24)}
    curves.update({f"control: c{i}": np.full(11, 0.5) for i in range(5)})
    plots.plot_curves(tmp_path / "c.png", [("a", "x", xs, curves), ("b", "x", xs, curves)], "t")
    fig = saved[0]
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    assert len(fig.legends[0].get_texts()) == 29
    lines = {line.get_label(): line for line in fig.axes[0].lines}
    styles = {(mcolors.to_hex(line.get_color()), line.get_linestyle())
              for label, line in lines.items() if not label.startswith("control:")}
    assert len(styles) == 24  # no two methods drawn alike
    assert {mcolors.to_hex(lines[f"control: c{i}"].get_color()) for i in range(5)} == {"#8c8c8c"}
    few = {k: curves[k] for k in list(curves)[:5]}
    plots.plot_curves(tmp_path / "d.png", [("a", "x", xs, few)], "t")
    assert saved[1].axes[0].get_legend() is None and len(saved[1].legends) == 1


def test_many_methods_wrap_overlays_and_bars_into_rows(saved, tmp_path):
    images, masks = np.zeros((2, 8, 8, 3)), np.ones((2, 8, 8), dtype=bool)
    maps = {f"m{i}": np.random.default_rng(i).normal(size=(2, 8, 8)) for i in range(25)}
    plots.plot_overlays(tmp_path / "o.png", images, masks, maps, "t")
    rows, cols = saved[0].axes[0].get_subplotspec().get_gridspec().get_geometry()
    assert cols == 1 + plots._OVERLAY_METHODS_PER_ROW and rows == 2 * 3  # 2 images x 3 blocks
    titled = sorted(ax.get_title() for ax in saved[0].axes if ax.get_title())
    assert titled == sorted(list(maps) * 2)  # each method once per image
    labels = [f"m{i}" for i in range(40)]
    groups = {"correct": [(0.5, 0.4, 0.6, 4)] * 40, "incorrect": [(0.3, 0.1, 0.9, 2)] * 40}
    plots.plot_group_bars(tmp_path / "b.png", labels, groups, "t")
    axes = saved[1].axes
    assert len(axes) == 3 and sum(len(ax.get_xticklabels()) for ax in axes) == 40
    assert len({ax.get_xlim() for ax in axes}) == 1  # every row on one scale


def _every_figure(tmp_path):
    xs, steps = np.linspace(0, 1, 11), ["fc", "layer4", "all"]
    few = {f"m{i}": np.linspace(1, 0, 11) * (1 - i / 10) for i in range(4)}
    plots.plot_curves(tmp_path / "c.png", [("a", "x", xs, few), ("b", "x", xs, few)], "t")
    plots.plot_convergence(tmp_path / "v.png", [8, 16], {"riemann": [0.2, 0.1]},
                           {"riemann": [0.9, 1.0]}, 0.05, "t")
    plots.plot_randomization(tmp_path / "r.png", steps, {
        m: ({"spearman_abs": [0.9, 0.5, 0.2], "ssim": [0.8, 0.4, 0.1]}, {"spearman_abs": 0.1},
            {0: 0.55, 2: 0.1}) for m in ("a", "b", "c", "d", "e")}, "t")
    plots.plot_shortcut(tmp_path / "s.png", ["x", "y"], ["r0", "r1"], {
        m: (np.full((2, 2), 0.3), np.full((2, 2), 0.5), np.zeros((2, 2), bool)) for m in "abcd"}, "t")
    plots.plot_group_bars(tmp_path / "g.png", ["gini"], {"correct": [(0.5, 0.4, 0.6, 10)]}, "t")


def test_no_text_under_8_pt_and_no_legend_on_the_data(saved, tmp_path):
    _every_figure(tmp_path)
    for fig in saved:
        fig.canvas.draw()
        texts = [t for t in fig.findobj(lambda a: hasattr(a, "get_fontsize") and hasattr(a, "get_text"))
                 if t.get_text()]
        assert texts and min(t.get_fontsize() for t in texts) >= plots.SMALL
        renderer = fig.canvas.get_renderer()
        legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
        assert legends
        for legend in legends:
            box = legend.get_window_extent(renderer)
            for ax in fig.axes:
                if ax.axison:
                    assert not box.overlaps(ax.get_window_extent(renderer)), ax.get_title()


def test_randomization_is_one_figure_of_every_method(saved, tmp_path):
    _every_figure(tmp_path)
    fig = saved[2]
    assert sorted(ax.get_title() for ax in fig.axes if ax.axison) == ["a", "b", "c", "d", "e"]
    ruled = [line for line in fig.axes[0].lines if line.get_label() == "spearman_abs (ruled)"]
    assert list(ruled[0].get_ydata()) == [0.9, 0.5, 0.2]


def test_four_curve_panels_wrap_into_two_rows_within_the_column(saved, tmp_path):
    xs = np.linspace(0, 1, 11)
    few = {f"m{i}": np.linspace(1, 0, 11) for i in range(3)}
    plots.plot_curves(tmp_path / "f.png", [(t, "x", xs, few) for t in "abcd"], "t")
    fig = saved[0]
    assert fig.get_figwidth() <= 10.5 and len(fig.legends) == 1
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c", "d"]
    assert {ax.get_subplotspec().get_gridspec().get_geometry() for ax in fig.axes} == {(2, 2)}
