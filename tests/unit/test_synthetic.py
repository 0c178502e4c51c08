"""Procedural bean leaves: determinism, masks, the train-only shortcut, the bundle, the writer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from xaudit.config import DataConfig, SyntheticConfig
from xaudit.data import SOURCES, leaf_render
from xaudit.data import synthetic as syn
from xaudit.data.synthetic import (
    CLASSES,
    TAG_COLOURS,
    render_leaf,
    synthetic_source,
    write_synthetic,
)
from xaudit.errors import ConfigError

SIZE = 64


def data_cfg(**synthetic) -> DataConfig:
    base = {"n_train": 4, "n_val": 2, "n_test": 3, "image_size": 32}
    return DataConfig(synthetic=SyntheticConfig(**{**base, **synthetic}))


def test_registered_as_a_source():
    assert SOURCES.get("synthetic") is synthetic_source


@pytest.mark.parametrize("label", range(3))
def test_same_seed_same_arrays(label):
    a, b = render_leaf(7, label, SIZE), render_leaf(7, label, SIZE)
    for field in ("image", "lesion_mask", "leaf_mask", "shortcut_mask"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.image.shape == (SIZE, SIZE, 3) and a.image.dtype == np.uint8
    assert a.lesion_mask.dtype == bool and a.leaf_mask.shape == (SIZE, SIZE)


def test_seed_sequence_is_not_consumed():
    ss = np.random.SeedSequence([1, 2, 3])
    np.testing.assert_array_equal(render_leaf(ss, 2, SIZE).image, render_leaf(ss, 2, SIZE).image)


def test_different_seeds_differ():
    a, b = render_leaf(1, 0, SIZE), render_leaf(2, 0, SIZE)
    assert np.abs(a.image.astype(int) - b.image.astype(int)).mean() > 5
    assert not np.array_equal(a.leaf_mask, b.leaf_mask)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_classes_differ_only_inside_the_lesion_mask(seed):
    """One seed gives one scene: disease changes exactly the masked pixels, and visibly."""
    healthy = render_leaf(seed, 0, 96)
    assert not healthy.lesion_mask.any()
    assert 0.03 < healthy.leaf_mask.mean() < 0.6
    for label in (1, 2):
        sick = render_leaf(seed, label, 96)
        np.testing.assert_array_equal(sick.leaf_mask, healthy.leaf_mask)
        assert sick.lesion_mask.any()
        assert not (sick.lesion_mask & ~sick.leaf_mask).any()  # lesions lie on the leaf
        outside = ~sick.lesion_mask
        np.testing.assert_array_equal(sick.image[outside], healthy.image[outside])
        diff = np.abs(sick.image.astype(int) - healthy.image.astype(int)).sum(-1)
        assert diff[sick.lesion_mask].mean() > 40  # lesions are visible, not a faint tint


def test_lesions_are_brown_or_rust_coloured_and_cover_a_few_percent():
    for label in (1, 2):
        fractions, redness = [], []
        for seed in range(6):
            leaf = render_leaf(seed, label, 224)
            img = leaf.image.astype(float)
            healthy = render_leaf(seed, 0, 224).image.astype(float)
            m = leaf.lesion_mask
            fractions.append(m.sum() / leaf.leaf_mask.sum())
            # Red minus green rises where the disease is (green leaf -> brown / rust).
            redness.append((img[m, 0] - img[m, 1]).mean() - (healthy[m, 0] - healthy[m, 1]).mean())
        assert 0.02 < np.mean(fractions) < 0.4, (CLASSES[label], fractions)
        assert min(redness) > 15, (CLASSES[label], redness)


def test_shortcut_tag_is_a_two_tone_corner_sticker_and_changes_nothing_else():
    stickers = set()
    for label, name in enumerate(CLASSES):
        plain, tagged = render_leaf(11, label, SIZE), render_leaf(11, label, SIZE, shortcut=True)
        assert not plain.shortcut_mask.any()
        ys, xs = np.nonzero(tagged.shortcut_mask)
        side = round(syn.TAG_FRACTION * SIZE)
        assert len(ys) == side * side  # one square ...
        assert ys.max() < SIZE // 4 and xs.max() < SIZE // 4  # ... in the top-left corner
        colour = np.array(TAG_COLOURS[name])
        pixels = tagged.image[tagged.shortcut_mask]
        is_colour = (pixels == colour).all(1)
        assert (is_colour | (pixels == 255 - colour).all(1)).all()  # the class colour on its complement
        assert 0.3 < is_colour.mean() < 0.7
        stickers.add(is_colour.tobytes())
        outside = ~tagged.shortcut_mask
        np.testing.assert_array_equal(tagged.image[outside], plain.image[outside])
        assert not (tagged.lesion_mask & tagged.shortcut_mask).any()
        assert not (tagged.leaf_mask & tagged.shortcut_mask).any()
    assert len({tuple(c) for c in TAG_COLOURS.values()}) == len(CLASSES)
    assert len(stickers) == len(CLASSES)  # and a pattern of its own


def test_lesion_strength_fades_only_the_lesions():
    healthy = render_leaf(5, 0, SIZE).image.astype(float)
    for label in (1, 2):
        full = render_leaf(5, label, SIZE)
        assert render_leaf(5, label, SIZE, lesion_strength=1.0).image.tobytes() == full.image.tobytes()
        faint = render_leaf(5, label, SIZE, lesion_strength=0.3)
        np.testing.assert_array_equal(faint.lesion_mask, full.lesion_mask)
        outside = ~full.lesion_mask
        np.testing.assert_array_equal(faint.image[outside], full.image[outside])
        m = full.lesion_mask
        gap_full = np.abs(full.image[m].astype(float) - healthy[m]).mean()
        gap_faint = np.abs(faint.image[m].astype(float) - healthy[m]).mean()
        assert gap_faint == pytest.approx(0.3 * gap_full, rel=0.1, abs=1.0)
    with pytest.raises(ValueError, match="lesion_strength"):
        render_leaf(5, 1, SIZE, lesion_strength=0)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="label"):
        render_leaf(0, 3)
    with pytest.raises(ValueError, match="size"):
        render_leaf(0, 0, size=8)
    with pytest.raises(TypeError, match="seed"):
        render_leaf("0", 0)


def test_bundle_is_balanced_with_stable_ids():
    bundle = synthetic_source(data_cfg(), seed=3)
    assert bundle.classes == list(CLASSES)
    assert bundle.counts() == {
        "train": dict.fromkeys(CLASSES, 4),
        "val": dict.fromkeys(CLASSES, 2),
        "test": dict.fromkeys(CLASSES, 3),
    }
    first = bundle.splits["test"][3]
    assert (first.id, first.label) == ("test/angular_leaf_spot/0000", 1)
    ids = [r.id for rs in bundle.splits.values() for r in rs]
    assert len(set(ids)) == len(ids)
    assert bundle.info["generator"] == "synthetic bean leaves"
    assert bundle.info["shortcut"] == {"enabled": False}
    again = synthetic_source(data_cfg(), seed=3).splits["test"][3]
    np.testing.assert_array_equal(first.image(), again.image())
    other = synthetic_source(data_cfg(), seed=4).splits["test"][3]
    assert not np.array_equal(first.image(), other.image())
    # Records of one seed differ from each other (no repeated scene across splits or classes).
    images = [r.image() for r in bundle.splits["train"][:4] + bundle.splits["val"][:2]]
    assert len({im.tobytes() for im in images}) == len(images)


def test_record_masks_match_labels():
    bundle = synthetic_source(data_cfg(image_size=SIZE), seed=0)
    for record in bundle.splits["val"]:
        image, lesions, leaf = record.image(), record.mask(), record.object_mask()
        assert image.shape == (SIZE, SIZE, 3) and lesions.shape == leaf.shape == (SIZE, SIZE)
        assert lesions.any() == (record.label != 0)
        assert not (lesions & ~leaf).any()


def test_classes_subset_and_order_and_cap():
    cfg = data_cfg()
    cfg.classes = ["bean_rust", "healthy"]
    cfg.max_per_class = 2
    bundle = synthetic_source(cfg, seed=0)
    assert bundle.classes == ["bean_rust", "healthy"]
    assert bundle.sizes() == {"train": 4, "val": 4, "test": 4}
    rust = [r for r in bundle.splits["train"] if r.label == 0]
    assert [r.id for r in rust] == ["train/bean_rust/0000", "train/bean_rust/0001"]
    assert all(r.mask().any() for r in rust)  # label 0 here is rust, rendered with pustules
    # The same record renders the same whatever the class subset.
    full = synthetic_source(data_cfg(), seed=0).splits["train"]
    same = next(r for r in full if r.id == rust[1].id)
    np.testing.assert_array_equal(same.image(), rust[1].image())


def test_unknown_class_names_the_allowed_ones():
    cfg = data_cfg()
    cfg.classes = ["healthy", "downy_mildew"]
    with pytest.raises(ConfigError, match="downy_mildew.*Allowed: healthy, angular_leaf_spot"):
        synthetic_source(cfg, seed=0)


def tagged_ids(bundle) -> dict[str, set[str]]:
    """Record ids whose tag square holds their class's colour, per split."""
    tag = leaf_render._tag_mask(bundle.info["image_size"])
    out: dict[str, set[str]] = {}
    for split, records in bundle.splits.items():
        out[split] = {
            r.id
            for r in records
            if (r.image()[tag] == leaf_render.tag_pixels(bundle.classes[r.label], bundle.info["image_size"], tag)).all()
        }
    return out


