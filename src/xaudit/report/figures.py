"""Report figures: one function per figure, plain numpy in, one PNG out.

Every function draws on its own ``matplotlib.figure.Figure`` (no pyplot, so no global
figure state and nothing to leak), writes the PNG atomically and returns its path.
Figures are laid out at 100 px per inch, at most 10.5 inches (the report's column) wide, with
no text under 8 pt (11 px), and drawn at 2x (200 dpi): the PNG records it and the report
shows them at their layout size, sharp on a high-density screen.

Heat maps are scaled per map: divided by the 99th percentile of |map| and clipped, so a
few extreme pixels do not wash out the rest. All-zero and non-finite maps are drawn blank
with a note instead of being normalised into noise.
"""

from __future__ import annotations

import io
import math
import textwrap
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image

from ..errors import XauditError
from ..run import atomic_write_bytes

DPI = 200  # 2x of the 100 px per inch the report shows a figure at
MAX_WIDTH_IN = 10.5  # the report's column, 1050 px
SMALL = 8  # the smallest font, in points
PERCENTILE = 99.0
PALETTE_COLOURS = 256
MODES = ("signed", "absolute", "both")
CMAPS = {"signed": "RdBu_r", "absolute": "inferno"}
NOTE_ZERO = "all zero"
NOTE_NONFINITE = "contains NaN/inf"


# ---------------------------------------------------------------- text ---------------------------


@lru_cache(maxsize=1)
def _font_codepoints() -> frozenset[int]:
    """Code points the default font can draw (others would render as boxes with a warning)."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    try:
        font = FT2Font(font_manager.findfont(font_manager.FontProperties()))
        return frozenset(font.get_charmap())
    except Exception:  # font lookup is best effort; fall back to printable ASCII
        return frozenset(range(32, 127))


def safe_text(text: object) -> str:
    """``text`` made safe for matplotlib: no control characters, no mathtext, no missing glyphs."""
    s = unicodedata.normalize("NFC", str(text))
    drawable = _font_codepoints()
    out = []
    for ch in s:
        if ch in "\n\t":
            out.append(" ")
        elif unicodedata.category(ch).startswith("C"):
            continue
        elif ord(ch) not in drawable:
            out.append("?")
        else:
            out.append(ch)
    # "$" starts mathtext; an unbalanced one makes savefig raise.
    return "".join(out).replace("$", r"\$")


def short(text: object, width: int = 28, lines: int = 2) -> str:
    """``text`` wrapped to ``width`` characters, at most ``lines`` lines, ending in "…" if cut."""
    s = " ".join(str(text).split())
    wrapped = textwrap.wrap(s, width=width, break_long_words=True, break_on_hyphens=False)
    if not wrapped:
        return ""
    if len(wrapped) > lines:
        wrapped = wrapped[:lines]
        last = wrapped[-1]
        wrapped[-1] = (last[: width - 1] if len(last) >= width else last) + "…"
    return "\n".join(safe_text(line) for line in wrapped)


def _short_lines(text: object, width: int, lines: int) -> str:
    """Like ``short`` but keeps explicit line breaks (one wrapped block per input line)."""
    return "\n".join(short(part, width, lines) for part in str(text).split("\n"))


# ---------------------------------------------------------------- arrays -------------------------


def as_rgb(image: np.ndarray) -> np.ndarray:
    """An image as H×W×3 uint8 (accepts grey, RGBA and floats in [0, 1])."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise XauditError(f"expected an H×W×3 image, got an array of shape {a.shape}")
    a = a[..., :3]
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
        if a.size and a.max() <= 1.0:
            a = a * 255.0
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return a


