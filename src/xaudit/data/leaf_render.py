"""Procedural bean-leaf disease images with ground-truth lesion and leaf masks: the renderer.

Three classes: healthy, angular leaf spot (angular tan/brown lesions bounded by veins, with a
yellow margin) and bean rust (dozens of small reddish-brown pustules with pale halos).

Every image is drawn from two independent random streams derived from its seed: the *scene*
stream (background, leaf shape, colour, size, position, rotation, lighting, sensor noise) and
the *lesion* stream. The scene stream never sees the label, so the classes share the same
scene distribution by construction, and for one seed the images of different classes are
pixel-identical outside the lesion mask. A model can only tell them apart by the lesions —
unless the optional shortcut tag (a patterned sticker in the top-left corner, one colour and
pattern per class, training split only) is planted.
"""

from __future__ import annotations

import colorsys
import functools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image
from scipy import ndimage

CLASSES = ("healthy", "angular_leaf_spot", "bean_rust")

# Shortcut tag: a two-tone sticker per class, the class colour on its complement in the class's
# pattern. A flat square of colour barely moves globally pooled ImageNet features (a frozen
# MobileNetV2 head fits a flat tag alone to ~0.8 training accuracy), while a high-contrast
# pattern is a cue such a model readily picks up, as it would a real label, ruler or watermark.
TAG_COLOURS = {
    "healthy": (230, 40, 200),  # magenta
    "angular_leaf_spot": (30, 90, 240),  # blue
    "bean_rust": (20, 220, 230),  # cyan
}
TAG_PATTERNS = {  # period in pixels at 224 px, scaled with the image
    "healthy": "horizontal stripes",
    "angular_leaf_spot": "checkerboard",
    "bean_rust": "diagonal stripes",
}
TAG_PERIOD = 8
TAG_CORNER = "top-left"
TAG_FRACTION = 0.1  # tag side as a fraction of the image side
TAG_MARGIN = 0.08  # inside the usual 0.875 centre crop (resize 256, crop 224)

# The leaf's centre lies anywhere within ±LEAF_OFFSET of the image centre (fractions of the
# side), so that the image centre is not a free lesion detector: a centred leaf makes the
# centre-of-image baseline of the localization audit hard to beat for reasons that have
# nothing to do with the explanation.
LEAF_OFFSET = 0.2

@dataclass
class SyntheticLeaf:
    """One rendered image with its masks (all H×W)."""

    image: np.ndarray  # uint8 H×W×3
    lesion_mask: np.ndarray  # bool; every pixel the disease changed (lesions and their halos)
    leaf_mask: np.ndarray  # bool; leaf blade and petiole
    shortcut_mask: np.ndarray  # bool; the shortcut tag, all False without one


# --------------------------------------------------------------------------- helpers


def _child(ss: np.random.SeedSequence, key: int) -> np.random.SeedSequence:
    """A child stream derived without mutating ``ss`` (``spawn`` would advance its counter)."""
    return np.random.SeedSequence(ss.entropy, spawn_key=(*ss.spawn_key, key))


def _seed_sequence(seed: int | np.random.SeedSequence) -> np.random.SeedSequence:
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed: expected an int or numpy SeedSequence, got {seed!r}")
    return np.random.SeedSequence(int(seed) % 2**64)


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-scale noise with features about ``size / cells`` pixels across."""
    small = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.BICUBIC))


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


def _mix(a: np.ndarray, b: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Per-pixel blend ``a * (1 - alpha) + b * alpha``; ``alpha`` is H×W."""
    return a + (b - a) * alpha[..., None]


def _line(dist: np.ndarray, width: np.ndarray | float) -> np.ndarray:
    """Anti-aliased coverage of a line of ``width`` pixels at distance ``dist``."""
    return np.clip(np.asarray(width, np.float32) * 0.5 - dist + 0.5, 0.0, 1.0)


def _hash(*ints: np.ndarray) -> np.ndarray:
    """A cheap integer hash of cell coordinates, as an index into a random table."""
    primes = (73856093, 19349663, 83492791, 2654435761)
    h = np.zeros(ints[0].shape, np.int64)
    for p, arr in zip(primes, ints, strict=False):
        h ^= arr.astype(np.int64) * p
    return (h ^ (h >> 13)) % 8191


