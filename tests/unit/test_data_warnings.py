"""What the console says about the data before anyone trusts the numbers."""

from __future__ import annotations

import json

from xaudit.cli_output import closing_block
from xaudit.data.base import DatasetBundle, Record
from xaudit.stages.data import data_warnings


def bundle(train, val, test, skipped=(), classes=("a", "b", "c")) -> DatasetBundle:
    def recs(labels, split):
        return [Record(f"{split}{i}", label, b"") for i, label in enumerate(labels)]

    return DatasetBundle("t", list(classes), {"train": recs(train, "tr"), "val": recs(val, "va"),
                                              "test": recs(test, "te")}, skipped=list(skipped))


def test_a_complete_dataset_gets_no_warning():
    assert data_warnings(bundle([0, 1, 2], [0, 1, 2], [0, 1, 2]), "skipped.csv") == []


def test_skipped_files_are_counted_by_reason_and_point_at_their_table():
    skipped = [{"file": f"x{i}", "reason": "truncated image data"} for i in range(3)]
    skipped.append({"file": "y", "reason": "not an image (text content)"})
    (line,) = data_warnings(bundle([0, 1, 2], [0, 1, 2], [0, 1, 2], skipped), "skipped.csv")
    assert line == ("4 file(s) skipped (3 truncated image data; 1 not an image (text content)): "
                    "one row each in tables/skipped.csv")


def test_a_class_without_test_or_val_images_is_named_with_what_it_changes():
    lines = data_warnings(bundle([0, 1, 2], [0, 1], [0, 1]), "skipped.csv")
    assert lines == [
        "1 class(es) with no val image: 'c'; validation loss and early stopping leave it out",
        "1 class(es) with no test image: 'c'; test metrics leave it out (macro F1 over 2 of 3 classes)",
    ]
    assert data_warnings(bundle([0, 1, 2], [], [0, 1, 2]), "s.csv") == []  # no val split at all


def test_dropped_classes_are_said(tmp_path):
    b = bundle([0, 1], [0, 1], [0, 1], classes=("a", "b"))
    b.info["dropped_classes"] = {"classes": ["c"], "message": "dropped 1 class(es) ...: c"}
    assert data_warnings(b, "skipped.csv") == ["dropped 1 class(es) ...: c"]


def test_the_closing_block_says_over_how_many_classes_macro_f1_averages(tmp_path):
    summary = {"name": "r", "dataset": {"classes": ["a", "b", "c"]},
               "test": {"accuracy": 0.5, "n": 4, "macro_f1": 0.4, "macro_f1_classes": 2}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert "macro F1 0.400 over 2 of 3 classes" in "\n".join(closing_block(tmp_path, 1.0))
    summary["test"]["macro_f1_classes"] = 3
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    text = "\n".join(closing_block(tmp_path, 1.0))
    assert "macro F1 0.400" in text and "over" not in text.split("macro F1")[1].split("\n")[0]