def _as_map(attr: np.ndarray) -> np.ndarray:
    a = np.asarray(attr, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise XauditError(f"expected an H×W heat map, got an array of shape {a.shape}")
    return a


def scale_map(
    attr: np.ndarray, mode: str = "signed", percentile: float = PERCENTILE
) -> tuple[np.ndarray, str | None]:
    """Scale a heat map for display; returns (scaled, note).

    ``signed``: attr / p, clipped to [-1, 1]; ``absolute``: |attr| / p, clipped to [0, 1];
    p is the ``percentile``-th percentile of |attr| (the largest |attr| when that is 0, i.e.
    fewer than 1 % of the pixels are non-zero). All-zero and non-finite maps come back as
    zeros with the note ``"all zero"`` / ``"contains NaN/inf"``; otherwise the note is None.
    """
    if mode not in ("signed", "absolute"):
        raise XauditError(f"heat map mode must be 'signed' or 'absolute', got {mode!r}")
    a = _as_map(attr)
    if not np.isfinite(a).all():
        return np.zeros_like(a), NOTE_NONFINITE
    mag = np.abs(a)
    if not mag.any():
        return np.zeros_like(a), NOTE_ZERO
    limit = float(np.percentile(mag, percentile))
    if limit <= 0.0:
        limit = float(mag.max())
    if mode == "signed":
        return np.clip(a / limit, -1.0, 1.0), None
    return np.clip(mag / limit, 0.0, 1.0), None


def _norm(mode: str) -> Normalize:
    return Normalize(-1.0, 1.0) if mode == "signed" else Normalize(0.0, 1.0)


def colorbar_label(mode: str) -> str:
    """Colour bar label: what is shown and where it is clipped (p99 = 99th percentile of |map|)."""
    what = "signed" if mode == "signed" else "|attribution|"
    return f"{what}, clipped at p{PERCENTILE:g} of |map|"


# ---------------------------------------------------------------- drawing ------------------------


def _bare(ax) -> None:
    """No ticks or frame, but keep the y label usable as a row label."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _show_image(ax, image: np.ndarray, title: str | None = None) -> None:
    ax.imshow(as_rgb(image))
    _bare(ax)
    if title:
        ax.set_title(title, fontsize=8)


def draw_overlay(ax, image: np.ndarray, attr: np.ndarray, mode: str = "absolute"):
    """Draw ``attr`` over the full-colour ``image`` on ``ax``; returns (mappable for a colour
    bar, note).

    Opacity grows with |scaled attribution| so weak regions show the image, in its own
    colours, underneath (a darkened grey copy hid the lesions the map should be compared
    with); the hue follows the colour bar. A map with a note is left blank with the note on it.
    """
    rgb = as_rgb(image)
    h, w = rgb.shape[:2]
    extent = (0, w, h, 0)  # the map fills the image even if its resolution differs
    ax.imshow(rgb, extent=extent)
    scaled, note = scale_map(attr, "absolute" if mode == "absolute" else "signed")
    cmap, norm = colormaps[CMAPS[mode]], _norm(mode)
    if note is None:
        alpha = np.clip(0.15 + 0.75 * np.abs(scaled), 0.0, 1.0)
        ax.imshow(scaled, cmap=cmap, norm=norm, alpha=alpha, extent=extent,
                  interpolation="nearest")
    else:
        ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center", fontsize=9,
                color="#8a1c1c", bbox={"facecolor": "white", "edgecolor": "#8a1c1c", "pad": 3})
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    _bare(ax)
    return ScalarMappable(norm=norm, cmap=cmap), note


def _colorbar(fig: Figure, mappable, ax, mode: str) -> None:
    cb = fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.03, shrink=0.85)
    if mode == "signed":
        cb.set_ticks([-1.0, 0.0, 1.0], labels=[f"−p{PERCENTILE:g}", "0", f"+p{PERCENTILE:g}"])
    else:
        cb.set_ticks([0.0, 1.0], labels=["0", f"p{PERCENTILE:g}"])
    cb.ax.tick_params(labelsize=SMALL)
    cb.set_label(colorbar_label(mode), fontsize=SMALL)


def _new_figure(ncols: int, nrows: int, cell_w: float, cell_h: float) -> Figure:
    width = min(MAX_WIDTH_IN, max(2.5, ncols * cell_w))
    scale = width / max(ncols * cell_w, 1e-9)
    height = max(1.5, nrows * cell_h * min(1.0, scale))
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a 256-colour PNG: 3-5x smaller than RGB for photos, no visible banding."""
    path = Path(path)
    raw = io.BytesIO()
    fig.savefig(raw, format="png", dpi=DPI, facecolor="white")
    fig.clear()
    raw.seek(0)
    with Image.open(raw) as im:
        small = im.convert("RGB").quantize(
            PALETTE_COLOURS, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE
        )
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True, dpi=(DPI, DPI))
    atomic_write_bytes(path, out.getvalue())
    return path


def _note_figure(text: str, path: str | Path) -> Path:
    fig = Figure(figsize=(4, 1), dpi=DPI)
    fig.text(0.5, 0.5, safe_text(text), ha="center", va="center", fontsize=10, color="#555")
    return _save(fig, path)


