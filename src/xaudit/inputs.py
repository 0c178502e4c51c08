"""Images as the library takes them: tensors, PIL images, file paths, a folder, or records.

Everything becomes one uint8 N×3×H×W batch in the classifier's geometry (resize and crop
as its preprocessing states), with an id per image and, where the input says, a label and
an evidence mask. Normalisation is xaudit's to do: float tensors must be pixels in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from .data.base import Record
from .data.io import IMAGE_EXTENSIONS, load_mask, load_rgb
from .data.transforms import Preprocessing
from .errors import DataError


@dataclass
class Batch:
    pixels: torch.Tensor  # uint8 N×3×H×W, the classifier's geometry
    ids: list[str]
    labels: list[str] | None = None  # class names, where the input carries them (a folder)
    masks: torch.Tensor | None = None  # bool N×H×W

    def __len__(self) -> int:
        return len(self.ids)


def as_batch(images: Any, pre: Preprocessing, masks: Any = None) -> Batch:
    """Bring ``images`` (and optional ``masks``) into the classifier's geometry."""
    labels = None
    if isinstance(images, (str, Path)) and Path(images).is_dir():
        images, labels = _folder(Path(images))
    if isinstance(images, torch.Tensor):
        pixels, ids = _tensor(images, pre), [f"image_{i:05d}" for i in range(len(images))]
    else:
        if isinstance(images, (str, Path, Image.Image, Record)):
            images = [images]
        if not isinstance(images, Sequence):
            raise DataError(f"images: expected tensors, PIL images, file paths, a folder or records, "
                            f"got {type(images).__name__}")
        if not images:
            raise DataError(f"images: an empty {type(images).__name__}; pass at least one image")
        pixels = torch.stack([_one(img, pre, i) for i, img in enumerate(images)])
        ids = [_id(img, i) for i, img in enumerate(images)]
    return Batch(pixels, ids, labels, _masks(masks, pre, len(ids)) if masks is not None else None)


def _tensor(t: torch.Tensor, pre: Preprocessing, first: int = 0) -> torch.Tensor:
    """``first``: the index of the tensor's first image among all the images given."""
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.dim() != 4 or t.shape[1] != 3:
        raise DataError(f"images: a tensor must be N×3×H×W (or 3×H×W), got {tuple(t.shape)}")
    if t.numel() == 0:
        raise DataError(f"images: an empty tensor (shape {tuple(t.shape)}); pass at least one "
                        "image of at least 1×1 pixels")
    if t.is_floating_point():
        # NaN passes every range check and turns into arbitrary pixels: refuse it by name
        bad = (~torch.isfinite(t)).flatten(1).any(1).nonzero().flatten().tolist()
        if bad:
            which = ", ".join(str(first + i) for i in bad[:5]) + (", …" if len(bad) > 5 else "")
            raise DataError(f"images: image {which} has NaN or infinite pixel values "
                            "(allowed: finite values in [0, 1])")
    if t.dtype != torch.uint8:
        lo, hi = float(t.min()), float(t.max())
        if lo < 0 or hi > 1:
            raise DataError(
                f"images: float tensors must hold pixels in [0, 1] (xaudit normalises itself); "
                f"got values in [{lo:.3g}, {hi:.3g}] — pass the images before normalisation"
            )
        t = (t * 255).round().to(torch.uint8)
    if tuple(t.shape[-2:]) == (pre.image_size, pre.image_size):
        return t.cpu()
    return torch.stack([pre.image_tensor(TF.to_pil_image(img)) for img in t.cpu()])


def _one(img: Any, pre: Preprocessing, i: int) -> torch.Tensor:
    if isinstance(img, Record):
        img = img.image
    if isinstance(img, Image.Image):
        return pre.image_tensor(img.convert("RGB"))
    if isinstance(img, (str, Path)):
        return pre.image_tensor(load_rgb(Path(img), name=str(img)))
    if isinstance(img, torch.Tensor):
        if not (img.dim() == 3 or (img.dim() == 4 and len(img) == 1)):  # one image of a list
            raise DataError(f"images: image {i} must be a 3×H×W tensor, got {tuple(img.shape)}")
        return _tensor(img, pre, i)[0]
    raise DataError(f"images: cannot read an image from {type(img).__name__}; allowed: tensors, "
                    "PIL images, file paths, a folder, records")


def _id(img: Any, i: int) -> str:
    if isinstance(img, Record):
        return img.id
    if isinstance(img, (str, Path)):
        return str(img)
    return f"image_{i:05d}"


def _folder(root: Path) -> tuple[list[Path], list[str] | None]:
    """Every image below ``root``; labels from the class folders when each image is in one."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"images: no image files under {root}")
    parents = {p.parent for p in files}
    labels = [p.parent.name for p in files] if root not in parents else None
    return files, labels


def _masks(masks: Any, pre: Preprocessing, n: int) -> torch.Tensor:
    if isinstance(masks, torch.Tensor):
        m = masks.bool()
        if m.dim() == 4:
            m = m[:, 0]
        if m.dim() != 3 or len(m) != n:
            raise DataError(f"masks: expected {n}×H×W, got {tuple(masks.shape)}")
        if tuple(m.shape[-2:]) != (pre.image_size, pre.image_size):
            m = torch.stack([pre.mask_tensor(x.numpy()) for x in m])
        return m
    if not isinstance(masks, Sequence) or len(masks) != n:
        raise DataError(f"masks: expected one mask per image ({n}), got {type(masks).__name__}")
    out = []
    for m in masks:
        arr = load_mask(Path(m), str(m)) if isinstance(m, (str, Path)) else torch.as_tensor(m).numpy()
        out.append(pre.mask_tensor(arr.astype(bool)))
    return torch.stack(out)
