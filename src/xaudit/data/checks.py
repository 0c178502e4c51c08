"""Dataset checks run before training: the same image in two splits (leakage)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from PIL import Image

from ..errors import XauditError
from .base import SPLITS, Record
from .io import BadImageError, load_rgb


def content_hash(record: Record, max_pixels: int | None = None, by: str = "pixels") -> str:
    """SHA-256 of the record's decoded RGB pixels (after EXIF rotation) and size.

    ``by="bytes"`` hashes the encoded file instead where the record has one (path or
    bytes): no decoding, but a re-saved or re-tagged copy is no longer recognised.
    """
    source = record.image
    if by == "bytes" and isinstance(source, (str, Path, bytes)):
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        return "bytes:" + hashlib.sha256(data).hexdigest()
    return image_digest(load_rgb(source, max_pixels, name=record.source or record.id))


def image_digest(img: Image.Image) -> str:
    """SHA-256 of a decoded RGB image's size and pixels: lets a stage that already decoded
    the images (the decoded-image store) feed ``cross_split_pairs`` without decoding again."""
    digest = hashlib.sha256(f"{img.size[0]}x{img.size[1]}:".encode())
    digest.update(img.tobytes())
    return "pixels:" + digest.hexdigest()


def find_duplicates(
    splits: dict[str, list[Record]],
    max_pixels: int | None = None,
    *,
    by: Literal["pixels", "bytes"] = "pixels",
) -> list[tuple[str, str]]:
    """Pairs of record ids in different splits whose images are identical.

    The first id of a pair is from the earlier split (train, val, test, then others by
    name). Unreadable images are left out: they are reported as skipped elsewhere. With the
    default ``by="pixels"`` every image is decoded once; a PNG and a BMP of the same pixels,
    or a photo stored rotated with an EXIF tag and the same photo stored upright, match.
    """
    if by not in ("pixels", "bytes"):
        raise XauditError(f"find_duplicates: by must be 'pixels' or 'bytes', got {by!r}")
    digests: dict[str, list[tuple[str, str]]] = {}
    for split, records in splits.items():
        for record in records:
            try:
                digests.setdefault(split, []).append(
                    (record.id, content_hash(record, max_pixels, by))
                )
            except (BadImageError, OSError):
                continue
    return cross_split_pairs(digests)


def cross_split_pairs(digests: dict[str, list[tuple[str, str]]]) -> list[tuple[str, str]]:
    """Pairs of ids with equal digests in different splits, from ``split -> [(id, digest)]``."""
    order = [s for s in SPLITS if s in digests] + sorted(s for s in digests if s not in SPLITS)
    groups: dict[str, list[tuple[int, str]]] = {}
    for rank, split in enumerate(order):
        for record_id, digest in digests[split]:
            groups.setdefault(digest, []).append((rank, record_id))
    pairs = []
    for members in groups.values():
        for i, (rank_a, id_a) in enumerate(members):
            pairs.extend((id_a, id_b) for rank_b, id_b in members[i + 1 :] if rank_b > rank_a)
    return pairs


def leakage_message(pairs: list[tuple[str, str]], limit: int = 5) -> str:
    """One line for the log and the report: how many images leak across splits, examples."""
    if not pairs:
        return "no image appears in more than one split"
    shown = ", ".join(f"{a} = {b}" for a, b in pairs[:limit])
    more = f" and {len(pairs) - limit} more" if len(pairs) > limit else ""
    return (
        f"{len(pairs)} image pair(s) appear in two splits (identical content), so test scores "
        f"overstate accuracy: {shown}{more}"
    )