def _check_lengths(what: str, **seqs: Sequence) -> None:
    lengths = {k: len(v) for k, v in seqs.items()}
    if len(set(lengths.values())) > 1:
        got = ", ".join(f"{k}={n}" for k, n in lengths.items())
        raise XauditError(f"{what}: lists must have the same length, got {got}")


def _grid(n: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return math.ceil(n / ncols), ncols


# ---------------------------------------------------------------- figures ------------------------


def dataset_examples(images: list[np.ndarray], titles: list[str], path) -> Path:
    """A grid of example images with their (wrapped) class names."""
    _check_lengths("dataset_examples", images=images, titles=titles)
    if not images:
        return _note_figure("no example images", path)
    nrows, ncols = _grid(len(images), 8)
    fig = _new_figure(ncols, nrows, 1.75, 1.95)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, image, title in zip(axes, images, titles, strict=False):
        _show_image(ax, image, short(title, 22))
    for ax in axes[len(images):]:
        ax.set_axis_off()
    return _save(fig, path)


def _column(history: list[dict], key: str) -> np.ndarray:
    values = [row.get(key) for row in history]
    return np.array([np.nan if v is None or v == "" else float(v) for v in values])


def training_history(history: list[dict], path, best_epoch: int | None = None) -> Path:
    """Loss and accuracy per epoch, train and (where present) validation."""
    if not history:
        return _note_figure("no training history", path)
    epochs = _column(history, "epoch")
    fig = Figure(figsize=(10, 3.4), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, metric, label in ((axes[0], "loss", "loss"), (axes[1], "acc", "accuracy")):
        for split, style in (("train", "-o"), ("val", "-s")):
            y = _column(history, f"{split}_{metric}")
            if np.isfinite(y).any():
                ax.plot(epochs, y, style, markersize=3, label=split)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="#888", linestyle=":", label=f"best epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:  # one legend beside the panels, off the curves
        fig.legend(handles, labels, loc="outside right upper", fontsize=SMALL)
    axes[1].set_ylim(-0.02, 1.02)
    return _save(fig, path)


def confusion_matrix(cm: np.ndarray, classes: list[str], path) -> Path:
    """Counts as numbers, colour by row-normalised rate (the recall of each true class)."""
    cm = np.asarray(cm)
    n = len(classes)
    if cm.shape != (n, n):
        raise XauditError(
            f"confusion_matrix: expected a {n}×{n} matrix for {n} classes, got shape {cm.shape}"
        )
    totals = cm.sum(axis=1, keepdims=True).astype(np.float64)
    rates = np.divide(cm, totals, out=np.zeros(cm.shape, dtype=np.float64), where=totals > 0)
    side = min(MAX_WIDTH_IN, max(4.5, 2.5 + 0.45 * n))
    fig = Figure(figsize=(side, side * 0.85), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    labels = [short(c, 18, 1) for c in classes]
    fontsize = SMALL if n <= 25 else 6 if n <= 40 else 5
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=fontsize)
    ax.set_yticks(range(n), labels, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 25:
        for i in range(n):
            for j in range(n):
                color = "white" if rates[i, j] > 0.5 else "black"
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center",
                        fontsize=fontsize, color=color)
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    cb.set_label("fraction of the true class (row)", fontsize=8)
    return _save(fig, path)


def loss_title(row: dict) -> str:
    """A high-loss image's title: true and predicted class, loss and p(predicted)."""
    return (f"true: {short(row.get('true', '?'), 20, 1)}\n"
            f"pred: {short(row.get('pred', '?'), 20, 1)}\n"
            f"loss {float(row.get('loss', float('nan'))):.2f}, "
            f"p {float(row.get('prob', float('nan'))):.2f}")


def top_losses(images: list[np.ndarray], rows: list[dict], path) -> Path:
    """The test images with the highest loss; title: true, predicted, loss and p(predicted)."""
    _check_lengths("top_losses", images=images, rows=rows)
    if not images:
        return _note_figure("no test images", path)
    nrows, ncols = _grid(len(images), 6)
    fig = _new_figure(ncols, nrows, 2.2, 2.7)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, image, row in zip(axes, images, rows, strict=False):
        _show_image(ax, image, loss_title(row))
    for ax in axes[len(images):]:
        ax.set_axis_off()
    return _save(fig, path)
