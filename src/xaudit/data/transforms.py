"""Preprocessing from the model's weights metadata; images decoded once per process.

Images are decoded, resized (shorter side to ``resize_size``) and centre-cropped to
``image_size`` once, and kept as uint8 C×H×W tensors in a bounded store. Augmentation
and normalisation work on those tensors, so no stage re-opens a file another stage of
the same process already decoded.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ..errors import DataError
from .base import Record
from .checks import image_digest
from .io import BadImageError, load_mask, load_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


_RESAMPLE = {
    "nearest": TF.InterpolationMode.NEAREST,
    "bilinear": TF.InterpolationMode.BILINEAR,
    "bicubic": TF.InterpolationMode.BICUBIC,
    "lanczos": TF.InterpolationMode.LANCZOS,
}
RESIZE_MODES = ("shorter", "square")


@dataclass(frozen=True)
class Preprocessing:
    """Resize (the shorter side, or the whole image to a square, to ``resize_size``), then
    centre-crop ``image_size``. ``square`` with ``resize_size == image_size`` keeps the whole
    image, as ViT image processors do."""

    image_size: int = 224
    resize_size: int = 256
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"  # nearest | bilinear | bicubic | lanczos
    resize: str = "shorter"  # shorter | square

    def __post_init__(self) -> None:
        if self.interpolation not in _RESAMPLE:
            raise ValueError(
                f"interpolation must be one of {', '.join(_RESAMPLE)}, got {self.interpolation!r}"
            )
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be shorter or square, got {self.resize!r}")

    def to_dict(self) -> dict:
        return {
            "image_size": self.image_size,
            "resize_size": self.resize_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "resize": self.resize,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(int(d["image_size"]), int(d["resize_size"]), tuple(d["mean"]), tuple(d["std"]),
                   d.get("interpolation", "bilinear"), d.get("resize", "shorter"))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or [0,1] float) N×C×H×W -> normalised float32."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def geometry(self, img: Image.Image, mode: TF.InterpolationMode) -> Image.Image:
        size = [self.image_size, self.image_size]
        if self.resize_size < self.image_size:  # nothing to crop: fit instead of padding
            return TF.resize(img, size, interpolation=mode)
        first = [self.resize_size] if self.resize == "shorter" else [self.resize_size] * 2
        return TF.center_crop(TF.resize(img, first, interpolation=mode), size)

    def image_tensor(self, img: Image.Image) -> torch.Tensor:
        img = self.geometry(img, _RESAMPLE[self.interpolation])
        arr = np.asarray(img, dtype=np.uint8)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()

    def mask_tensor(self, mask: np.ndarray) -> torch.Tensor:
        """A mask (already checked against its image's size) to the image's geometry."""
        img = Image.fromarray(mask.astype(np.uint8) * 255)
        img = self.geometry(img, TF.InterpolationMode.NEAREST)
        return torch.from_numpy(np.asarray(img) > 127)


def preprocessing_from(weights_transforms: object | None) -> Preprocessing:
    """Preprocessing from torchvision weights' ``transforms()`` (ImageNet's 224/256 without)."""
    if weights_transforms is None:
        return Preprocessing()
    t = weights_transforms
    mode = getattr(t, "interpolation", None)
    return Preprocessing(
        image_size=int(_first(getattr(t, "crop_size", 224))),
        resize_size=int(_first(getattr(t, "resize_size", 256))),
        mean=tuple(getattr(t, "mean", IMAGENET_MEAN)),
        std=tuple(getattr(t, "std", IMAGENET_STD)),
        interpolation=getattr(mode, "value", "bilinear"),
    )


def _first(value):
    return value[0] if isinstance(value, (list, tuple)) else value


@dataclass
class Decoded:
    image: torch.Tensor  # uint8 C×H×W
    mask: torch.Tensor | None = None  # bool H×W
    object_mask: torch.Tensor | None = None


class DecodedStore:
    """Decoded, preprocessed records of one process, bounded by ``max_bytes`` (LRU)."""

    def __init__(self, pre: Preprocessing, max_pixels: int | None = None, max_bytes: int = 2 << 30):
        self.pre = pre
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, Decoded] = OrderedDict()
        self._bytes = 0
        self.digests: dict[str, str] = {}  # id -> content hash of the decoded image (leakage check)

    def decode(self, record: Record) -> Decoded:
        img = load_rgb(record.image, self.max_pixels, name=record.source or record.id)
        self.digests[record.id] = image_digest(img)
        size = img.size
        item = Decoded(self.pre.image_tensor(img))
        name = record.source or record.id
        if record.mask is not None:
            item.mask = self.pre.mask_tensor(_load_mask(record.mask, name, size))
        if record.object_mask is not None:
            item.object_mask = self.pre.mask_tensor(_load_mask(record.object_mask, name, size))
        return item

    def get(self, record: Record) -> Decoded:
        item = self._items.get(record.id)
        if item is not None:
            self._items.move_to_end(record.id)
            return item
        item = self.decode(record)
        self._put(record.id, item)
        return item

    def _put(self, key: str, item: Decoded) -> None:
        self._items[key] = item
        self._bytes += item.image.numel()
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.image.numel()

    def prepare(self, records: list[Record], workers: int = 2) -> tuple[list[Record], list[dict]]:
        """Decode every record once; return the usable ones and the skipped (file, reason)."""
        todo = [r for r in records if r.id not in self._items]
        results: dict[str, Decoded | BadImageError] = {}

        def work(rec: Record):
            try:
                return rec.id, self.decode(rec)
            except BadImageError as err:
                return rec.id, err

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for rid, res in pool.map(work, todo):
                results[rid] = res
        good, skipped = [], []
        for rec in records:
            res = results.get(rec.id)
            if isinstance(res, BadImageError):
                file = res.source if isinstance(res, BadMaskError) else rec.source or rec.id
                skipped.append({"file": file, "reason": res.reason})
                continue
            if res is not None:
                self._put(rec.id, res)
            good.append(rec)
        return good, skipped

    def batch(self, records: Sequence[Record]) -> torch.Tensor:
        return torch.stack([self.get(r).image for r in records])

    def masks(self, records: Sequence[Record], kind: str = "mask", partial: bool = False) -> torch.Tensor | None:
        """N×H×W masks; None if any is missing, or with ``partial`` if all are (missing ones empty)."""
        items = [getattr(self.get(r), kind) for r in records]
        present = [m for m in items if m is not None]
        if not present or (len(present) < len(items) and not partial):
            return None
        blank = torch.zeros_like(present[0])
        return torch.stack([blank if m is None else m for m in items])

    def mask_missing(self, records: Sequence[Record], kind: str = "mask") -> torch.Tensor:
        """(N,) bool: which records have no mask of ``kind``."""
        return torch.tensor([getattr(self.get(r), kind) is None for r in records], dtype=torch.bool)


class BadMaskError(BadImageError):
    """The mask of an image cannot be used; its row in skipped.csv names the mask file."""


def _load_mask(source, image_name: str, size: tuple[int, int]):
    """``load_mask``, its failures named after the mask file and said to be the mask's."""
    try:
        return load_mask(source, image_name, size=size)
    except BadMaskError:
        raise
    except BadImageError as err:
        file = str(source) if isinstance(source, (str, Path)) else f"mask of {image_name}"
        reason = err.reason if err.reason.startswith("mask") else f"mask: {err.reason}"
        raise BadMaskError(file, reason) from None


