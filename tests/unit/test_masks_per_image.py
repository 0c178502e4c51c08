"""Masks per image: a missing mask leaves out that image only; a broken mask has its own row."""

from __future__ import annotations

import numpy as np
import torch

from tests.conftest import write_png
from tests.helpers.audit_toys import GradientExplainer, TinyNet, audit_input, images_for
from xaudit.audit.localization import localization
from xaudit.data.base import Record
from xaudit.data.transforms import DecodedStore, Preprocessing

PRE = Preprocessing(16, 16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def records(tmp_path, with_mask: list[bool], broken: int | None = None) -> list[Record]:
    out = []
    for i, has in enumerate(with_mask):
        img = tmp_path / "img" / f"{i}.png"
        write_png(img, np.full((16, 16, 3), 40 * i, np.uint8))
        mask = None
        if has:
            mask = tmp_path / "mask" / f"{i}.png"
            m = np.zeros((16, 16), np.uint8)
            m[4:12, 4:12] = 255
            write_png(mask, m)
            if i == broken:
                mask.write_text("this is not a mask\n")
        out.append(Record(id=f"img{i}", image=img, label=i % 2, mask=mask, source=str(img)))
    return out


def test_store_masks_partial_fills_missing_and_flags_them(tmp_path):
    recs = records(tmp_path, [True, False, True])
    store = DecodedStore(PRE)
    good, bad = store.prepare(recs)
    assert len(good) == 3 and bad == []
    assert store.masks(recs) is None  # all-or-nothing, as object masks are used
    masks = store.masks(recs, partial=True)
    assert masks.shape == (3, 16, 16) and masks[0].any() and not masks[1].any()
    assert store.mask_missing(recs).tolist() == [False, True, False]
    assert store.masks(recs[1:2], partial=True) is None


def test_broken_mask_gets_a_row_naming_the_mask_file(tmp_path):
    recs = records(tmp_path, [True, True], broken=1)
    good, bad = DecodedStore(PRE).prepare(recs)
    assert [r.id for r in good] == ["img0"]
    assert bad == [{"file": str(tmp_path / "mask" / "1.png"), "reason": "mask: not an image (text content)"}]


def test_localization_leaves_out_images_without_a_mask_and_counts_them(tmp_path):
    model = TinyNet()
    images = images_for(model, n=6, size=16)
    images.labels = images.preds.clone()
    images.mask_missing = torch.tensor([False, True, False, True, False, False])
    images.masks[images.mask_missing] = False
    result = localization(audit_input(model, [GradientExplainer()], images), tmp_path)
    assert not result.summary.get("skipped")
    assert result.summary["images_without_mask"] == 2 and result.summary["n_images"] == 4
    assert {r["id"] for r in result.rows} == {"img0", "img2", "img4", "img5"}
    assert "2 of the 6 test images sampled have no mask file and are left out." in result.text
