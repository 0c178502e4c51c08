"""The run directory: the single artifact of a run.

Layout (``runs/<name>/``)::

    recipe.yaml          the resolved recipe
    manifest.json        finished stages with the fingerprint of what they depended on
    model/               model.safetensors + model.json (class names, preprocessing)
    tables/*.csv         history, predictions, metrics, confusion matrix, audits
    maps/<method>/       attribution maps in chunks + index.json
    figures/*.png
    summary.json
    report.html

Every file is written atomically (temporary file in the same folder, then rename), so a
killed run never leaves a half-written artifact behind.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import stat
import tempfile
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from .errors import XauditError
from .yaml_safe import MAX_BYTES as RECIPE_MAX_BYTES

STAGES = ("train", "evaluate", "explain", "audit", "report")
# What each stage reads: the stages whose results it uses, and its recipe keys (a section or
# a dotted key). The audit draws its own pool from the predictions, so it depends on the
# methods, the target and the engine's settings (it computes maps as the explain stage does,
# and reuses the stored ones) but not on which images the explain stage shows, nor on
# figures; the explain stage draws report.max_figures figures itself.
STAGE_INPUTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "train": ((), ("seed", "device", "data", "model", "train")),
    "evaluate": (("train",), ("evaluate",)),
    "explain": (("evaluate",), ("explain", "report.max_figures")),
    "audit": (("evaluate",), ("audit", "explain.methods", "explain.target", "explain.precision",
                              "explain.tolerance", "explain.adaptive_steps",
                              "explain.memory_budget_mb")),
    "report": (("explain", "audit"), ("report",)),
}

def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_NOT_ALLOWED = (errno.EACCES, errno.EPERM, errno.EROFS)


def output_error(path: str | Path, err: BaseException, action: str = "write") -> XauditError:
    """One line for a failed write: the path, the reason, and what to do about it."""
    code = getattr(err, "errno", None)
    text = str(err)
    if code in _NO_SPACE or "No space left" in text or "StorageFull" in text:
        return XauditError(
            f"cannot {action} {path}: no space left on the device",
            hint="free some space (or set output_dir to another disk) and run the same command "
            "again: finished stages are kept",
        )
    if code in _NOT_ALLOWED:
        return XauditError(
            f"cannot {action} {path}: {getattr(err, 'strerror', None) or text} (the folder is not writable)",
            hint="make the folder writable or set output_dir to another folder",
        )
    reason = getattr(err, "strerror", None) or f"{type(err).__name__}: {text}"
    return XauditError(f"cannot {action} {path}: {reason}")


def file_sha256(path: str | Path, into=None) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks; with ``into`` (a hashlib object), the
    bytes are added to it and its digest so far returned."""
    h = into if into is not None else hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    On any failure (a full disk included) the temporary file is removed and ``path`` is left
    as it was: the previous version, or nothing.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise output_error(path.parent, err, "create output folder") from None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise output_error(path.parent, err, "write to output folder") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600 (and writers such as safetensors may re-create the file):
        # artifacts are ordinary files, so the mode is set after the write, from the umask.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except OSError as err:
        raise output_error(path, err) from None
    except Exception as err:
        if "No space left" in str(err) or "StorageFull" in str(err):  # e.g. safetensors' own error
            raise output_error(path, err) from None
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and flush it to the disk."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        _write_file(tmp, data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# Files read back from a run or model folder: JSON and CSV are small, a map chunk holds a
# few dozen images' maps; a model's weights are bounded apart (MAX_WEIGHTS_BYTES).
MAX_READ_BYTES = 256 * 2**20
MAX_WEIGHTS_BYTES = 64 * 2**30
_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
          (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))


