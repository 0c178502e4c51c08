"""Safe image and mask loading: every source becomes an RGB image or a clear BadImageError.

What happens to each kind of messy input is catalogued in docs/bad-inputs.md. In short:

- the file's content decides the format, never its extension;
- broken files (empty, not an image, truncated) raise ``BadImageError`` with a short
  ``reason`` that goes into skipped.csv;
- the decompression-bomb guard is xaudit's own (``max_pixels``, recipe key
  ``data.max_image_pixels``), checked from the header before any pixel is decoded. PIL's
  global check (``Image.MAX_IMAGE_PIXELS``) is switched off only while xaudit decodes and is
  restored afterwards, so a recipe can raise the limit without changing PIL for the rest of
  the process; should PIL's check fire anyway, its error or warning becomes a BadImageError;
- 16-bit images are scaled to 8 bits (65535 -> 255), not clipped;
- transparency is composited onto ``ALPHA_BACKGROUND`` (mid grey);
- animated or multi-page files give their first frame;
- EXIF orientation is applied, so images come out the way viewers show them.
"""

from __future__ import annotations

import io
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from .diagnose import HEAD_BYTES, decode_reason, unidentified_reason

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")

DEFAULT_MAX_PIXELS = 178_956_970  # the recipe's default for data.max_image_pixels
ALPHA_BACKGROUND = (128, 128, 128)  # transparent pixels become mid grey: no strong edge or colour

_EXIF_ORIENTATION = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# What PIL raises on corrupt data; Warning: its warnings on corrupt chunks where they are errors.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, Warning)
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_WITH_ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")


class BadImageError(DataError):
    """An image file that cannot be used; ``reason`` is a short phrase for skipped.csv."""

    def __init__(self, source: str, reason: str, hint: str | None = None):
        super().__init__(f"bad image {source}: {reason}", hint)
        self.source = source
        self.reason = reason


# --------------------------------------------------------------------------- public API


def load_rgb(
    source, max_pixels: int | None = None, name: str = "", *, min_side: int = 1
) -> Image.Image:
    """Decode ``source`` (path, bytes, PIL image, array or callable) to an RGB PIL image.

    ``max_pixels`` defaults to ``DEFAULT_MAX_PIXELS``. ``min_side`` rejects images whose
    shorter side (after EXIF rotation) is below it; the default 1 accepts every image.
    """
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    name = name or _describe(source)
    source = _resolve(source, name)
    if isinstance(source, np.ndarray):
        _check_pixels(source.shape[1::-1] if source.ndim >= 2 else (0, 0), limit, name)
        img = _array_to_rgb(source, name)
    elif isinstance(source, Image.Image):
        img = _decode(source, limit, name)
    else:
        with _open(source, name) as opened:
            img = _decode(opened, limit, name)
    if min(img.size) < min_side:
        w, h = img.size
        raise BadImageError(
            name, f"image too small: {w}×{h}, the shorter side must be at least {min_side} pixels"
        )
    return img


def load_mask(source, name: str = "", size: tuple[int, int] | None = None) -> np.ndarray:
    """A boolean H×W mask from a path, bytes, PIL image, array or callable.

    Grey values count as True from half the range up (128 of 255); masks whose values are
    only 0 and 1 count 1 as True; where an alpha channel carries the shape, it decides.
    With ``size`` (the image's W, H), a mask of another size is an error: it is never resized,
    because a stretched mask silently moves the evidence the localisation audits score.
    """
    name = name or _describe(source)
    source = _resolve(source, name)
    if isinstance(source, np.ndarray):
        mask = _array_to_mask(source, name)
    elif isinstance(source, Image.Image):
        mask = _image_to_mask(_orient(source), name)
    else:
        with _open(source, name) as opened:
            _check_pixels(opened.size, DEFAULT_MAX_PIXELS, name)
            _load(opened, name)
            mask = _image_to_mask(_orient(opened), name)
    if size is not None and (mask.shape[1], mask.shape[0]) != tuple(size):
        raise BadImageError(name, mask_size_reason((mask.shape[1], mask.shape[0]), size))
    return mask


def mask_size_reason(mask_size: tuple[int, int], image_size: tuple[int, int]) -> str:
    """The skipped.csv reason for a mask whose (W, H) differs from its image's."""
    reason = (
        f"mask size {mask_size[0]}×{mask_size[1]} differs from its image "
        f"{image_size[0]}×{image_size[1]}"
    )
    if tuple(mask_size) == (image_size[1], image_size[0]):
        reason += " (rotated: was the mask drawn on the image before its EXIF rotation?)"
    return reason


# --------------------------------------------------------------------------- sources


def _describe(source) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    return "<in-memory image>"