def build_augment(cfg, image_size: int) -> v2.Transform | None:
    """Augmentation on uint8 tensors (the recipe's ``train.augment``); None when all off."""
    ops: list[v2.Transform] = []
    if cfg.random_resized_crop:
        ops.append(v2.RandomResizedCrop(image_size, scale=(cfg.crop_scale_min, 1.0), antialias=True))
    if cfg.hflip:
        ops.append(v2.RandomHorizontalFlip())
    if cfg.vflip:
        ops.append(v2.RandomVerticalFlip())
    if cfg.rotation > 0:
        ops.append(v2.RandomRotation(cfg.rotation))
    if cfg.color_jitter > 0:
        j = cfg.color_jitter
        ops.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j))
    return v2.Compose(ops) if ops else None


def augment_batch(aug: v2.Transform, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Apply ``aug`` per image with randomness drawn from ``generator`` (no global RNG leaks)."""
    seeds = torch.randint(0, 2**31 - 1, (len(images),), generator=generator).tolist()
    out = []
    with torch.random.fork_rng(devices=[]):
        for img, seed in zip(images, seeds, strict=True):
            torch.manual_seed(seed)
            out.append(aug(img))
    return torch.stack(out)


def to_pil(image: torch.Tensor) -> Image.Image:
    return TF.to_pil_image(image)


def require_records(records: list[Record], what: str) -> None:
    if not records:
        raise DataError(f"no usable images left in {what} (see skipped.csv for the reasons)")