def checked_file(path: str | Path, root: str | Path | None = None, max_bytes: int = MAX_READ_BYTES,
                 kind: type[XauditError] = XauditError) -> Path:
    """``path`` resolved, once it is known to be a file a run or model folder (``root``,
    default the file's own folder) holds: inside ``root`` (no link out, no ``..``), a regular
    file (a FIFO would block its reader, a device never end) of at most ``max_bytes``.
    Every refusal names the file. ``read_inside`` reads it; a library that opens files by
    name itself (safetensors' ``load_file``) gets the checked path."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    try:
        real = path.resolve(strict=True)
        inside = real.is_relative_to(root.resolve(strict=True))
        info = real.stat()
    except FileNotFoundError:
        raise kind(f"{path}: file not found") from None
    except (OSError, RuntimeError) as err:  # a link loop, a path too long, no permission
        raise kind(f"{path}: cannot read ({getattr(err, 'strerror', None) or type(err).__name__})") from None
    if not inside:
        raise kind(f"{path}: leads outside {root} (a symbolic link or '..'); xaudit reads only "
                   "the folder's own files")
    _check_regular(path, info, max_bytes, kind)
    return real


def _check_regular(path: Path, info: os.stat_result, max_bytes: int, kind: type[XauditError]) -> None:
    if not stat.S_ISREG(info.st_mode):
        what = next((w for test, w in _KINDS if test(info.st_mode)), "a special file")
        raise kind(f"{path}: not a regular file ({what}); xaudit reads only regular files here")
    if info.st_size > max_bytes:
        raise kind(f"{path}: {info.st_size:,} bytes, more than the {max_bytes:,} allowed for this file")


def read_inside(path: str | Path, root: str | Path | None = None, max_bytes: int = MAX_READ_BYTES,
                kind: type[XauditError] = XauditError) -> bytes:
    """The bytes of a file of a run or model folder, checked as ``checked_file`` says: xaudit's
    one way to read such a file back."""
    real = checked_file(path, root, max_bytes, kind)
    try:
        # O_NONBLOCK and the second check: a FIFO swapped in after the first does not block
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_NOCTTY", 0))
    except OSError as err:
        raise kind(f"{path}: cannot read ({err.strerror or type(err).__name__})") from None
    try:
        _check_regular(Path(path), os.fstat(fd), max_bytes, kind)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(max_bytes + 1)
    except OSError as err:
        raise kind(f"{path}: cannot read ({err.strerror or type(err).__name__})") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # grew while read
        raise kind(f"{path}: more than the {max_bytes:,} bytes allowed for this file")
    return data


def read_json(path: str | Path, root: str | Path | None = None,
              kind: type[XauditError] = XauditError) -> Any:
    """A JSON file of a run folder (through ``read_inside``); a bad one names the file."""
    data = read_inside(path, root, kind=kind)
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise kind(f"{path}: not UTF-8 text") from None
    except ValueError as err:
        raise kind(f"{path}: not valid JSON ({err})") from None


def csv_text(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """The text ``write_csv`` writes: header, then one line per row (floats as ``repr``)."""
    columns = list(columns or (rows[0].keys() if rows else []))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="raise", lineterminator="\n")
    writer.writerow({c: _csv_value(c) for c in columns})  # the header: class names can be columns
    for row in rows:
        writer.writerow({k: _csv_value(row.get(k)) for k in columns})
    return buf.getvalue()


def write_csv(path: str | Path, rows: Sequence[dict], columns: Sequence[str] | None = None) -> None:
    atomic_write_text(path, csv_text(rows, columns))


# A spreadsheet runs a cell that starts with one of these as a formula; such text cells get
# a leading "'" (shown as text), which ``read_csv`` removes again. "'" itself is escaped too,
# so every text reads back exactly.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return "" if value is None else value


def _csv_unescape(cell: str | None) -> str | None:
    return cell[1:] if cell and cell.startswith("'") else cell


def read_csv(path: str | Path, root: str | Path | None = None) -> list[dict[str, str]]:
    try:
        text = read_inside(path, root).decode("utf-8")
    except UnicodeDecodeError:
        raise XauditError(f"{path}: not UTF-8 text") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    out = []
    try:
        for row in reader:
            # DictReader fills a short row with None and files a long one's rest under None:
            # a table xaudit wrote is rectangular, so either means the file was damaged.
            if None in row or None in row.values():
                given = (len(row) - 1 + len(row[None]) if None in row
                         else sum(v is not None for v in row.values()))
                raise XauditError(f"{path}: line {reader.line_num} has {given} fields where the "
                                  f"header names {len(reader.fieldnames or [])}; the table is damaged")
            out.append({_csv_unescape(k): _csv_unescape(v) for k, v in row.items()})
    except csv.Error as err:
        raise XauditError(f"{path}: not a readable table ({err})") from None
    return out


def fingerprint(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class RunDir:
    """Paths and the manifest of finished stages of one run."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # paths ---------------------------------------------------------------
    @property
    def recipe_path(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def tables(self) -> Path:
        return self.root / "tables"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def maps(self) -> Path:
        return self.root / "maps"

    @property
    def true_class_maps(self) -> Path:
        """Maps of the true class for wrongly predicted explained images, one folder a method."""
        return self.root / "maps_true_class"

    @property
    def audited_maps(self) -> Path:
        """The trained model's maps of the audited test images the explain stage did not
        explain, one folder a method: the report's explorer shows every audited image."""
        return self.root / "maps_audited"

    @property
    def top_losses_maps(self) -> Path:
        """One method's maps of the highest-loss test images that were not explained."""
        return self.root / "maps_top_losses"

    @property
    def summary_path(self) -> Path:
        return self.root / "summary.json"

    @property
    def report_path(self) -> Path:
        return self.root / "report.html"

    def table(self, name: str) -> Path:
        return self.tables / f"{name}.csv"

    def figure(self, name: str) -> Path:
        return self.figures / f"{name}.png"

    # creation --------------------------------------------------------------
    def create(self) -> RunDir:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise output_error(self.root, err, "create run folder") from None
        if not os.access(self.root, os.W_OK):
            raise XauditError(f"run folder {self.root} is not writable")
        return self

    def require(self) -> RunDir:
        if not self.recipe_path.exists() and not self.recipe_path.is_symlink():
            raise XauditError(
                f"{self.root} is not a run folder (no recipe.yaml). "
                "Create one with `xaudit run RECIPE`."
            )
        # the recipe is read by name later (and re-read by the report): checked here once
        checked_file(self.recipe_path, self.root, RECIPE_MAX_BYTES)
        return self

    # manifest --------------------------------------------------------------
    def manifest(self) -> dict:
        if not self.manifest_path.is_file():
            return {"stages": {}}
        return read_json(self.manifest_path)

    def stage_done(self, stage: str, fp: str) -> bool:
        entry = self.manifest()["stages"].get(stage)
        return bool(entry) and entry.get("fingerprint") == fp

    def mark_done(self, stage: str, fp: str, **info: Any) -> None:
        manifest = self.manifest()
        manifest["stages"][stage] = {"fingerprint": fp, "finished": time.time(), **info}
        write_json(self.manifest_path, manifest)

    def invalidate(self, stages: Iterable[str]) -> None:
        manifest = self.manifest()
        for stage in stages:
            manifest["stages"].pop(stage, None)
        write_json(self.manifest_path, manifest)

    # summary ---------------------------------------------------------------
    def summary(self) -> dict:
        return read_json(self.summary_path) if self.summary_path.is_file() else {}

    def update_summary(self, **sections: Any) -> dict:
        summary = self.summary()
        summary.update(sections)
        write_json(self.summary_path, summary)
        return summary

    def save_recipe(self, recipe_dict: dict) -> None:
        atomic_write_text(
            self.recipe_path, yaml.safe_dump(recipe_dict, sort_keys=False, allow_unicode=True)
        )


def _recipe_value(recipe_dict: dict, dotted: str) -> Any:
    node: Any = recipe_dict
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def stage_fingerprints(recipe_dict: dict) -> dict[str, str]:
    """Fingerprint per stage: the recipe keys it reads, chained with the stages it uses."""
    fps: dict[str, str] = {}
    for stage in STAGES:
        uses, keys = STAGE_INPUTS[stage]
        fps[stage] = fingerprint({
            "uses": {s: fps[s] for s in uses},
            "keys": {k: _recipe_value(recipe_dict, k) for k in keys},
        })
    return fps


def dependents(stage: str) -> list[str]:
    """``stage`` and every stage that uses its results, directly or not, in run order."""
    out = {stage}
    for s in STAGES:  # STAGES is in dependency order
        if any(u in out for u in STAGE_INPUTS[s][0]):
            out.add(s)
    return [s for s in STAGES if s in out]
