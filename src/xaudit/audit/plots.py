"""Audit figures: matplotlib (Agg), one function per figure, each writes one PNG.

Drawn at 2x (``DPI``; the report shows them at 100 CSS px per inch, from the PNG's pHYs),
with no text under 8 pt (11 px) and legends outside the data."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

# Region colours for bar charts; red is left out because red marks a flagged bar.
_PALETTE = ("C0", "C1", "C2", "C4", "C5", "C6", "C7", "C8", "C9")
# Past these sizes a figure of every method wraps (or moves its legend out) to stay readable.
_LEGEND_IN_AXES = 10
_OVERLAY_METHODS_PER_ROW = 10
_BARS_PER_ROW = 16
DPI = 200  # 2x of the 100 px per inch the report shows a figure at
SMALL = 8  # the smallest font, in points: 11 px in the report
_OUTSIDE = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "borderaxespad": 0}


def _save(fig, path: Path) -> str:
    """Write the PNG atomically (a full disk leaves the previous figure, or none)."""
    from ..run import atomic_path

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)
    return path.name


def _map_image(m: np.ndarray) -> np.ndarray:
    m = np.abs(np.asarray(m, dtype=np.float64))
    top = np.percentile(m, 99.5) if m.size else 0.0
    return np.clip(m / top, 0, 1) if top > 0 else m


def plot_convergence(
    path: Path,
    steps: list[int],
    delta: dict[str, list[float]],
    corr: dict[str, list[float]],
    tolerance: float,
    title: str,
) -> str:
    """Relative completeness delta and Spearman with the finest map against n_steps."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    for rule, values in delta.items():
        ax1.plot(steps, values, marker="o", label=rule)
    ax1.axhline(tolerance, color="k", ls="--", lw=1, label=f"tolerance {tolerance:g}")
    ax1.set(xscale="log", yscale="log", xlabel="n_steps", ylabel="|delta| / |f(x) - f(b)|")
    ax1.set_xticks(steps, [str(s) for s in steps])
    ax1.xaxis.set_minor_formatter(NullFormatter())  # log-axis minor labels collide with ours
    for rule, values in corr.items():
        ax2.plot(steps, values, marker="o", label=rule)
    ax2.set(xscale="log", xlabel="n_steps", ylabel="Spearman with finest map", ylim=(-0.05, 1.05))
    ax2.set_xticks(steps, [str(s) for s in steps])
    ax2.xaxis.set_minor_formatter(NullFormatter())
    ax2.legend(*ax1.get_legend_handles_labels(), fontsize=SMALL, **_OUTSIDE)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_similarity_matrix(path: Path, names: list[str], matrix: np.ndarray, title: str) -> str:
    """A symmetric similarity matrix (e.g. maps under different baselines): a sequential scale
    when no value is negative, a diverging one otherwise; cell text dark or light by background."""
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(names), 1 + 0.7 * len(names)))
    finite = matrix[np.isfinite(matrix)]
    signed = finite.size > 0 and finite.min() < 0
    cmap, vmin = ("RdBu_r", -1.0) if signed else ("viridis", 0.0)
    im = ax.imshow(matrix, vmin=vmin, vmax=1, cmap=cmap)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=SMALL)
    ax.set_yticks(range(len(names)), names, fontsize=SMALL)
    for i in range(len(names)):
        for j in range(len(names)):
            if np.isfinite(matrix[i, j]):
                r, g, b, _ = im.cmap(im.norm(matrix[i, j]))
                dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_randomization(
    path: Path,
    steps: list[str],
    methods: dict[str, tuple[dict[str, list[float]], dict[str, float], dict[int, float]]],
    title: str,
) -> str:
    """One figure for every method: a panel each (up to four a row) of its mean similarity to
    the trained model's map as blocks are randomised, the random-pair level (dotted) and the
    rules' yardsticks for Spearman(|map|) (black bars). ``methods``: label -> (curves,
    random-pair level per metric, step index -> the yardstick)."""
    labels = list(methods)
    nrows = max(1, -(-len(labels) // 4))
    ncols = max(1, -(-len(labels) // nrows))  # rows as even as they can be
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.45 * ncols + 0.4, 2.5 * nrows + 0.9),
                             squeeze=False, sharey=True, layout="constrained")
    xs = np.arange(len(steps))
    for ax, label in zip(axes.ravel(), labels, strict=False):
        curves, random_pair, thresholds = methods[label]
        for i, (metric, values) in enumerate(curves.items()):
            ruled = metric == "spearman_abs"  # the rules' metric: drawn on top, thicker
            line = ax.plot(xs, values, marker="o", ms=3, color=f"C{i}", lw=2.2 if ruled else 1.0,
                           zorder=3 if ruled else 2,
                           label=metric + (" (ruled)" if ruled else ""))[0]
            if metric in random_pair and np.isfinite(random_pair[metric]):
                ax.axhline(random_pair[metric], color=line.get_color(), ls=":", lw=1)
        marks = [(k, t) for k, t in thresholds.items() if t is not None and np.isfinite(t)]
        if marks:
            ax.scatter([k for k, _ in marks], [t for _, t in marks], marker="_", s=300, lw=2.5,
                       color="black", zorder=4, label="pass below (spearman_abs)")
        ax.set_title(label, fontsize=9)
        ax.set_xticks(xs, steps, rotation=45, ha="right", fontsize=SMALL)
        ax.set_ylim(-0.3, 1.05)
        ax.tick_params(axis="y", labelsize=SMALL)
    for ax in axes.ravel()[len(labels):]:
        ax.set_axis_off()
    for ax in axes[:, 0]:
        ax.set_ylabel("similarity to trained map", fontsize=SMALL)
    handles, names = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="outside lower center", ncols=min(4, len(names)),
                   fontsize=SMALL, title="dotted: random-pair level", title_fontsize=SMALL)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_curves(
    path: Path,
    panels: list[tuple[str, str, np.ndarray, dict[str, np.ndarray]]],
    title: str,
) -> str:
    """Side-by-side mean curves; each panel: (title, xlabel, x values, {method: y values}).

    One legend below the panels; past ``_LEGEND_IN_AXES`` curves (a run of every method) they
    get 20 colours times line styles, controls in grey, so no colour names two of them."""
    most = max((len(c) for *_, c in panels), default=0)
    many = most > _LEGEND_IN_AXES
    legend_in = 0.2 * -(-most // 4)  # the legend's rows below the panels
    ncols = len(panels) if len(panels) <= 2 else 2  # more panels wrap, within the column
    nrows = -(-len(panels) // ncols)
    # Constrained layout keeps the figure title clear of the panel titles.
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows + 0.2 + legend_in),
                             squeeze=False, layout="constrained")
    for ax, (panel_title, xlabel, xs, curves) in zip(axes.ravel(), panels, strict=False):
        for i, (method, ys) in enumerate(curves.items()):
            ref = "(reference)" in method
            if not many:
                ax.plot(xs, ys, label=method, ls="--" if ref else "-", color=f"C{i}")
            elif method.startswith("control:") or ref:
                ax.plot(xs, ys, label=method, ls=(":", "--", "-.")[i % 3], color="0.55", lw=1)
            else:
                ax.plot(xs, ys, label=method, color=plt.get_cmap("tab20")(i % 20),
                        ls=("-", "--", "-.")[(i // 20) % 3], lw=1.2)
        ax.set(title=panel_title, xlabel=xlabel, ylabel="class score", ylim=(-0.02, 1.02))
    for ax in axes.ravel()[len(panels):]:
        ax.set_axis_off()
    # One legend below the panels: where methods differ the curves are close, and a legend
    # inside an axes covers them.
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)),
                   fontsize=SMALL)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_overlays(
    path: Path,
    images: np.ndarray,
    masks: np.ndarray,
    maps: dict[str, np.ndarray],
    title: str,
    max_images: int = 4,
) -> str:
    """Rows: images; columns: the image with its mask outline, then each method's map. More
    than ``_OVERLAY_METHODS_PER_ROW`` methods wrap onto further rows, each starting with the
    image again, so the figure stays as wide as the report."""
    n = min(max_images, len(images))
    items = list(maps.items())
    per_row = max(1, min(_OVERLAY_METHODS_PER_ROW, len(items)))
    blocks = [items[i:i + per_row] for i in range(0, len(items), per_row)] or [[]]
    cols = 1 + per_row
    fig, axes = plt.subplots(n * len(blocks), cols, figsize=(1.9 * cols, 1.9 * n * len(blocks)),
                             squeeze=False)
    for i in range(n):
        for b, block in enumerate(blocks):
            row = axes[i * len(blocks) + b]
            row[0].imshow(np.clip(images[i], 0, 1))
            row[0].contour(masks[i].astype(float), levels=[0.5], colors="lime", linewidths=0.8)
            for j, (method, m) in enumerate(block, start=1):
                row[j].imshow(_map_image(m[i]), cmap="magma", vmin=0, vmax=1)
                row[j].contour(masks[i].astype(float), levels=[0.5], colors="lime", linewidths=0.6)
                if i == 0 or len(blocks) > 1:
                    row[j].set_title(method, fontsize=SMALL)
            for ax in row:
                ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_shortcut(
    path: Path,
    classes: list[str],
    regions: list[str],
    panels: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    title: str,
) -> str:
    """One panel per method (``panels``: label -> (share, threshold, flagged), each classes ×
    regions), side by side on one scale. Bars: attribution share per class and region, one
    colour per region; ticks: the flag threshold; a flagged bar is edged red and hatched."""
    labels = list(panels) or [""]
    ncols = min(len(labels), 3)
    nrows = -(-len(labels) // ncols)
    each = max(2.6, 0.35 * len(classes) * len(regions) + 1)
    fig, axes = plt.subplots(nrows, ncols, figsize=(min(10.5, each * ncols + 1.6), 2.6 * nrows + 0.6),
                             squeeze=False, sharey=True, layout="constrained")
    width = 0.8 / max(1, len(regions))
    xs = np.arange(len(classes))
    for ax, label in zip(axes.ravel(), labels, strict=False):
        if label not in panels:
            continue
        share, threshold, flagged = panels[label]
        for r, region in enumerate(regions):
            pos = xs + r * width
            bars = ax.bar(pos, share[:, r], width=width, color=_PALETTE[r % len(_PALETTE)],
                          label=region, alpha=0.85)
            for c, bar in enumerate(bars):
                if flagged[c, r]:
                    bar.set(edgecolor="C3", hatch="///", linewidth=1.5)
            ax.scatter(pos, threshold[:, r], marker="_", color="k", s=120, zorder=3)
        ax.set_xticks(xs + width * (len(regions) - 1) / 2, classes, rotation=20, ha="right",
                      fontsize=SMALL)
        ax.set_ylim(0, 1)
        ax.set_title(label, fontsize=9)
    for ax in axes.ravel()[len(panels):]:
        ax.set_axis_off()
    axes[0, 0].set_ylabel("share of |attribution|")
    handles, names = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="outside right upper", fontsize=SMALL,
                   title="black tick: flag threshold;\nred hatch: flagged", title_fontsize=SMALL)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_group_bars(
    path: Path,
    labels: list[str],
    groups: dict[str, list[tuple[float, float, float, int]]],
    title: str,
) -> str:
    """Grouped bars, e.g. a statistic for correctly and wrongly predicted images; each value is
    (mean, ci_lo, ci_hi, n), drawn as a bar with its interval; the legend gives each group's n.
    More than ``_BARS_PER_ROW`` labels wrap onto further rows of bars."""
    per_row = max(1, min(_BARS_PER_ROW, len(labels)))
    starts = list(range(0, len(labels), per_row)) or [0]
    fig, axes = plt.subplots(len(starts), 1, figsize=(max(5, 0.9 * per_row + 2), 3.6 * len(starts)),
                             squeeze=False)
    width = 0.8 / max(1, len(groups))
    for ax, start in zip(axes[:, 0], starts, strict=True):
        part = labels[start:start + per_row]
        xs = np.arange(len(part))
        for g, (name, values) in enumerate(groups.items()):
            values = values[start:start + per_row]
            mean = np.array([v[0] for v in values], dtype=float)
            err = np.array([[m - lo, hi - m] if np.isfinite(lo) and np.isfinite(hi) else [0, 0]
                            for m, lo, hi, _ in values], dtype=float).T
            n = max((v[3] for v in groups[name]), default=0)
            ax.bar(xs + g * width, np.nan_to_num(mean), width=width, label=f"{name} (n = {n})",
                   yerr=err.reshape(2, -1), capsize=3, error_kw={"lw": 1}, color=f"C{g}")
        ax.set_xticks(xs + width * (len(groups) - 1) / 2, part, rotation=30, ha="right", fontsize=SMALL)
        if len(starts) > 1:  # every row on one scale, so bars are as wide in the last row
            ax.set_xlim(-0.6, per_row - 0.4 + width * (len(groups) - 1))
    axes[0, 0].legend(fontsize=SMALL, **_OUTSIDE)
    axes[0, 0].set_title(title, fontsize=10)
    return _save(fig, path)
