"""The bad-input catalogue (docs/bad-inputs.md), one generated file per item, real loader."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from xaudit.data import io as xio
from xaudit.data.io import (
    ALPHA_BACKGROUND,
    DEFAULT_MAX_PIXELS,
    BadImageError,
    load_mask,
    load_rgb,
)
from xaudit.errors import DataError

GREY = ALPHA_BACKGROUND


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def pixels(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img)


def noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def reason_of(source, **kw) -> str:
    with pytest.raises(BadImageError) as info:
        load_rgb(source, **kw)
    return info.value.reason


# --------------------------------------------------------------------------- broken files


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(BadImageError) as info:
        load_rgb(path)
    assert info.value.reason == "empty file (0 bytes)"
    assert info.value.source == str(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, DataError)
    assert reason_of(b"") == "empty file (0 bytes)"


@pytest.mark.parametrize("keep", [0.5, 0.97, 20])
def test_truncated_jpeg(tmp_path, keep):
    data = encode(Image.fromarray(noise(64, 64)), "JPEG")
    n = keep if isinstance(keep, int) else int(len(data) * keep)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[:n])
    assert reason_of(path) == "truncated image data"


def test_truncated_png(tmp_path):
    data = encode(Image.fromarray(noise(64, 64)), "PNG")
    assert reason_of(data[: len(data) // 2]) == "truncated image data"


def test_png_bad_header_checksum_is_named_not_truncated():
    data = bytearray(encode(Image.fromarray(noise(16, 16)), "PNG"))
    data[29] ^= 0xFF  # the IHDR chunk's CRC: every byte is there, the checksum is wrong
    assert reason_of(bytes(data)) == "corrupt image data (PNG checksum mismatch in its IHDR chunk)"


def test_header_cut_off_is_truncated():
    png = encode(Image.fromarray(noise(16, 16)), "PNG")
    assert reason_of(png[:20]) == "truncated image data"  # ends inside IHDR
    jpeg = encode(Image.fromarray(noise(16, 16)), "JPEG")
    assert reason_of(jpeg[:20]) == "truncated image data"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"name,label\ncat.jpg,0\n", "not an image (text content)"),
        (b"<!DOCTYPE html><html><body>404</body></html>", "not an image (an HTML page"),
        (bytes(range(7, 200)), "not an image (unrecognised binary content)"),
    ],
)
def test_not_an_image_named_jpg(tmp_path, content, reason):
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    assert reason_of(path).startswith(reason)


def test_missing_file_and_directory(tmp_path):
    assert reason_of(tmp_path / "nope.png") == "file not found"
    (tmp_path / "dir.png").mkdir()
    assert reason_of(tmp_path / "dir.png") == "not a file"


def test_png_named_jpg_loads_by_content(tmp_path):
    arr = noise(5, 7)
    path = tmp_path / "really_a_png.jpg"
    path.write_bytes(encode(Image.fromarray(arr), "PNG"))
    np.testing.assert_array_equal(pixels(load_rgb(path)), arr)
    np.testing.assert_array_equal(pixels(load_rgb(str(path))), arr)


# --------------------------------------------------------------------------- colour modes


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    img = Image.new("I;16", (5, 1))
    for x, v in enumerate([0, 257, 32768, 65280, 65535]):
        img.putpixel((x, 0), v)
    path = tmp_path / "deep.png"
    path.write_bytes(encode(img, "PNG"))
    assert Image.open(path).mode.startswith("I")  # the file really is 16-bit
    out = pixels(load_rgb(path))
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 128, 254, 255])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])  # grey stays grey


def test_sixteen_bit_array_is_scaled():
    arr = np.array([[0, 32768, 65535]], dtype=np.uint16)
    np.testing.assert_array_equal(pixels(load_rgb(arr))[0, :, 1], [0, 128, 255])


def test_greyscale(tmp_path):
    arr = np.array([[0, 100], [200, 255]], dtype=np.uint8)
    path = tmp_path / "grey.png"
    path.write_bytes(encode(Image.fromarray(arr, "L"), "PNG"))
    out = pixels(load_rgb(path))
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], arr)


def test_rgba_transparency_on_neutral_background(tmp_path):
    arr = np.zeros((1, 3, 4), dtype=np.uint8)
    arr[0, 0] = (10, 20, 30, 255)  # opaque: unchanged
    arr[0, 1] = (255, 0, 0, 0)  # fully transparent: background, whatever its colour
    arr[0, 2] = (255, 255, 255, 128)  # half: a blend
    path = tmp_path / "alpha.png"
    path.write_bytes(encode(Image.fromarray(arr, "RGBA"), "PNG"))
    out = pixels(load_rgb(path))
    assert tuple(out[0, 0]) == (10, 20, 30)
    assert tuple(out[0, 1]) == GREY
    expected = round(128 + (255 - 128) * 128 / 255)
    assert np.abs(out[0, 2].astype(int) - expected).max() <= 1
    np.testing.assert_array_equal(pixels(load_rgb(arr)), out)  # arrays follow the same rule


def test_grey_with_alpha(tmp_path):
    img = Image.new("LA", (2, 1))
    img.putpixel((0, 0), (40, 255))
    img.putpixel((1, 0), (250, 0))
    out = pixels(load_rgb(encode(img, "PNG")))
    assert tuple(out[0, 0]) == (40, 40, 40)
    assert tuple(out[0, 1]) == GREY


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparent_index(fmt):
    img = Image.new("P", (2, 1))
    img.putpalette([0, 0, 0, 200, 30, 40] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    out = pixels(load_rgb(encode(img, fmt, transparency=0)))
    assert tuple(out[0, 0]) == GREY
    assert tuple(out[0, 1]) == (200, 30, 40)


@pytest.mark.parametrize(
    ("cmyk", "rgb"),
    [
        ((0, 0, 0, 0), (255, 255, 255)),
        ((0, 0, 0, 255), (0, 0, 0)),
        ((255, 0, 0, 0), (0, 255, 255)),
        ((0, 255, 255, 0), (255, 0, 0)),
        ((128, 0, 0, 128), (63, 127, 127)),  # R = (255-C)(255-K)/255, not 255-C-K (= 0)
    ],
)
def test_cmyk_jpeg(tmp_path, cmyk, rgb):
    path = tmp_path / "scan.jpg"
    path.write_bytes(encode(Image.new("CMYK", (16, 16), cmyk), "JPEG", quality=100))
    assert Image.open(path).mode == "CMYK"
    out = pixels(load_rgb(path))
    assert np.abs(out.astype(int) - np.array(rgb)).max() <= 3


# --------------------------------------------------------------------------- geometry


# Where the stored top-left pixel must appear once each EXIF orientation is honoured,
# for an image stored 2 wide and 3 high: (x, y) in the output, and the output size.
ORIENTED_CORNER = {
    1: ((0, 0), (2, 3)),
    2: ((1, 0), (2, 3)),
    3: ((1, 2), (2, 3)),
    4: ((0, 2), (2, 3)),
    5: ((0, 0), (3, 2)),
    6: ((2, 0), (3, 2)),
    7: ((2, 1), (3, 2)),
    8: ((0, 1), (3, 2)),
}


@pytest.mark.parametrize("orientation", sorted(ORIENTED_CORNER))
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_is_honoured(tmp_path, orientation, fmt):
    scale = 8 if fmt == "JPEG" else 1  # JPEG: big flat blocks so compression keeps colours
    img = Image.new("RGB", (2 * scale, 3 * scale), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, scale, scale))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"phone.{fmt.lower()}"
    path.write_bytes(encode(img, fmt, exif=exif, quality=95))
    out = load_rgb(path)
    (x, y), size = ORIENTED_CORNER[orientation]
    assert out.size == (size[0] * scale, size[1] * scale)
    corner = out.getpixel((x * scale + scale // 2, y * scale + scale // 2))
    assert corner[0] > 200 and corner[2] < 60, corner
    assert sum(np.all(pixels(out) == (255, 0, 0), axis=-1).ravel()) <= scale * scale


def test_exif_on_pil_source_is_honoured():
    img = Image.new("RGB", (2, 3), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6
    opened = Image.open(io.BytesIO(encode(img, "PNG", exif=exif)))
    assert load_rgb(opened).size == (3, 2)


def test_tiny_image_loads_and_min_side_option():
    one = np.array([[[9, 8, 7]]], dtype=np.uint8)
    data = encode(Image.fromarray(one), "PNG")
    assert tuple(pixels(load_rgb(data))[0, 0]) == (9, 8, 7)
    reason = reason_of(data, min_side=8)
    assert reason == "image too small: 1×1, the shorter side must be at least 8 pixels"


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(path).n_frames == 3
    assert np.all(pixels(load_rgb(path)) == (255, 0, 0))


# --------------------------------------------------------------------------- decompression bomb


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size but holds almost no pixel data: a bomb, as the header sees it."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_bomb_is_refused_from_the_header_with_the_limit_named():
    with pytest.raises(BadImageError) as info:
        load_rgb(png_header_only(100_000, 100_000))
    reason = info.value.reason
    assert reason == (
        f"image too large: 100000×100000 = 10000000000 pixels exceeds the limit of "
        f"{DEFAULT_MAX_PIXELS} (data.max_image_pixels)"
    )
    assert "data.max_image_pixels" in info.value.hint


def gif_with_oversized_frame(screen: tuple[int, int], frame: tuple[int, int]) -> bytes:
    """A GIF whose first frame is far larger than its logical screen (tiny file, huge image)."""
    out = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    out += b"\x2c" + struct.pack("<HHHHB", 0, 0, *frame, 0) + b"\x02\x02\x44\x01\x00"
    return out + b"\x3b"


def test_gif_frame_larger_than_its_screen_is_refused():
    data = gif_with_oversized_frame((1, 1), (30_000, 30_000))
    assert len(data) < 100
    assert reason_of(data).startswith("image too large: 30000×30000 = 900000000 pixels")


def test_limit_is_configurable_and_inclusive():
    data = encode(Image.new("RGB", (20, 20)), "PNG")
    assert load_rgb(data, max_pixels=400).size == (20, 20)
    assert "exceeds the limit of 399" in reason_of(data, max_pixels=399)
    assert "exceeds the limit of 399" in reason_of(np.zeros((20, 20, 3), np.uint8), max_pixels=399)


def test_own_limit_does_not_depend_on_pil_global(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # PIL alone would refuse 20×20 (> 2×10)
    data = encode(Image.new("RGB", (20, 20)), "PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and PIL's warning would be an error here
        assert load_rgb(data, max_pixels=1000).size == (20, 20)
    assert Image.MAX_IMAGE_PIXELS == 10  # restored


def test_pil_global_restored_after_concurrent_and_failing_loads(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 12345)
    good = encode(Image.fromarray(noise(32, 32)), "PNG")
    jobs = [good, b"not an image", png_header_only(50_000, 50_000), good] * 8

    def work(data):
        try:
            return load_rgb(data).size
        except BadImageError:
            return None

    with ThreadPoolExecutor(max_workers=4) as pool:
        sizes = list(pool.map(work, jobs))
    assert sizes.count((32, 32)) == 16 and sizes.count(None) == 16
    assert Image.MAX_IMAGE_PIXELS == 12345
    assert xio._lift_depth == 0


@pytest.mark.parametrize("raised", [Image.DecompressionBombError, Image.DecompressionBombWarning])
def test_pil_bomb_error_and_warning_become_bad_image_error(monkeypatch, raised):
    def bomb(*args, **kwargs):
        raise raised("Image size (999 pixels) exceeds limit of 10 pixels")

    monkeypatch.setattr(Image, "open", bomb)
    with pytest.raises(BadImageError) as info:
        load_rgb(b"\x89PNG\r\n\x1a\n....", name="big.png")
    assert info.value.reason.startswith("image too large")
    assert info.value.source == "big.png"


# --------------------------------------------------------------------------- sources


def test_every_source_kind_gives_the_same_pixels(tmp_path):
    arr = noise(3, 4, seed=1)
    data = encode(Image.fromarray(arr), "PNG")
    path = tmp_path / "a.png"
    path.write_bytes(data)
    sources = [
        path,
        str(path),
        data,
        bytearray(data),
        Image.open(io.BytesIO(data)),
        arr,
        lambda: data,
        lambda: arr,
    ]
    for source in sources:
        np.testing.assert_array_equal(pixels(load_rgb(source)), arr)


def test_callable_that_fails_and_unsupported_type():
    def broken():
        raise KeyError("image")

    reason = reason_of(broken, name="row 7")
    assert reason == "could not be read (KeyError: 'image')"
    assert "unsupported image source of type int" in reason_of(42)


@pytest.mark.parametrize(
    ("arr", "expected"),
    [
        (np.array([[True, False]]), [255, 0]),
        (np.array([[0.0, 0.5, 1.0]], dtype=np.float32), [0, 128, 255]),
        (np.array([[0, 7, 255]], dtype=np.int64), [0, 7, 255]),
        (np.array([[[0], [200]]], dtype=np.uint8), [0, 200]),
    ],
)
def test_array_dtypes(arr, expected):
    np.testing.assert_array_equal(pixels(load_rgb(arr))[0, :, 0], expected)


@pytest.mark.parametrize(
    ("arr", "reason"),
    [
        (np.zeros((3, 4, 5, 2), np.uint8), "unsupported array shape (3, 4, 5, 2)"),
        (np.zeros((3, 4, 2), np.uint8), "unsupported array shape (3, 4, 2)"),
        (np.full((2, 2), 2.0), "float image array values in [2, 2]"),
        (np.array([[np.nan]]), "image array has NaN"),
        (np.array([[-1, 300]]), "integer image array values in [-1, 300]"),
    ],
)
def test_bad_arrays(arr, reason):
    assert reason_of(arr).startswith(reason)


# --------------------------------------------------------------------------- masks


def test_mask_of_zeros_and_ones(tmp_path):
    arr = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    path = tmp_path / "m.png"
    path.write_bytes(encode(Image.fromarray(arr), "PNG"))
    np.testing.assert_array_equal(load_mask(path), arr == 1)


def test_mask_threshold_and_colour(tmp_path):
    grey = np.array([[0, 127, 128, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(
        load_mask(encode(Image.fromarray(grey), "PNG"))[0], grey[0] >= 128
    )
    blue = np.zeros((1, 2, 3), np.uint8)
    blue[0, 1] = (0, 0, 255)  # luminance 29: a colour mask still counts
    np.testing.assert_array_equal(load_mask(encode(Image.fromarray(blue), "PNG"))[0], [0, 1])


def test_mask_in_alpha_channel():
    rgba = np.zeros((1, 3, 4), np.uint8)
    rgba[..., :3] = 255  # white everywhere; only the alpha says where the object is
    rgba[0, :, 3] = (0, 255, 100)
    np.testing.assert_array_equal(load_mask(encode(Image.fromarray(rgba), "PNG"))[0], [0, 1, 0])


def test_palette_mask_uses_index():
    img = Image.new("P", (3, 1))
    img.putpalette([0, 0, 0, 1, 1, 1, 200, 0, 0] + [0] * 759)  # index 1 is almost black
    for x, i in enumerate([0, 1, 2]):
        img.putpixel((x, 0), i)
    np.testing.assert_array_equal(load_mask(encode(img, "PNG"))[0], [0, 1, 1])


def test_mask_size_mismatch_is_an_error():
    mask = np.zeros((10, 10), np.uint8)
    with pytest.raises(BadImageError) as info:
        load_mask(mask, name="leaf_1.png", size=(20, 10))
    assert info.value.reason == "mask size 10×10 differs from its image 20×10"
    with pytest.raises(BadImageError) as info:
        load_mask(np.zeros((3, 2), np.uint8), size=(3, 2))
    assert "rotated" in info.value.reason
    assert load_mask(mask, size=(10, 10)).shape == (10, 10)


def test_mask_follows_exif_orientation():
    img = Image.new("L", (2, 3), 0)
    img.putpixel((0, 0), 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    mask = load_mask(encode(img, "PNG", exif=exif))
    assert mask.shape == (2, 3) and mask[0, 2] and mask.sum() == 1


def test_broken_mask_file(tmp_path):
    path = tmp_path / "m.png"
    path.write_bytes(b"")
    with pytest.raises(BadImageError, match="empty file"):
        load_mask(path)


# --------------------------------------------------------------------------- properties

MODES = ["1", "L", "P", "RGB", "RGBA", "LA", "I;16", "I", "F", "CMYK"]
FORMATS = {  # a lossless container for each mode
    "1": "PNG",
    "L": "PNG",
    "P": "PNG",
    "RGB": "PNG",
    "RGBA": "PNG",
    "LA": "PNG",
    "I;16": "PNG",
    "I": "TIFF",
    "F": "TIFF",
    "CMYK": "TIFF",
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mode=st.sampled_from(MODES),
    w=st.integers(1, 12),
    h=st.integers(1, 12),
    orientation=st.integers(1, 8),
    seed=st.integers(0, 2**16),
)
def test_any_valid_image_loads_to_rgb_of_the_oriented_size(mode, w, h, orientation, seed):
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")
    img = base.convert(mode) if mode not in ("I;16", "I", "F") else base.convert("L").convert(mode)
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = load_rgb(encode(img, FORMATS[mode], exif=exif))
    assert out.mode == "RGB"
    assert np.asarray(out).dtype == np.uint8
    assert out.size == ((h, w) if orientation >= 5 else (w, h))


@settings(max_examples=40, deadline=None)
@given(
    shape=st.sampled_from([(), (1,), (3,), (4,)]),
    dtype=st.sampled_from(["uint8", "uint16", "bool", "float32"]),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_any_valid_array_loads_to_rgb_of_the_same_size(shape, dtype, h, w, seed):
    rng = np.random.default_rng(seed)
    raw = rng.random((h, w, *shape))
    arr = {
        "uint8": (raw * 255).astype(np.uint8),
        "uint16": (raw * 65535).astype(np.uint16),
        "bool": raw > 0.5,
        "float32": raw.astype(np.float32),
    }[dtype]
    out = load_rgb(arr)
    assert out.mode == "RGB" and out.size == (w, h)
    if shape in ((), (1,)) and dtype == "uint8":
        np.testing.assert_array_equal(np.asarray(out)[..., 1], arr.reshape(h, w))


CLEAN_FILES = {
    fmt: encode(Image.fromarray(noise(16, 16, seed=3)), fmt)
    for fmt in ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]
}


@pytest.mark.filterwarnings("error")  # PIL's warnings on corrupt chunks must not escape either
@settings(max_examples=150, deadline=None)
@given(
    fmt=st.sampled_from(sorted(CLEAN_FILES)),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=6),
    cut=st.floats(0.05, 1.0),
)
def test_corrupted_files_load_or_raise_bad_image_error_only(fmt, edits, cut):
    data = bytearray(CLEAN_FILES[fmt])
    for where, value in edits:  # flip bytes, headers included
        data[int(where * len(data))] = value
    data = bytes(data[: max(1, int(len(data) * cut))])
    try:
        out = load_rgb(data, max_pixels=1_000_000)
    except BadImageError as err:
        assert err.reason
    else:
        assert out.mode == "RGB" and min(out.size) >= 1
