"""Report figures of attribution maps: the per-image panel, per-class grids, correct vs
incorrect, and the highest-loss test images with a map. Drawing primitives (scaling,
overlays, colour bars, atomic PNG writing) are in ``figures``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import XauditError
from .figures import (
    MODES,
    SMALL,
    _check_lengths,
    _colorbar,
    _grid,
    _new_figure,
    _note_figure,
    _save,
    _short_lines,
    _show_image,
    draw_overlay,
    loss_title,
    short,
)

# Methods per row of an explanation panel: with more, the panel wraps into blocks of rows, so
# each overlay stays about 200 px wide instead of shrinking to a sliver.
PANEL_METHODS_PER_ROW = 6


def explanation_panel(
    image: np.ndarray, maps: dict[str, np.ndarray], title: str, path, mode: str = "both",
    signed: set[str] | None = None, wrong: bool = False,
) -> Path:
    """One explained image: the original, then one overlay per method (a row per mode);
    more than ``PANEL_METHODS_PER_ROW`` methods wrap into further blocks of rows, each
    starting with the original again.

    ``signed``: the methods whose maps can be negative (default: all); the others' signed
    cell says so instead of repeating |map| on a diverging scale. ``wrong``: a misclassified
    image, marked in the title."""
    if mode not in MODES:
        raise XauditError(f"explanation_panel: mode must be one of {', '.join(MODES)}, got {mode!r}")
    modes = ["signed", "absolute"] if mode == "both" else [mode]
    items = list(maps.items())
    per_row = max(1, min(PANEL_METHODS_PER_ROW, len(items)))
    blocks = [items[i:i + per_row] for i in range(0, len(items), per_row)] or [[]]
    ncols, nrows = 1 + per_row, len(modes) * len(blocks)
    fig = _new_figure(ncols, nrows, 2.5, 2.35)
    fig.suptitle(short(("WRONG PREDICTION · " if wrong else "") + title, 110, 2), fontsize=10,
                 color="#8a1c1c" if wrong else "black")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for b, block in enumerate(blocks):
        top = b * len(modes)
        _show_image(axes[top, 0], image, "original")
        for r in range(top + 1, top + len(modes)):
            axes[r, 0].set_axis_off()
        for k, m in enumerate(modes):
            row = axes[top + k]
            for c, (label, attr) in enumerate(block, start=1):
                ax = row[c]
                if k == 0:
                    ax.set_title(short(label, 26), fontsize=8)
                if c == 1:
                    ax.set_ylabel(m, fontsize=8)
                if m == "signed" and signed is not None and label not in signed and len(modes) > 1:
                    _show_image(ax, image)
                    ax.text(0.5, 0.5, "never negative:\n|map| below", transform=ax.transAxes,
                            ha="center", va="center", fontsize=8, color="#333",
                            bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "#999", "pad": 3})
                    continue
                mappable, _ = draw_overlay(ax, image, attr, m)
                _colorbar(fig, mappable, ax, m)
            for ax in row[1 + len(block):]:
                ax.set_axis_off()
    return _save(fig, path)
def method_grid(
    images: list[np.ndarray],
    maps: list[np.ndarray],
    titles: list[str],
    path,
    mode: str = "absolute",
    ncols: int = 6,
) -> Path:
    """Overlays of one method on many images, with one shared (relative) colour bar."""
    if mode not in ("signed", "absolute"):
        raise XauditError(f"method_grid: mode must be 'signed' or 'absolute', got {mode!r}")
    _check_lengths("method_grid", images=images, maps=maps, titles=titles)
    if not images:
        return _note_figure("no explained images", path)
    nrows, ncols = _grid(len(images), ncols)
    fig = _new_figure(ncols, nrows, 2.1, 2.35)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    mappable = None
    for ax, image, attr, title in zip(axes.ravel(), images, maps, titles, strict=False):
        mappable, _ = draw_overlay(ax, image, attr, mode)
        ax.set_title(_short_lines(title, 24, 2), fontsize=SMALL)
    for ax in axes.ravel()[len(images):]:
        ax.set_axis_off()
    _colorbar(fig, mappable, axes, mode)
    return _save(fig, path)


def correct_vs_incorrect(
    correct: list[tuple[np.ndarray, np.ndarray, str]],
    incorrect: list[tuple[np.ndarray, np.ndarray, str]],
    method: str,
    path,
) -> Path:
    """Two blocks side by side: where the method says the model looked when right and when wrong.

    Each item is (image, map, title); each block shows the image and its |attribution| overlay.
    """
    nrows = max(len(correct), len(incorrect), 1)
    fig = _new_figure(4, nrows, 2.3, 2.3)
    fig.suptitle(f"{short(method, 40, 1)}: correct vs incorrect predictions", fontsize=10)
    left, right = fig.subfigures(1, 2, wspace=0.04)
    mode = "absolute"
    mappable = None
    for sub, items, label in ((left, correct, "correct"), (right, incorrect, "incorrect")):
        sub.set_facecolor("#f3f8f3" if label == "correct" else "#fbf1f1")
        sub.suptitle(f"{label} ({len(items)})", fontsize=10,
                     color="#1d6b2a" if label == "correct" else "#8a1c1c")
        axes = sub.subplots(nrows, 2, squeeze=False)
        for r in range(nrows):
            if r < len(items):
                image, attr, title = items[r]
                _show_image(axes[r, 0], image)
                axes[r, 0].set_ylabel(_short_lines(title, 20, 2), fontsize=SMALL)
                mappable, _ = draw_overlay(axes[r, 1], image, attr, mode)
            else:
                axes[r, 0].set_axis_off()
                axes[r, 1].set_axis_off()
        if not items:
            axes[0, 0].text(0.5, 0.5, f"no {label} examples", transform=axes[0, 0].transAxes,
                            ha="center", va="center", fontsize=9, color="#555")
        elif mappable is not None:
            _colorbar(sub, mappable, axes[:, 1], mode)
    return _save(fig, path)


def top_losses_maps(images: list[np.ndarray], maps: list[np.ndarray], rows: list[dict],
                    method: str, path) -> Path:
    """The highest-loss test images, each above ``method``'s map of the class it was
    predicted as: what the model took for that class (label errors, backgrounds, shortcuts)."""
    _check_lengths("top_losses_maps", images=images, maps=maps, rows=rows)
    if not images:
        return _note_figure("no test images", path)
    blocks, ncols = _grid(len(images), 6)
    fig = _new_figure(ncols, 2 * blocks, 2.2, 2.5)
    fig.suptitle(f"{short(method, 40, 1)}: map of the predicted class", fontsize=10)
    axes = fig.subplots(2 * blocks, ncols, squeeze=False)
    mappable = None
    for i, (image, attr, row) in enumerate(zip(images, maps, rows, strict=True)):
        top, bottom = axes[2 * (i // ncols), i % ncols], axes[2 * (i // ncols) + 1, i % ncols]
        _show_image(top, image, loss_title(row))
        mappable, _ = draw_overlay(bottom, image, attr, "absolute")
    for i in range(len(images), blocks * ncols):
        axes[2 * (i // ncols), i % ncols].set_axis_off()
        axes[2 * (i // ncols) + 1, i % ncols].set_axis_off()
    _colorbar(fig, mappable, axes, "absolute")
    return _save(fig, path)