# --------------------------------------------------------------------------- the scene


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Soil, bench, cloth or blurred foliage, with multi-scale texture."""
    kind = rng.integers(4)
    if kind == 0:  # soil
        base = _hsv(rng.uniform(0.05, 0.11), rng.uniform(0.35, 0.6), rng.uniform(0.25, 0.5))
        amp = (0.18, 0.12, 0.12)
    elif kind == 1:  # bench / paper
        base = _hsv(rng.uniform(0.0, 0.15), rng.uniform(0.0, 0.2), rng.uniform(0.6, 0.9))
        amp = (0.06, 0.03, 0.02)
    elif kind == 2:  # dark cloth
        base = _hsv(rng.uniform(0.0, 1.0), rng.uniform(0.05, 0.4), rng.uniform(0.1, 0.3))
        amp = (0.1, 0.05, 0.08)
    else:  # out-of-focus foliage
        base = _hsv(rng.uniform(0.2, 0.35), rng.uniform(0.3, 0.6), rng.uniform(0.15, 0.4))
        amp = (0.35, 0.15, 0.0)
    coarse = _smooth_noise(rng, size, 4)
    mid = _smooth_noise(rng, size, 12)
    grain = rng.standard_normal((size, size), dtype=np.float32)
    shade = 1 + amp[0] * coarse + amp[1] * mid + amp[2] * grain
    tint = 1 + 0.08 * np.stack([_smooth_noise(rng, size, 3) for _ in range(3)], axis=-1)
    return base * tint * shade[..., None]


class _Leaf(NamedTuple):
    alpha: np.ndarray  # coverage 0..1 of the leaf (blade + petiole)
    interior: np.ndarray  # bool: safely inside the blade (where lesions may go)
    r: np.ndarray  # |distance from midrib| / local half-width
    side: np.ndarray  # 0/1: which half of the blade
    major_vein: np.ndarray  # coverage of midrib and secondary veins
    minor_vein: np.ndarray  # coverage of the veinlet network
    cell: np.ndarray  # hash index of the vein-bounded cell a pixel lies in
    cell_row: np.ndarray  # index of the intervein band (between two secondary veins)
    shading: np.ndarray  # brightness modulation of the blade
    length: float  # leaf length in pixels


def _leaf_geometry(rng: np.random.Generator, size: int) -> _Leaf:
    """Leaf blade (ovate, rounded base, pointed tip), midrib, pinnate veins, veinlet cells."""
    px = size / 224.0  # widths below are in pixels at 224 px
    yy, xx = _grid(size)
    length = size * rng.uniform(0.55, 0.8)
    half_width = length * rng.uniform(0.3, 0.4)
    cx, cy = (float(c) for c in size * (0.5 + rng.uniform(-LEAF_OFFSET, LEAF_OFFSET, size=2)))
    angle = rng.uniform(0, 2 * np.pi)
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u = (xx - cx) * c + (yy - cy) * s
    v = (yy - cy) * c - (xx - cx) * s
    t = u / length + 0.5  # 0 at the base, 1 at the tip
    v = v - rng.uniform(-0.12, 0.12) * length * (t - 0.5) ** 2  # a slightly curved midrib
    side = (v > 0).astype(np.int64)

    p, q = rng.uniform(0.4, 0.65), rng.uniform(1.15, 1.6)  # rounded base, acuminate tip
    tm = p / (p + q)
    tc = np.clip(t, 1e-4, 1 - 1e-4)
    profile = tc**p * (1 - tc) ** q / (tm**p * (1 - tm) ** q)
    asym = rng.uniform(-0.08, 0.08)
    wave = 1 + rng.uniform(0, 0.03) * np.sin(
        2 * np.pi * rng.uniform(3, 7) * t + rng.uniform(0, 6.3)
    )
    w = (
        half_width
        * profile
        * wave
        * np.where(side == 1, np.float32(1 + asym), np.float32(1 - asym))
    )
    w = np.where((t > 0) & (t < 1), w, 0).astype(np.float32)
    av = np.abs(v)
    blade = np.clip(w - av + 0.5, 0, 1) * np.clip(2 * w, 0, 1)  # no half-covered axis line
    petiole_len = rng.uniform(0.06, 0.12)
    petiole = _line(av, 2.4 * px) * ((t > -petiole_len) & (t < 0.05))
    alpha = np.maximum(blade, petiole)

    r = np.clip(av / np.maximum(w, 1e-3), 0, 1.5)
    midrib = _line(av, (2.2 * (1 - t) + 0.8) * px) * ((t > 0) & (t < 0.97))
    n_veins = int(rng.integers(6, 9))
    spacing = 0.9 / n_veins
    slant, curve = rng.uniform(0.18, 0.3), rng.uniform(0.05, 0.15)
    phase = (t - slant * r - curve * r**2) / spacing + np.where(
        side == 1, np.float32(0), np.float32(0.5)
    )
    phase += 0.06 * _smooth_noise(rng, size, 6)
    vein_dist = np.abs(phase - np.round(phase)) * spacing * length * 0.8
    secondary = _line(vein_dist, (1.5 - 0.8 * r) * px) * ((t > 0.03) & (t < 0.93) & (r < 0.95))
    major = np.maximum(midrib, secondary)

    # Veinlets: two oblique families of slightly warped lines -> small angular cells.
    cell_size = length / 22 * rng.uniform(0.8, 1.2)
    a1, a2 = angle + rng.uniform(0.6, 1.0), angle - rng.uniform(0.6, 1.0)
    psi1 = (xx * np.float32(np.cos(a1)) + yy * np.float32(np.sin(a1))) / cell_size
    psi2 = (xx * np.float32(np.cos(a2)) + yy * np.float32(np.sin(a2))) / cell_size
    psi1 += 0.16 * _smooth_noise(rng, size, 8)
    psi2 += 0.16 * _smooth_noise(rng, size, 8)
    d1 = np.abs(psi1 - np.round(psi1)) * cell_size
    d2 = np.abs(psi2 - np.round(psi2)) * cell_size
    minor = _line(np.minimum(d1, d2), 0.8 * px)
    row = np.floor(phase).astype(np.int64)
    cell = _hash(row, np.floor(psi1), np.floor(psi2), side)

    puckering = 1 - 0.05 * np.cos(2 * np.pi * phase)  # blade bulges between the veins
    side_light = 1 + rng.uniform(-0.08, 0.08) * (2 * side - 1).astype(np.float32)
    shading = puckering * side_light * (1 - 0.12 * np.clip(r, 0, 1) ** 2)
    interior = (blade >= 1) & (r < 0.93) & (t > 0.04) & (t < 0.95) & (major < 0.5)
    return _Leaf(alpha, interior, r, side, major, minor, cell, row, shading, length)


def _leaf_colour(rng: np.random.Generator, leaf: _Leaf, size: int) -> np.ndarray:
    base = _hsv(rng.uniform(0.2, 0.32), rng.uniform(0.45, 0.8), rng.uniform(0.35, 0.65))
    texture = 1 + 0.07 * _smooth_noise(rng, size, 5) + 0.03 * _smooth_noise(rng, size, 20)
    texture += 0.015 * rng.standard_normal((size, size), dtype=np.float32)
    rgb = base * (texture * leaf.shading)[..., None]
    vein_colour = base * 0.55 + np.array([0.38, 0.42, 0.22], np.float32) * rng.uniform(0.7, 1.0)
    rgb = _mix(rgb, vein_colour * 0.9, rng.uniform(0.12, 0.3) * leaf.minor_vein)
    return _mix(rgb, vein_colour, 0.8 * leaf.major_vein)


def _lighting(rng: np.random.Generator, size: int) -> np.ndarray:
    """Brightness gradient, vignetting and colour temperature, as an H×W×3 gain."""
    yy, xx = _grid(size)
    x, y = xx / size - 0.5, yy / size - 0.5
    gx, gy = (float(g) for g in rng.uniform(-0.4, 0.4, size=2))
    gain = rng.uniform(0.8, 1.2) * (1 + gx * x + gy * y) * (1 - rng.uniform(0, 0.5) * (x**2 + y**2))
    warm = rng.uniform(-0.06, 0.06)
    return gain[..., None] * np.array([1 + warm, 1, 1 - warm], np.float32)


def _shadow(rng: np.random.Generator, alpha: np.ndarray, size: int) -> np.ndarray:
    """A soft drop shadow of the leaf on the background."""
    dy, dx = np.round(rng.uniform(-0.04, 0.04, size=2) * size).astype(int)
    shifted = np.zeros_like(alpha)
    ys, yd = (
        (slice(0, size - dy), slice(dy, size))
        if dy >= 0
        else (slice(-dy, size), slice(0, size + dy))
    )
    xs, xd = (
        (slice(0, size - dx), slice(dx, size))
        if dx >= 0
        else (slice(-dx, size), slice(0, size + dx))
    )
    shifted[yd, xd] = alpha[ys, xs]
    # Two box blurs approximate a wide Gaussian at a fraction of its cost.
    width = 2 * round(0.03 * size) + 1
    soft = ndimage.uniform_filter(ndimage.uniform_filter(shifted, width), width)
    return rng.uniform(0.15, 0.4) * soft


# --------------------------------------------------------------------------- the lesions


def _angular_leaf_spot(
    rng: np.random.Generator, leaf: _Leaf, rgb: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Tan/brown lesions filling whole vein-bounded cells, dark rims, yellow margins."""
    px = size / 224.0
    uniform = rng.random(8191).astype(np.float32)
    shade = rng.random(8191).astype(np.float32)
    band_weight = rng.gamma(1.5, 1 / 1.5, size=(2, 32)).astype(np.float32)
    severity = rng.uniform(0.05, 0.2)  # fraction of cells (before band weighting)
    p_cell = np.clip(severity * band_weight[leaf.side, leaf.cell_row % 32], 0, 0.85)
    core = (uniform[leaf.cell] < p_cell) & leaf.interior
    # Spots need at least a few pixels to be seen; tiny specks at the image scale are dropped.
    core = ndimage.binary_opening(core, iterations=max(1, round(px)))
    if not core.any() and leaf.interior.any():  # a leaf with this disease always shows it
        core = leaf.interior & (leaf.cell == leaf.cell[leaf.interior][0])
    soft = ndimage.gaussian_filter(core.astype(np.float32), sigma=1.6 * px + 0.3)
    brown = np.array([0.42, 0.27, 0.12], np.float32)
    tan = np.array([0.7, 0.55, 0.32], np.float32)
    colour = brown + (tan - brown) * shade[leaf.cell][..., None]
    colour = (
        colour * np.where((soft < 0.75) & core, np.float32(0.7), np.float32(1))[..., None]
    )  # rims
    halo = np.clip((soft - 0.08) / 0.35, 0, 1) * (~core) * (leaf.alpha >= 1)
    halo = np.where(halo > 0.1, halo, 0) * rng.uniform(0.5, 0.9)
    yellow = np.array([0.8, 0.72, 0.18], np.float32)
    out = _mix(rgb, yellow, halo)
    out = np.where(core[..., None], colour * (0.9 + 0.2 * rgb / np.maximum(rgb.mean(), 1e-3)), out)
    return out, core | (halo > 0)