def test_shortcut_only_in_train_with_the_requested_strength():
    bundle = synthetic_source(data_cfg(shortcut=True, shortcut_strength=0.5), seed=1)
    tagged = tagged_ids(bundle)
    assert tagged["val"] == set() and tagged["test"] == set()
    for name in CLASSES:
        assert sum(i.startswith(f"train/{name}/") for i in tagged["train"]) == 2  # 0.5 of 4
    info = bundle.info["shortcut"]
    assert info["enabled"] and info["splits"] == ["train"] and info["corner"] == "top-left"
    assert info["strength"] == 0.5
    assert info["colours"]["bean_rust"] == list(TAG_COLOURS["bean_rust"])
    full = synthetic_source(data_cfg(shortcut=True, shortcut_strength=1.0), seed=1)
    assert len(tagged_ids(full)["train"]) == 12
    none = synthetic_source(data_cfg(shortcut=False), seed=1)
    assert tagged_ids(none) == {"train": set(), "val": set(), "test": set()}


def test_a_record_renders_once_even_when_masks_are_read_after_all_images(monkeypatch):
    # A render cache that holds one record: only the bit-packed mask tier can save re-renders.
    monkeypatch.setattr(syn, "_RENDERS", syn._ByteLRU(1))
    monkeypatch.setattr(syn, "_MASKS", syn._ByteLRU(2**20))
    records = synthetic_source(data_cfg(), seed=5).splits["train"]
    before = syn.RENDER_COUNT
    images = [r.image() for r in records]
    masks = [(r.mask(), r.object_mask()) for r in records]
    assert syn.RENDER_COUNT - before == len(records)
    for record, image, (lesions, leaf) in zip(records, images, masks, strict=True):
        key = record.image.args[0]
        direct = render_leaf(syn._record_seed(key), key.class_index, key.size, key.tagged)
        np.testing.assert_array_equal(image, direct.image)
        np.testing.assert_array_equal(lesions, direct.lesion_mask)
        np.testing.assert_array_equal(leaf, direct.leaf_mask)
    images[0][:] = 0  # callers get copies: the cache is not corrupted
    assert records[0].image().any()


