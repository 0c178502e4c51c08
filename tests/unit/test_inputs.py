"""Images given to the library are checked like a recipe's images (through xaudit.explain)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import xaudit
from xaudit.errors import DataError


@pytest.fixture(scope="module")
def clf():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                           nn.Linear(4, 2))
    return xaudit.Classifier.from_module(module, ["a", "b"], image_size=8)


def test_nan_or_infinite_pixels_are_refused_with_the_image_index(clf):
    images = torch.rand(4, 3, 8, 8)
    images[2, 1, 3, 3] = float("nan")
    with pytest.raises(DataError, match=r"^images: image 2 has NaN or infinite pixel values "
                                        r"\(allowed: finite values in \[0, 1\]\)$"):
        xaudit.explain(clf, images, ["saliency"])
    images[0, 0, 0, 0] = float("inf")
    with pytest.raises(DataError, match=r"^images: image 0, 2 has NaN"):
        xaudit.explain(clf, images, ["saliency"])
    listed = [torch.rand(3, 8, 8), torch.rand(3, 8, 8)]
    listed[1][0, 0, 0] = float("-inf")
    with pytest.raises(DataError, match=r"^images: image 1 has NaN or infinite"):
        xaudit.explain(clf, listed, ["saliency"])


@pytest.mark.parametrize(("images", "message"), [
    (torch.empty(0, 3, 8, 8), r"^images: an empty tensor \(shape \(0, 3, 8, 8\)\); pass at least one image"),
    (torch.empty(3, 0, 8), r"^images: an empty tensor \(shape \(1, 3, 0, 8\)\)"),
    ([], r"^images: an empty list; pass at least one image$"),
    ((), r"^images: an empty tuple; pass at least one image$"),
    ([torch.rand(2, 3, 8, 8)], r"^images: image 0 must be a 3×H×W tensor, got \(2, 3, 8, 8\)$"),
], ids=["empty-batch", "zero-size-image", "empty-list", "empty-tuple", "batch-in-a-list"])
def test_empty_inputs_are_refused_with_a_clear_message(clf, images, message):
    with pytest.raises(DataError, match=message):
        xaudit.explain(clf, images, ["saliency"])


def test_finite_pixels_still_explain(clf):
    maps = xaudit.explain(clf, torch.rand(2, 3, 8, 8), ["saliency"])
    assert len(maps.ids) == 2


def test_an_audit_folder_holding_a_fifo_is_one_error_naming_it_not_a_hang(clf, tmp_path):
    import os

    from xaudit.errors import XauditError

    (tmp_path / "tables").mkdir()
    fifo = tmp_path / "tables" / "left_there.csv"
    os.mkfifo(fifo)
    with pytest.raises(XauditError, match=rf"^{fifo}: not a regular file \(a FIFO\)"):
        xaudit.audit(clf, torch.rand(2, 3, 8, 8), [0, 1], ["saliency"], audits=["correctness"],
                     out=tmp_path, controls=False)