def _bean_rust(
    rng: np.random.Generator, leaf: _Leaf, rgb: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Dozens of small round reddish-brown pustules with pale chlorotic halos."""
    px = size / 224.0
    n = int(rng.integers(24, 100))
    ys, xs = np.nonzero(leaf.interior)
    if len(ys) == 0:
        return rgb, np.zeros(leaf.alpha.shape, bool)
    # Half the pustules scatter over the blade, half gather around a few infection sites.
    pick = rng.integers(len(ys), size=n)
    cy, cx = ys[pick].astype(np.float32), xs[pick].astype(np.float32)
    clustered = rng.random(n) < 0.5
    sites = rng.integers(len(ys), size=3)
    site = rng.integers(3, size=n)
    spread = 0.08 * leaf.length
    cy = np.where(clustered, ys[sites][site] + rng.normal(0, spread, n), cy)
    cx = np.where(clustered, xs[sites][site] + rng.normal(0, spread, n), cx)
    iy = np.clip(np.round(cy).astype(int), 0, size - 1)
    ix = np.clip(np.round(cx).astype(int), 0, size - 1)
    keep = leaf.interior[iy, ix] | (leaf.major_vein[iy, ix] < 1) & (leaf.alpha[iy, ix] >= 1)
    keep &= leaf.r[iy, ix] < 0.93
    cy, cx = cy[keep], cx[keep]
    radius = np.maximum(rng.uniform(1.6, 3.0, len(cy)) * px, 0.8)
    halo_radius = radius * rng.uniform(1.7, 2.2, len(cy))
    tone = rng.uniform(0.85, 1.15, len(cy))

    pustule = np.zeros(leaf.alpha.shape, np.float32)
    halo = np.zeros(leaf.alpha.shape, np.float32)
    tone_map = np.ones(leaf.alpha.shape, np.float32)
    for y, x, rad, hrad, k in zip(
        cy, cx, radius, halo_radius, tone, strict=True
    ):  # one window per pustule
        reach = int(np.ceil(hrad)) + 1
        y0, y1 = max(int(y) - reach, 0), min(int(y) + reach + 1, size)
        x0, x1 = max(int(x) - reach, 0), min(int(x) + reach + 1, size)
        if y0 >= y1 or x0 >= x1:
            continue
        wy, wx = np.ogrid[y0:y1, x0:x1]
        d = np.sqrt((wy - y) ** 2 + (wx - x) ** 2, dtype=np.float32)
        p = np.clip(rad - d + 0.5, 0, 1)
        h = np.clip((hrad - d) / (hrad - rad), 0, 1)
        np.maximum(pustule[y0:y1, x0:x1], p, out=pustule[y0:y1, x0:x1])
        np.maximum(halo[y0:y1, x0:x1], h, out=halo[y0:y1, x0:x1])
        tone_map[y0:y1, x0:x1] = np.where(p > 0, k, tone_map[y0:y1, x0:x1])
    on_leaf = leaf.alpha >= 1
    halo *= on_leaf * (halo > 0.1)  # the faint outer rim is left unchanged (and unmasked)
    pustule *= on_leaf
    pale = np.array([0.82, 0.83, 0.5], np.float32)
    rust = np.array([0.56, 0.25, 0.1], np.float32) * tone_map[..., None]
    out = _mix(rgb, pale, 0.7 * halo * rng.uniform(0.7, 1.0))
    out = _mix(out, rust, pustule)
    return out, (halo > 0) | (pustule > 0)


# --------------------------------------------------------------------------- rendering


def _tag_mask(size: int, fraction: float = TAG_FRACTION) -> np.ndarray:
    side = max(3, round(fraction * size))
    margin = max(1, round(TAG_MARGIN * size))
    mask = np.zeros((size, size), bool)
    mask[margin : margin + side, margin : margin + side] = True  # top-left corner
    return mask


def tag_pixels(name: str, size: int, mask: np.ndarray) -> np.ndarray:
    """The colours of class ``name``'s sticker at the True pixels of ``mask`` (K×3 uint8)."""
    ys, xs = np.nonzero(mask)
    ys, xs = ys - ys.min(), xs - xs.min()
    half = max(2, round(TAG_PERIOD * size / 224 / 2))  # at 1 px a checkerboard is a diagonal
    pattern = TAG_PATTERNS[name]
    if pattern == "horizontal stripes":
        on = (ys // half) % 2 == 0
    elif pattern == "checkerboard":
        on = (ys // half + xs // half) % 2 == 0
    else:
        on = ((ys + xs) // half) % 2 == 0
    colour = np.array(TAG_COLOURS[name], np.uint8)
    return np.where(on[:, None], colour, 255 - colour)


def render_leaf(
    seed: int | np.random.SeedSequence,
    label: int,
    size: int = 224,
    shortcut: bool = False,
    tag_fraction: float = TAG_FRACTION,
    lesion_strength: float = 1.0,
) -> SyntheticLeaf:
    """Render one leaf of class ``CLASSES[label]``; ``shortcut`` adds the class's corner tag.

    ``lesion_strength`` in (0, 1] fades the disease towards the healthy leaf's colour (1 = full
    colour, 0.3 = faint, early-stage lesions); the lesion masks do not change.
    """
    if not 0 < lesion_strength <= 1:
        raise ValueError(f"lesion_strength: expected a value in (0, 1], got {lesion_strength!r}")
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < 3:
        raise ValueError(f"label: expected 0, 1 or 2 (index into {CLASSES}), got {label!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"size: expected an int of at least 16 pixels, got {size!r}")
    size = int(size)
    ss = _seed_sequence(seed)
    scene = np.random.default_rng(_child(ss, 0))
    background = _background(scene, size)
    leaf = _leaf_geometry(scene, size)
    rgb = _leaf_colour(scene, leaf, size)
    shadow = _shadow(scene, leaf.alpha, size)
    light = _lighting(scene, size)
    sensor = scene.uniform(0.004, 0.02) * scene.standard_normal((size, size, 3), dtype=np.float32)

    lesion_rng = np.random.default_rng(_child(ss, 1 + int(label)))
    lesions = np.zeros((size, size), bool)
    healthy = rgb
    if label == 1:
        rgb, lesions = _angular_leaf_spot(lesion_rng, leaf, rgb, size)
    elif label == 2:
        rgb, lesions = _bean_rust(lesion_rng, leaf, rgb, size)
    if lesion_strength != 1:
        rgb = healthy + np.float32(lesion_strength) * (rgb - healthy)

    image = _mix(background * (1 - shadow)[..., None], rgb, leaf.alpha) * light + sensor
    image = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
    leaf_mask = leaf.alpha >= 0.5
    lesion_mask = lesions & leaf_mask
    tag = _tag_mask(size, tag_fraction) if shortcut else np.zeros((size, size), bool)
    if shortcut:
        image[tag] = tag_pixels(CLASSES[label], size, tag)
        leaf_mask &= ~tag
        lesion_mask &= ~tag
    return SyntheticLeaf(image, lesion_mask, leaf_mask, tag)
