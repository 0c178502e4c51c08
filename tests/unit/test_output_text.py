"""Text that leaves xaudit: CSV cells a spreadsheet would run, console lines from file names."""

from __future__ import annotations

import csv
import io

from xaudit.run import csv_text, read_csv, write_csv
from xaudit.safety import one_line

TRICKY = ["=HYPERLINK(\"http://x\")", "+1", "-cmd", "@SUM(A1)", "\tx", "'quoted", "plain", "a=b", ""]


def test_formula_cells_are_escaped_and_read_back_exactly(tmp_path):
    rows = [{"name": t, "value": -0.5, "n": -3} for t in TRICKY]
    text = csv_text(rows, ["name", "value", "n"])
    cells = [row[0] for row in csv.reader(io.StringIO(text))][1:]  # as a spreadsheet sees them
    assert cells == ["'" + t if t[:1] in ("=", "+", "-", "@", "\t", "'") else t for t in TRICKY]
    assert text.splitlines()[2] == "'+1,-0.5,-3"
    path = tmp_path / "t.csv"
    write_csv(path, rows, ["name", "value", "n"])
    assert [r["name"] for r in read_csv(path)] == TRICKY
    assert {r["value"] for r in read_csv(path)} == {"-0.5"}  # numbers are never escaped


def test_class_names_as_header_cells_are_escaped_too(tmp_path):
    path = tmp_path / "cm.csv"
    write_csv(path, [{"true": "=x", "=x": 1, "ok": 0}], ["true", "=x", "ok"])
    assert path.read_text().splitlines()[0] == "true,'=x,ok"
    assert read_csv(path) == [{"true": "=x", "=x": "1", "ok": "0"}]


def test_one_line_escapes_newlines_and_bidi_controls():
    name = "photo\u202egnp.exe\nerror: fake line\r\x1b[31m"
    line = one_line(f"bad image {name}: truncated")
    assert "\n" not in line and "\r" not in line and "\u202e" not in line and "\x1b" not in line
    assert line == "bad image photo\\u202egnp.exe\\nerror: fake line\\r\\x1b[31m: truncated"
    assert one_line("rostfleck 猫 <em>") == "rostfleck 猫 <em>"
