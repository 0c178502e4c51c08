"""run.read_inside: the one reader of files a run or model folder holds."""

from __future__ import annotations

import os
import re

import pytest

from xaudit.errors import ModelError, XauditError
from xaudit.run import checked_file, read_csv, read_inside, read_json


def test_the_folders_own_files_read_and_a_link_inside_it_is_followed(tmp_path):
    (tmp_path / "a.json").write_text('{"x": 1}')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.json").symlink_to(tmp_path / "a.json")
    assert read_inside(tmp_path / "a.json") == b'{"x": 1}'
    assert read_json(tmp_path / "sub" / "b.json", tmp_path) == {"x": 1}
    assert checked_file(tmp_path / "sub" / "b.json", tmp_path) == (tmp_path / "a.json").resolve()


def test_special_files_links_out_and_large_files_are_refused_naming_the_file(tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # opened, it would block until a writer came
    with pytest.raises(XauditError, match=rf"^{fifo}: not a regular file \(a FIFO\)"):
        read_inside(fifo)
    for target in ("/dev/zero", "/etc/passwd"):
        link = tmp_path / f"link{target.replace('/', '_')}"
        link.symlink_to(target)
        with pytest.raises(XauditError, match=rf"^{link}: leads outside {tmp_path} \(a symbolic link"):
            read_inside(link)
    with pytest.raises(XauditError, match=r"^/dev/zero: not a regular file \(a device\)"):
        read_inside("/dev/zero", "/dev")
    (tmp_path / "x").mkdir()
    (tmp_path / "y").write_text("{")
    with pytest.raises(XauditError, match=rf"^{re.escape(str(tmp_path / 'x' / '..' / 'y'))}: leads outside"):
        read_inside(tmp_path / "x" / ".." / "y", tmp_path / "x")
    with pytest.raises(XauditError, match=rf"^{tmp_path}: not a regular file \(a folder\)"):
        read_inside(tmp_path, tmp_path)
    (tmp_path / "big.csv").write_bytes(b"a\n" * 600)
    with pytest.raises(ModelError, match=r"big\.csv: 1,200 bytes, more than the 1,000 allowed"):
        read_inside(tmp_path / "big.csv", max_bytes=1000, kind=ModelError)
    with pytest.raises(XauditError, match=r"missing\.csv: file not found"):
        read_csv(tmp_path / "missing.csv")
    with pytest.raises(XauditError, match=r"y: not valid JSON"):
        read_json(tmp_path / "y")
