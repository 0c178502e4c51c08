"""Fuzzing a run folder from elsewhere: whatever its files say or are, reading it back (the
report, the model loader) ends in a report or one clear error — never a traceback, a hang, a
file opened outside the folder, or code the folder names."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.browser.synthetic_run import write_run
from xaudit.errors import XauditError

CALLED: list[str] = []  # the canary factory appends here: a folder made xaudit run its code
OPENED: list[str] = []
_RECORDING = [False]


def canary(**_kw):
    CALLED.append("canary")
    raise RuntimeError("the canary factory ran")


def _audit(event: str, args: tuple) -> None:
    if _RECORDING[0] and event == "open" and isinstance(args[0], str | bytes | os.PathLike):
        OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # cannot be removed; records only while a test example runs

CANARY = f"{__name__}:canary"
HOSTILE_VALUES = [None, -1, 0, 1e308, float("nan"), "", "x" * 5000, [], {}, "../../outside.txt",
                  "/dev/zero", CANARY, {"source": "python", "module": CANARY}]


@pytest.fixture(scope="module")
def pristine():
    root = Path(tempfile.mkdtemp(prefix="xaudit-fuzz-"))
    run = write_run(root / "run", n_test=6)
    (root / "outside.txt").write_text("SECRET-OUTSIDE")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _files(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*")
                  if p.is_file() and "data" not in p.relative_to(run).parts[:1])


def _json_paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _json_paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _json_paths(v, (*prefix, i))


def _set(value, path, new):
    if not path:
        return new
    node = value
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = new
    return value


def mutate(run: Path, outside: Path, kind: str, pick: int, data: bytes, value) -> str:
    files = _files(run)
    rel = files[pick % len(files)]
    path = run / rel
    if kind == "truncate":
        path.write_bytes(path.read_bytes()[: pick % 64])
    elif kind == "garbage":
        path.write_bytes(data)
    elif kind in ("link_out", "fifo", "folder", "delete"):
        path.unlink()
        if kind == "link_out":
            path.symlink_to(outside)
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "folder":
            path.mkdir()
    elif kind == "json" and path.suffix == ".json":
        try:
            doc = json.loads(path.read_text())
        except ValueError:
            return rel
        paths = list(_json_paths(doc))
        path.write_text(json.dumps(_set(doc, paths[pick % len(paths)], value)))
    elif kind == "factory":  # the folder's own recipe and model.json name a Python factory
        for name, text in (("recipe.yaml", f"name: x\nmodel:\n  source: python\n  module: '{CANARY}'\n"),
                           ("model/model.json", json.dumps({"source": "python", "module": CANARY,
                                                            "classes": ["a", "b"]}))):
            if (run / name).is_file() and not (run / name).is_symlink():  # not a FIFO made before
                (run / name).write_text(text)
    return rel


class Hang(Exception):
    pass


def _alarm(_signum, _frame):
    raise Hang()


mutation = st.tuples(
    st.sampled_from(["truncate", "garbage", "link_out", "fifo", "folder", "delete", "json",
                     "factory"]),
    st.integers(0, 10_000), st.binary(max_size=300), st.sampled_from(HOSTILE_VALUES))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(mutation, min_size=1, max_size=3))
def test_a_mutated_run_folder_gives_a_report_or_one_clear_error(pristine, mutations, tmp_path_factory):
    from xaudit.models.classifier import Classifier
    from xaudit.report import render_report

    work = tmp_path_factory.mktemp("case")
    run = work / "run"
    shutil.copytree(pristine / "run", run, symlinks=True)
    outside = pristine / "outside.txt"
    done = [mutate(run, outside, *m) for m in mutations]
    CALLED.clear()
    OPENED.clear()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(30)
    _RECORDING[0] = True
    try:
        for read in (lambda: render_report(run), lambda: Classifier.from_run(run / "model")):
            try:
                read()
            except XauditError as err:
                assert "\n" not in str(err).strip() or len(str(err)) < 2000, (done, err)
    except Hang:
        pytest.fail(f"reading the folder hung after {done}")
    finally:
        _RECORDING[0] = False
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert not CALLED, f"code named by the folder ran after {done}"
    leaked = [p for p in OPENED if Path(p).resolve() == outside.resolve()]
    assert not leaked, f"a file outside the folder was opened after {done}"
    report = run / "report.html"
    if report.is_file() and not report.is_symlink():
        assert "SECRET-OUTSIDE" not in report.read_text(errors="replace"), done


def test_a_damaged_table_is_named_with_its_line(tmp_path):
    from xaudit.run import read_csv

    path = tmp_path / "t.csv"
    path.write_text("a,b,c\n1,2,3\n4,5\n")
    with pytest.raises(XauditError, match=r"t.csv: line 3 has 2 fields where the header names 3"):
        read_csv(path)
    path.write_text("a,b\n1,2,3,4\n")
    with pytest.raises(XauditError, match=r"line 2 has 4 fields where the header names 2"):
        read_csv(path)
    path.write_text("a,b\n1,2\n")
    assert read_csv(path) == [{"a": "1", "b": "2"}]
