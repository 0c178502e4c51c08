"""Shortcut screening: all mass on a corner tag is flagged; mass spread on the object is not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers.audit_toys import FunctionExplainer, TinyNet, audit_input, images_for
from xaudit.audit.shortcut import concentration_threshold, mass_share, rect_mask, shortcut
from xaudit.errors import ConfigError

SIZE = 20


def tag_map(x, t):
    m = torch.zeros(len(x), SIZE, SIZE)
    m[:, 2:4, 2:4] = 1.0  # a small tag in the top-left corner
    return m


def object_map(images):
    def fn(x, t):
        return images.object_masks[: len(x)].float()  # uniform on the object (the disc)

    return fn


@pytest.fixture
def images():
    return images_for(TinyNet(), n=4, size=SIZE)


def test_mass_share_and_area_known_answers():
    maps = torch.zeros(1, 10, 10)
    maps[0, :5] = -2.0  # signs do not matter: mass is |map|
    top = rect_mask(10, 10, [0, 0, 1, 0.5])
    assert mass_share(maps, top.unsqueeze(0)) == pytest.approx([1.0])
    assert np.isnan(mass_share(torch.zeros(1, 10, 10), top.unsqueeze(0))[0])
    assert concentration_threshold(0.04, 0.25) == pytest.approx(0.04 + 0.25 * 0.96)


def test_bad_region_is_a_config_error():
    with pytest.raises(ConfigError, match="x0 < x1"):
        rect_mask(10, 10, [0.5, 0, 0.2, 1])


def test_corner_tag_is_flagged(tmp_path, images):
    inp = audit_input(TinyNet(), [FunctionExplainer(tag_map, "tagged")], images,
                      splits={"train": images, "test": images})
    result = shortcut(inp, tmp_path)
    assert result.summary["flagged"] is True
    assert set(result.summary["classes"]) == {"a", "b"}
    reasons = result.summary["methods"]["tagged"]["flagged_classes"]["a"]
    assert any(r.startswith("corner_top_left") for r in reasons)
    assert any(r.startswith("off_object") for r in reasons)
    assert (tmp_path / result.figures[0]).is_file()


def test_uniform_mass_on_the_object_is_not_flagged(tmp_path, images):
    inp = audit_input(TinyNet(), [FunctionExplainer(object_map(images), "clean")], images,
                      splits={"train": images, "test": images})
    result = shortcut(inp, tmp_path)
    assert result.summary["flagged"] is False and result.summary["classes"] == []
    off = [r for r in result.rows if r["region"] == "off_object"]
    assert all(r["share"] == 0.0 for r in off)


def test_train_only_tag_is_caught_by_the_train_test_contrast(tmp_path, images):
    """Moderate tag mass on training images only: below the concentration threshold, but
    clearly more than on test images, where the tag is absent."""
    train = images.subset([0, 1, 2, 3])
    test = images_for(TinyNet(), n=4, size=SIZE, seed=1)
    train.ids = [f"train{i}" for i in range(4)]

    def fn(x, t):
        m = test.object_masks[: len(x)].float().clone()
        for i in range(len(x)):
            if any(torch.equal(x[i], tx) for tx in train.x):
                m[i, 2:4, 2:4] = 8.0  # tagged training images
        return m

    inp = audit_input(TinyNet(), [FunctionExplainer(fn, "m")], images, splits={"train": train, "test": test})
    result = shortcut(inp, tmp_path, margin=0.5)
    reasons = result.summary["methods"]["m"]["flagged_classes"]
    assert result.summary["flagged"] is True
    assert all("train-only" in r for rs in reasons.values() for r in rs)


def test_user_regions_are_screened(tmp_path, images):
    inp = audit_input(TinyNet(), [FunctionExplainer(tag_map, "tagged")], images,
                      regions={"logo": [0.0, 0.0, 0.25, 0.25]})
    result = shortcut(inp, tmp_path)
    shares = [r["share"] for r in result.rows if r["region"] == "region_logo"]
    assert shares == pytest.approx([1.0] * 4)
    assert "note" in result.summary  # no training images: said so
