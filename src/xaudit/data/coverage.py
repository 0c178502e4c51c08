"""Checks that need the decoded dataset: classes left without usable images.

Unusable files are found only while decoding, so a class whose every file is corrupt still
passes the listing's empty-class check. A class with no training image would keep an output
the model never learns; it is an error, or with ``data.on_empty_class: drop`` it is removed
from the classes (labels renumbered) and the report says so.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError, shown
from .base import DatasetBundle


def empty_classes(bundle: DatasetBundle, splits: tuple[str, ...] = ("train",)) -> list[str]:
    """Classes with no record in any of ``splits``."""
    present = {r.label for s in splits for r in bundle.splits.get(s, [])}
    return [c for i, c in enumerate(bundle.classes) if i not in present]


def check_empty_classes(bundle: DatasetBundle, on_empty: str, skipped_csv: Path,
                        splits: tuple[str, ...] = ("train",)) -> list[str]:
    """Raise for (or drop) classes left without a usable image in ``splits``; return those dropped."""
    empty = empty_classes(bundle, splits)
    if not empty or len(empty) == len(bundle.classes):
        return []  # nothing usable at all: require_records says so for the whole split
    where = " or ".join(f"the {s} split" for s in splits)
    if on_empty != "drop" or len(empty) > len(bundle.classes) - 2:
        from ..run import write_csv

        write_csv(skipped_csv, bundle.skipped, ["file", "reason"])  # the rows the message points at
        extra = ("; dropping it would leave fewer than 2 classes" if on_empty == "drop" else
                 "; fix or remove those files, or set data.on_empty_class: drop")
        raise DataError(
            f"class {shown(empty[0])!r} has no usable image in {where} after decoding: its files were "
            f"refused (their rows are in {skipped_csv}){extra}"
        )
    keep = [i for i, c in enumerate(bundle.classes) if c not in empty]
    renumber = {old: new for new, old in enumerate(keep)}
    for split, records in bundle.splits.items():
        bundle.splits[split] = [r for r in records if r.label in renumber]
        for r in bundle.splits[split]:
            r.label = renumber[r.label]
    bundle.classes = [bundle.classes[i] for i in keep]
    bundle.info["dropped_classes"] = {
        "classes": empty,
        "message": f"dropped {len(empty)} class(es) with no usable image in {where} "
        f"(data.on_empty_class: drop): {', '.join(shown(c) for c in empty)}; see {skipped_csv.name}",
    }
    return empty