def _resolve(source, name: str):
    """Call a zero-argument source; bytes-likes become bytes; check the type."""
    if callable(source) and not isinstance(source, (Image.Image, np.ndarray)):
        try:
            source = source()
        except DataError:
            raise
        except Exception as err:  # a lazy reader failed: the record is unusable, say why
            raise BadImageError(name, f"could not be read ({type(err).__name__}: {err})") from err
    if isinstance(source, (bytearray, memoryview)):
        source = bytes(source)
    if not isinstance(source, (str, Path, bytes, Image.Image, np.ndarray)):
        raise BadImageError(
            name,
            f"unsupported image source of type {type(source).__name__} (allowed: path, bytes, "
            "PIL image, numpy array, or a function returning one)",
        )
    return source


@contextmanager
def _open(source: str | Path | bytes, name: str) -> Iterator[Image.Image]:
    """Open a path or bytes lazily (header only), with PIL's global pixel check lifted."""
    if isinstance(source, bytes):
        if not source:
            raise BadImageError(name, "empty file (0 bytes)")
        fp = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.exists():
            raise BadImageError(name, "file not found")
        if not path.is_file():
            raise BadImageError(name, "not a file")
        if path.stat().st_size == 0:
            raise BadImageError(name, "empty file (0 bytes)")
        try:
            fp = path.open("rb")
        except OSError as err:
            raise BadImageError(name, f"cannot read file ({type(err).__name__})") from err
    try:
        with _pil_pixel_check_lifted(), _bomb_errors_as_ours(name):
            try:
                img = Image.open(fp)
            except UnidentifiedImageError:
                fp.seek(0)
                raise BadImageError(name, unidentified_reason(fp.read(HEAD_BYTES))) from None
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                raise  # turned into BadImageError by _bomb_errors_as_ours
            except _DECODE_ERRORS as err:
                raise BadImageError(name, decode_reason(err)) from err
            yield img
    finally:
        fp.close()


# --------------------------------------------------------------------------- decompression bomb

_lift_lock = threading.Lock()
_lift_depth = 0
_saved_pil_limit: int | None = None


@contextmanager
def _pil_pixel_check_lifted() -> Iterator[None]:
    """Switch PIL's global pixel check off while any xaudit decode runs; restore it after.

    Reference-counted so concurrent decodes in threads share one switch and the value the
    process had before is put back when the last one finishes. xaudit's own check
    (``_check_pixels``) runs on the header and on every tile before decoding.
    """
    global _lift_depth, _saved_pil_limit
    with _lift_lock:
        if _lift_depth == 0:
            _saved_pil_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _lift_depth += 1
    try:
        yield
    finally:
        with _lift_lock:
            _lift_depth -= 1
            if _lift_depth == 0:
                Image.MAX_IMAGE_PIXELS = _saved_pil_limit


@contextmanager
def _bomb_errors_as_ours(name: str) -> Iterator[None]:
    """PIL's own bomb error (and its warning, where warnings are errors) as BadImageError."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadImageError(name, f"image too large ({err})", hint=_RAISE_LIMIT_HINT) from err


_RAISE_LIMIT_HINT = (
    "if the image is trusted, raise data.max_image_pixels in the recipe "
    "(e.g. `data: {max_image_pixels: 400000000}`)"
)


def _check_pixels(size: tuple[int, int], limit: int, name: str) -> None:
    w, h = int(size[0]), int(size[1])
    if w * h > limit:
        raise BadImageError(
            name,
            f"image too large: {w}×{h} = {w * h} pixels exceeds the limit of {limit} "
            "(data.max_image_pixels)",
            hint=_RAISE_LIMIT_HINT,
        )


# --------------------------------------------------------------------------- decoding


def _decode(img: Image.Image, limit: int, name: str) -> Image.Image:
    """Checked, loaded, first frame, RGB, EXIF-oriented copy of ``img``."""
    _check_pixels(img.size, limit, name)
    for tile in getattr(img, "tile", None) or []:  # a frame or tile larger than the header
        x0, y0, x1, y1 = tile[1]
        _check_pixels((x1 - x0, y1 - y0), limit, name)
    with _pil_pixel_check_lifted(), _bomb_errors_as_ours(name):
        _load(img, name)
        return _orient(_to_rgb(img, name), img)


def _load(img: Image.Image, name: str) -> None:
    try:
        img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise  # turned into BadImageError by _bomb_errors_as_ours
    except _DECODE_ERRORS as err:
        raise BadImageError(name, decode_reason(err)) from err


def _orient(img: Image.Image, original: Image.Image | None = None) -> Image.Image:
    """Apply the EXIF orientation of ``original`` (default: ``img``) to ``img``."""
    try:
        orientation = (img if original is None else original).getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # unreadable EXIF: the pixels are fine, keep them as stored
        orientation = 1
    method = _TRANSPOSE.get(orientation) if isinstance(orientation, int) else None
    return img.transpose(method) if method is not None else img


def _to_rgb(img: Image.Image, name: str) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode in _SIXTEEN_BIT:
        return Image.fromarray(_sixteen_to_eight(np.asarray(img))).convert("RGB")
    if mode == "F":
        return Image.fromarray(_float_to_eight(np.asarray(img), name)).convert("RGB")
    if mode in _WITH_ALPHA or (mode == "P" and _has_transparency(img)):
        return _composite(img.convert("RGBA"))
    try:
        return img.convert("RGB")  # L, 1, P, CMYK (PIL's formula is R = (255-C)(255-K)/255)...
    except (ValueError, OSError) as err:
        raise BadImageError(name, f"unsupported colour mode {mode!r}") from err


def _has_transparency(img: Image.Image) -> bool:
    return "transparency" in img.info or (img.palette is not None and img.palette.mode == "RGBA")


def _composite(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _sixteen_to_eight(arr: np.ndarray) -> np.ndarray:
    """0..65535 to 0..255 with rounding (32768 -> 128, 65535 -> 255); outside is clipped."""
    wide = np.clip(arr.astype(np.int64), 0, 65535)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def _float_to_eight(arr: np.ndarray, name: str) -> np.ndarray:
    """Floats in [0, 1] are scaled by 255; floats beyond 1 are read as 0..255 and clipped."""
    if not np.isfinite(arr).all():
        raise BadImageError(name, "image has NaN or infinite values")
    scale = 255.0 if arr.size == 0 or float(arr.max()) <= 1.0 else 1.0
    return np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)


def _array_to_rgb(arr: np.ndarray, name: str) -> Image.Image:
    """H×W, H×W×1, H×W×3 or H×W×4 arrays: bool, uint8, uint16 (16-bit), other ints in
    0..255, floats in [0, 1]. A 4th channel is alpha."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise BadImageError(
            name,
            f"unsupported array shape {tuple(arr.shape)} "
            "(allowed: H×W, H×W×1, H×W×3, H×W×4; channels last)",
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise BadImageError(name, f"empty image array of shape {tuple(arr.shape)}")
    eight = _array_to_uint8(arr, name)
    if eight.ndim == 3 and eight.shape[2] == 4:
        return _composite(Image.fromarray(eight, "RGBA"))
    return Image.fromarray(eight).convert("RGB")


