"""Names and paths built from user data (class names, file names) that are safe to write.

Class names come from folder names, dataset metadata or label maps: they can hold spaces,
any Unicode, path separators, ``..`` or HTML. Output file names derived from them go through
``safe_name`` (one name) or ``unique_names`` (a list, made distinct); ``safe_join`` refuses
any path that would leave its root.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path

from .errors import XauditError

FALLBACK_NAME = "unnamed"
_MIN_LEN = 16  # room for a shortened stem and its hash
_HASH_LEN = 8
_RUNS = re.compile(r"_{2,}")
# Device names Windows refuses as file names, whatever the case or extension.
_WINDOWS_RESERVED = frozenset(
    ["con", "prn", "aux", "nul"]
    + [f"com{i}" for i in range(1, 10)]
    + [f"lpt{i}" for i in range(1, 10)]
)


def safe_name(text: str, max_len: int = 80) -> str:
    """A file-name stem for ``text``: Unicode letters, digits, ``_`` and ``-`` only.

    Deterministic and idempotent; never empty, never a path (no separators, no dots), never
    starting with ``-``, at most ``max_len`` characters. Names longer than that are shortened
    and end in a hash of the full name, so different long names stay different. Different
    names can still map to one stem ("a/b", "a b"): use ``unique_names`` for a set of names.
    """
    if max_len < _MIN_LEN:
        raise XauditError(f"safe_name: max_len must be at least {_MIN_LEN}, got {max_len}")
    text = unicodedata.normalize("NFKC", str(text))
    name = _RUNS.sub("_", "".join(ch if _allowed(ch) else "_" for ch in text)).strip("_-")
    if not name:
        return FALLBACK_NAME
    if name.casefold() in _WINDOWS_RESERVED:
        name += "_file"
    if len(name) > max_len:
        digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:_HASH_LEN]
        name = f"{name[: max_len - _HASH_LEN - 1].rstrip('_-')}-{digest}"
    return name


def _allowed(ch: str) -> bool:
    """Letters and digits of any script, their combining marks (Devanagari, Thai...), _ and -.

    Everything else goes: separators, dots, spaces, quotes, angle brackets, control and
    format characters (a right-to-left override can disguise a name's ending).
    """
    return ch.isalnum() or ch in "_-" or unicodedata.category(ch) in ("Mn", "Mc")


def unique_names(texts: list[str], max_len: int = 80) -> list[str]:
    """``safe_name`` of each text, made distinct (ignoring case) by ``-2``, ``-3``... suffixes.

    The first text to claim a stem keeps it; a later text whose own stem is free keeps its
    own, so adding a name to the list does not rename the others before it.
    """
    stems = [safe_name(t, max_len) for t in texts]
    taken: set[str] = set()
    out: list[str | None] = [None] * len(stems)
    for i, stem in enumerate(stems):  # first pass: every stem's first claimant keeps it
        if stem.casefold() not in taken:
            taken.add(stem.casefold())
            out[i] = stem
    for i, stem in enumerate(stems):  # second pass: the rest get the lowest free suffix
        if out[i] is not None:
            continue
        n = 2
        while True:
            suffix = f"-{n}"
            candidate = stem[: max_len - len(suffix)].rstrip("_-") + suffix
            if candidate.casefold() not in taken:
                break
            n += 1
        taken.add(candidate.casefold())
        out[i] = candidate
    return [name for name in out if name is not None]


def safe_join(root: str | Path, *parts: str) -> Path:
    """``root / parts``, refusing a result outside ``root`` (``..``, absolute parts, links)."""
    base = Path(root).resolve()
    target = base.joinpath(*parts).resolve()
    if target != base and base not in target.parents:
        raise XauditError(
            f"path {'/'.join(parts)!r} leads outside {str(base)!r}; names written under the "
            "run directory must stay inside it (build them with safe_name)"
        )
    return target


# Bidirectional controls reorder the text around them on a terminal ("Trojan source").
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def is_control(ch: str) -> bool:
    """A control (newline, tab, escape…) or bidirectional-control character."""
    return ch in _BIDI or unicodedata.category(ch) == "Cc"


def one_line(text: object) -> str:
    """``text`` for a console line: newlines, other control and bidirectional-control
    characters (from file or class names) shown escaped, so one message stays one line."""
    out = []
    for ch in str(text):
        if is_control(ch):
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)
