"""Leakage check (data.checks) and safe output names (safety)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from xaudit.data.base import Record
from xaudit.data.checks import (
    content_hash,
    cross_split_pairs,
    find_duplicates,
    image_digest,
    leakage_message,
)
from xaudit.data.io import load_rgb
from xaudit.errors import XauditError
from xaudit.safety import FALLBACK_NAME, safe_join, safe_name, unique_names


def encode(arr: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **kw)
    return buf.getvalue()


def noise(seed: int, h: int = 6, w: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def rec(rid: str, image) -> Record:
    return Record(id=rid, label=0, image=image)


# --------------------------------------------------------------------------- find_duplicates


def test_same_file_in_train_and_test(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "copy_of_a.png"
    a.write_bytes(encode(noise(1)))
    b.write_bytes(a.read_bytes())
    splits = {
        "test": [rec("t0", b), rec("t1", encode(noise(2)))],
        "train": [rec("r0", a), rec("r1", encode(noise(3)))],
        "val": [rec("v0", encode(noise(4)))],
    }
    assert find_duplicates(splits) == [("r0", "t0")]  # train first, whatever the dict order
    assert find_duplicates(splits, by="bytes") == [("r0", "t0")]


def test_same_pixels_other_container_found_by_pixels_not_bytes():
    arr = noise(5)
    splits = {"train": [rec("png", encode(arr, "PNG"))], "val": [rec("bmp", encode(arr, "BMP"))]}
    assert find_duplicates(splits) == [("png", "bmp")]
    assert find_duplicates(splits, by="bytes") == []


def test_exif_rotated_copy_is_the_same_image():
    upright = noise(6, h=3, w=2)
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # stored turned; EXIF turns it back
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90° clockwise
    splits = {
        "train": [rec("upright", encode(upright))],
        "test": [rec("tagged", encode(stored, exif=exif))],
    }
    assert find_duplicates(splits) == [("upright", "tagged")]


def test_groups_give_every_cross_split_pair_and_no_within_split_pair():
    same = encode(noise(7))
    splits = {
        "train": [rec("r0", same), rec("r1", same)],
        "val": [rec("v0", same)],
        "test": [rec("t0", same), rec("t1", encode(noise(8)))],
    }
    assert find_duplicates(splits) == [
        ("r0", "v0"),
        ("r0", "t0"),
        ("r1", "v0"),
        ("r1", "t0"),
        ("v0", "t0"),
    ]


def test_unreadable_images_are_left_to_the_skip_list(tmp_path):
    splits = {
        "train": [rec("broken", b"not an image"), rec("gone", tmp_path / "missing.png")],
        "test": [rec("broken2", b"not an image")],
    }
    assert find_duplicates(splits) == []
    assert find_duplicates(splits, by="bytes") == [("broken", "broken2")]  # bytes do match


def test_in_memory_sources_and_max_pixels():
    arr = noise(9)
    splits = {"train": [rec("a", arr)], "test": [rec("b", Image.fromarray(arr))]}
    assert find_duplicates(splits) == [("a", "b")]
    assert find_duplicates(splits, max_pixels=10) == []  # too large to decode: not compared
    assert content_hash(rec("a", arr)) == content_hash(rec("b", lambda: encode(arr)))


def test_digests_from_an_earlier_decode_give_the_same_pairs():
    same, other = encode(noise(10)), encode(noise(11))
    digests = {
        "test": [("t0", image_digest(load_rgb(same)))],
        "extra": [("x0", image_digest(load_rgb(same)))],
        "train": [("r0", image_digest(load_rgb(same))), ("r1", image_digest(load_rgb(other)))],
    }
    assert cross_split_pairs(digests) == [("r0", "t0"), ("r0", "x0"), ("t0", "x0")]
    assert digests["train"][0][1] == content_hash(rec("r0", same))


def test_by_must_be_known():
    with pytest.raises(XauditError, match="'pixels' or 'bytes', got 'sha1'"):
        find_duplicates({}, by="sha1")


def test_leakage_message():
    assert leakage_message([]) == "no image appears in more than one split"
    msg = leakage_message([(f"r{i}", f"t{i}") for i in range(7)], limit=2)
    assert msg.startswith("7 image pair(s) appear in two splits")
    assert msg.endswith("r0 = t0, r1 = t1 and 5 more")


# --------------------------------------------------------------------------- safe_name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Tomato___Early_blight", "Tomato_Early_blight"),
        ("healthy leaf", "healthy_leaf"),
        ("../../etc/passwd", "etc_passwd"),
        ("..\\..\\windows", "windows"),
        ("<script>alert(1)</script>", "script_alert_1_script"),
        ("café", "café"),
        ("cafe\u0301", "café"),  # the same name typed with a combining accent
        ("猫", "猫"),
        ("हिन्दी", "हिन्दी"),  # vowel signs (combining marks) are kept
        ("photo\u202egpj.exe", "photo_gpj_exe"),  # right-to-left override removed
        ("-rf", "rf"),
        (".hidden", "hidden"),
        ("CON", "CON_file"),
        ("lpt1", "lpt1_file"),
        ("", FALLBACK_NAME),
        ("..", FALLBACK_NAME),
        ("/", FALLBACK_NAME),
        ("ｆｕｌｌ", "full"),  # NFKC: full-width letters
    ],
)
def test_safe_name_known_answers(text, expected):
    assert safe_name(text) == expected


def test_long_names_are_shortened_with_a_hash_and_stay_distinct():
    a, b = "x" * 100 + "a", "x" * 100 + "b"
    sa, sb = safe_name(a, max_len=30), safe_name(b, max_len=30)
    assert len(sa) == 30 and len(sb) == 30 and sa != sb
    assert sa.startswith("x" * 21 + "-")
    assert safe_name(sa, max_len=30) == sa


def test_safe_name_max_len_floor():
    with pytest.raises(XauditError, match="at least 16, got 3"):
        safe_name("abc", max_len=3)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=120), max_len=st.integers(16, 100))
def test_safe_name_properties(text, max_len):
    name = safe_name(text, max_len)
    assert name
    assert len(name) <= max_len
    assert "/" not in name and "\\" not in name and ".." not in name and "\x00" not in name
    assert not name.startswith(("-", "."))
    assert safe_name(name, max_len) == name  # idempotent
    assert safe_name(text, max_len) == name  # deterministic


# --------------------------------------------------------------------------- unique_names


def test_unique_names_collisions():
    texts = ["a/b", "a b", "A_B", "a_b-2", "", "unnamed"]
    assert unique_names(texts) == ["a_b", "a_b-3", "A_B-4", "a_b-2", "unnamed", "unnamed-2"]


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.text(alphabet="aA /._-<>é", max_size=8), max_size=12))
def test_unique_names_properties(texts):
    names = unique_names(texts)
    assert len(names) == len(texts)
    assert len({n.casefold() for n in names}) == len(names)  # distinct on any file system
    assert all(n == safe_name(n) for n in names)
    assert unique_names(texts) == names
    seen: set[str] = set()
    for text, name in zip(texts, names, strict=True):  # a stem's first claimant keeps it
        stem = safe_name(text)
        if stem.casefold() not in seen:
            assert name == stem
        seen.add(stem.casefold())


def test_unique_names_respect_max_len():
    names = unique_names(["y" * 40] * 12, max_len=20)
    assert len(set(names)) == 12 and all(len(n) <= 20 for n in names)


# --------------------------------------------------------------------------- safe_join


def test_safe_join(tmp_path):
    assert safe_join(tmp_path, "maps", safe_name("../x")) == (tmp_path / "maps" / "x").resolve()
    for parts in [("..", "x"), ("/etc/passwd",), ("a", "..", "..", "b")]:
        with pytest.raises(XauditError, match="leads outside"):
            safe_join(tmp_path, *parts)