def _array_to_uint8(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        return _sixteen_to_eight(arr)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise BadImageError(name, "image array has NaN or infinite values")
        if arr.min() < 0 or arr.max() > 1:
            raise BadImageError(
                name,
                f"float image array values in [{arr.min():g}, {arr.max():g}] "
                "(allowed: [0, 1]; use uint8 for 0..255)",
            )
        return np.rint(arr * 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.min() < 0 or arr.max() > 255:
            raise BadImageError(
                name,
                f"integer image array values in [{arr.min()}, {arr.max()}] "
                "(allowed: 0..255, or uint16 for 16-bit)",
            )
        return arr.astype(np.uint8)
    raise BadImageError(name, f"unsupported array dtype {arr.dtype}")


# --------------------------------------------------------------------------- masks


def _image_to_mask(img: Image.Image, name: str) -> np.ndarray:
    if img.mode == "P" and not _has_transparency(img):
        return np.asarray(img) != 0  # palette masks (label maps): index 0 is background
    if img.mode in _WITH_ALPHA or img.mode == "P":
        rgba = np.asarray(img.convert("RGBA"))
        alpha = rgba[:, :, 3]
        if alpha.min() < 255:  # the shape is drawn in transparency
            return alpha >= 128
        return _array_to_mask(rgba[:, :, :3], name)
    if img.mode in _SIXTEEN_BIT:
        return _array_to_mask(
            np.asarray(img).astype(np.int64).clip(0, 65535).astype(np.uint16), name
        )
    if img.mode == "F":
        return _array_to_mask(_float_to_eight(np.asarray(img), name), name)
    try:
        grey = img if img.mode in ("L", "1", "RGB") else img.convert("RGB")
    except (ValueError, OSError) as err:
        raise BadImageError(name, f"unsupported mask colour mode {img.mode!r}") from err
    return _array_to_mask(np.asarray(grey), name)


def _array_to_mask(arr: np.ndarray, name: str) -> np.ndarray:
    """Any lit channel counts; threshold at half the dtype's range, or 1 for 0/1 masks."""
    if arr.ndim == 3:
        arr = arr.max(axis=-1)
    if arr.ndim != 2:
        raise BadImageError(
            name, f"unsupported mask shape {tuple(arr.shape)} (allowed: H×W or H×W×C)"
        )
    if arr.dtype == bool:
        return arr.copy()
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise BadImageError(name, "mask has NaN or infinite values")
        return arr >= 0.5 if arr.size == 0 or arr.max() <= 1 else arr >= 127.5
    if not np.issubdtype(arr.dtype, np.integer):
        raise BadImageError(name, f"unsupported mask dtype {arr.dtype}")
    if arr.size == 0 or (arr.min() >= 0 and arr.max() <= 1):
        return arr == 1
    half = 32768 if arr.dtype == np.uint16 else 128
    return arr >= half
