"""The data stage: a dataset's records decoded once, bad files skipped, the dataset tables."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from ..data.base import DatasetBundle, Record
from ..data.checks import cross_split_pairs, leakage_message
from ..data.coverage import check_empty_classes
from ..data.transforms import DecodedStore, Preprocessing, require_records
from ..errors import DataError, shown
from ..registry import did_you_mean
from ..run import RunDir, write_csv


def relabel_to(bundle: DatasetBundle, classes: list[str], what: str) -> DatasetBundle:
    """Labels become indices into a model's own classes (a model used as it is)."""
    lookup = {c.lower().replace("_", " "): i for i, c in enumerate(classes)}
    mapping = {}
    for i, name in enumerate(bundle.classes):
        key = name.lower().replace("_", " ")
        if key not in lookup:
            raise DataError(
                f"train.skip uses {what} as it is, so class folder {name!r} must be one of its "
                f"{len(classes)} classes.{did_you_mean(key, list(lookup))}"
            )
        mapping[i] = lookup[key]
    for records in bundle.splits.values():
        for r in records:
            r.label = mapping[r.label]
    bundle.info["original_classes"] = bundle.classes
    bundle.classes = list(classes)
    return bundle


def decode(bundle: DatasetBundle, pre: Preprocessing, data_cfg, need_train: bool,
           log: Callable[[str], None], skipped_csv: Path) -> DecodedStore:
    """Decode every split once; unusable files skipped (or fatal, per ``data.on_bad_image``);
    with training, a class left with no usable training image is an error or dropped
    (``data.on_empty_class``), before any model is built for the classes."""
    store = DecodedStore(pre, data_cfg.max_image_pixels)
    skipped = list(bundle.skipped)
    for split in ("train", "val", "test"):
        records = bundle.splits[split]
        if not records:
            continue
        log(f"decoding {len(records)} {split} images")
        good, bad = store.prepare(records, workers=2)
        if bad and data_cfg.on_bad_image == "fail":
            raise DataError(f"bad image {bad[0]['file']}: {bad[0]['reason']} (data.on_bad_image: fail)")
        bundle.splits[split] = good
        skipped += bad
    bundle.skipped = skipped
    if need_train:
        check_empty_classes(bundle, data_cfg.on_empty_class, skipped_csv)
    pairs = cross_split_pairs(
        {s: [(r.id, store.digests[r.id]) for r in rs] for s, rs in bundle.splits.items()}
    )
    bundle.info["leakage"] = {"pairs": len(pairs), "message": leakage_message(pairs)}
    if pairs:
        log(f"warning: {leakage_message(pairs)}")
    if need_train:
        require_records(bundle.splits["train"], "the train split")
    require_records(bundle.splits["test"], "the test split")
    for line in data_warnings(bundle, skipped_csv.name):
        log(f"warning: {line}")
    return store


def data_warnings(bundle: DatasetBundle, skipped_name: str) -> list[str]:
    """What a user must hear before trusting the numbers: files skipped, classes dropped,
    classes that no validation or test image represents."""
    lines = []
    if bundle.skipped:
        reasons = Counter(str(r["reason"]) for r in bundle.skipped).most_common()
        listed = "; ".join(f"{n} {shown(reason)}" for reason, n in reasons[:3])
        more = f"; {len(reasons) - 3} other reasons" if len(reasons) > 3 else ""
        lines.append(f"{len(bundle.skipped)} file(s) skipped ({listed}{more}): one row each in "
                     f"tables/{skipped_name}")
    dropped = bundle.info.get("dropped_classes")
    if dropped:
        lines.append(dropped["message"])
    n = len(bundle.classes)
    for split, effect in (("val", "validation loss and early stopping leave it out"),
                          ("test", "test metrics leave it out")):
        if split == "val" and not bundle.splits["val"]:
            continue  # no validation split at all is a choice, not a gap
        present = {r.label for r in bundle.splits[split]}
        missing = [c for i, c in enumerate(bundle.classes) if i not in present]
        if missing:
            names = ", ".join(repr(shown(c)) for c in missing[:5]) + (" …" if len(missing) > 5 else "")
            tail = f" (macro F1 over {n - len(missing)} of {n} classes)" if split == "test" else ""
            lines.append(f"{len(missing)} class(es) with no {split} image: {names}; {effect}{tail}")
    return lines


def write_dataset_tables(run: RunDir, bundle: DatasetBundle, store: DecodedStore, source: str,
                         relabelled: bool) -> None:
    from ..report import figures

    counts = bundle.counts() if not relabelled else {
        s: _counts_by_name(rs, bundle.classes) for s, rs in bundle.splits.items()
    }
    rows = [{"split": s, "class": c, "n": n} for s, per in counts.items() for c, n in per.items()]
    write_csv(run.table("dataset"), rows, ["split", "class", "n"])
    write_csv(run.table("skipped"), bundle.skipped, ["file", "reason"])
    run.update_summary(
        dataset={
            "name": bundle.name,
            "source": source,
            "classes": bundle.info.get("original_classes", bundle.classes),
            "n": bundle.sizes(),
            "per_class": counts,
            "skipped": len(bundle.skipped),
            "has_masks": bundle.has_masks,
            "info": {k: v for k, v in bundle.info.items() if k != "original_classes"},
        }
    )
    examples = _examples(bundle, per_class=4)
    if examples:
        images = [store.get(r).image.permute(1, 2, 0).numpy() for r in examples]
        titles = [bundle.classes[r.label] for r in examples]
        figures.dataset_examples(images, titles, run.figure("dataset_examples"))


def _counts_by_name(records: list[Record], classes: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        out[classes[r.label]] = out.get(classes[r.label], 0) + 1
    return out


def _examples(bundle: DatasetBundle, per_class: int) -> list[Record]:
    out: list[Record] = []
    records = bundle.splits["train"] or bundle.splits["test"]
    seen: dict[int, int] = {}
    for r in records:
        if seen.get(r.label, 0) < per_class:
            out.append(r)
            seen[r.label] = seen.get(r.label, 0) + 1
        if len(out) >= 24:
            break
    return out
