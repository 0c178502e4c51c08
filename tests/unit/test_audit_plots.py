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
    plots.plot_shortcut(tmp_path / "s.png", ["x", "y"], regions, share, share + 0.1, flagged, "t")
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