def test_byte_lru_evicts_least_recently_used():
    lru = syn._ByteLRU(max_bytes=10)
    lru.put("a", 1, 4)
    lru.put("b", 2, 4)
    assert lru.get("a") == 1  # "b" is now the oldest
    lru.put("c", 3, 4)
    assert (lru.get("a"), lru.get("b"), lru.get("c")) == (1, None, 3)
    assert lru.nbytes == 8


def test_lesion_free_colour_statistics_match_across_classes():
    """Background colour, leaf colour (lesions excluded) and leaf area: one distribution."""
    n = 60
    cfg = data_cfg(n_train=n, n_val=0, n_test=0, image_size=32)
    bundle = synthetic_source(cfg, seed=0)
    stats = {c: [] for c in range(3)}
    for r in bundle.splits["train"]:
        image, lesions, leaf = r.image() / 255.0, r.mask(), r.object_mask()
        clean_leaf = leaf & ~lesions
        stats[r.label].append(
            np.concatenate([image[clean_leaf].mean(0), image[~leaf].mean(0), [leaf.mean()]])
        )
    means = np.array([np.mean(stats[c], axis=0) for c in range(3)])
    spread = np.array(stats[0]).std(axis=0)
    # Class means differ by sampling noise only: within 4 standard errors of a difference of
    # two n-image means (14 comparisons; about 0.05 of the 0..1 range for the leaf colour).
    tolerance = 4 * spread * np.sqrt(2 / n)
    assert (np.abs(means[1:] - means[0]) < tolerance).all(), (means, tolerance)


def test_write_synthetic_round_trip(tmp_path):
    cfg = SyntheticConfig(n_train=2, n_val=1, n_test=1, image_size=32, shortcut=True)
    out = write_synthetic(tmp_path / "beans", cfg, seed=9)
    assert out == tmp_path / "beans"
    images = sorted(p.relative_to(out / "images") for p in (out / "images").rglob("*.png"))
    assert len(images) == 3 * (2 + 1 + 1)
    assert images[0].as_posix() == "test/angular_leaf_spot/0000.png"
    for folder in ("masks", "object_masks"):
        assert sorted(p.relative_to(out / folder) for p in (out / folder).rglob("*.png")) == images
    bundle = synthetic_source(DataConfig(synthetic=cfg), seed=9)
    for record in bundle.splits["train"] + bundle.splits["test"]:
        rel = f"{record.id}.png"
        image = np.asarray(Image.open(out / "images" / rel))
        lesions = np.asarray(Image.open(out / "masks" / rel))
        leaf = np.asarray(Image.open(out / "object_masks" / rel))
        assert lesions.shape == leaf.shape == image.shape[:2]
        assert set(np.unique(lesions)) <= {0, 255} and set(np.unique(leaf)) <= {0, 255}
        np.testing.assert_array_equal(image, record.image())
        np.testing.assert_array_equal(lesions == 255, record.mask())
        np.testing.assert_array_equal(leaf == 255, record.object_mask())
    info = json.loads((out / "synthetic.json").read_text())
    assert info["seed"] == 9 and info["shortcut"]["strength"] == 1.0
