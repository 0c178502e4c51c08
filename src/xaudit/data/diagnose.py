"""Why a file PIL cannot open or decode is unusable, in words that name the real cause.

The reason goes into skipped.csv: "truncated" only when data is missing, "checksum" when the
bytes are all there but do not match their checksum, and "not an image" for other content.
"""

from __future__ import annotations

import struct
import zlib

# Leading bytes of formats we read: a file that starts like one of them but cannot be opened
# is a broken image, not some other kind of file.
SIGNATURES = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
    b"RIFF",  # WebP
)
_PNG = b"\x89PNG\r\n\x1a\n"
TRUNCATED = "truncated image data"
HEAD_BYTES = 1 << 16  # enough for every header chunk PIL reads before it identifies a file


def unidentified_reason(head: bytes) -> str:
    """Why a file whose first ``HEAD_BYTES`` are ``head`` could not be identified as an image."""
    if head.startswith(_PNG):
        return png_header_reason(head)
    if head.startswith(b"\xff\xd8\xff") and len(head) < HEAD_BYTES and not head.endswith(b"\xff\xd9"):
        return TRUNCATED  # the whole file was read and it lacks the end-of-image marker
    if head.startswith(SIGNATURES):
        return "corrupt or truncated image data (it starts like an image, but its header cannot be read)"
    stripped = head.lstrip().lower()
    if stripped.startswith((b"<!doctype html", b"<html")):
        return "not an image (an HTML page: a failed download?)"
    try:
        text = head[:512].decode("utf-8")
    except UnicodeDecodeError:
        return "not an image (unrecognised binary content)"
    if all(c.isprintable() or c in "\r\n\t" for c in text):
        return "not an image (text content)"
    return "not an image (unrecognised binary content)"


def png_header_reason(data: bytes) -> str:
    """Walk a PNG's chunks up to the first image data: a cut-off chunk or a bad checksum."""
    pos = len(_PNG)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 8 + length + 4
        name = kind.decode("latin-1") if kind.isalpha() else "unnamed"
        if end > len(data):
            if len(data) < HEAD_BYTES:
                return TRUNCATED
            break  # the head we were given ends here, not the file
        stored = struct.unpack(">I", data[end - 4:end])[0]
        if zlib.crc32(data[pos + 4:end - 4]) != stored:
            return f"corrupt image data (PNG checksum mismatch in its {name} chunk)"
        if kind in (b"IDAT", b"IEND"):
            break
        pos = end
    else:
        if len(data) < HEAD_BYTES:
            return TRUNCATED
    return "corrupt image data (a PNG header PIL cannot read)"


def decode_reason(err: Exception) -> str:
    """Why decoding failed, from PIL's error."""
    text = str(err).lower()
    if "truncated" in text or isinstance(err, EOFError):
        return TRUNCATED
    if "crc" in text or "checksum" in text:
        return f"corrupt image data (checksum mismatch: {str(err)[:80]})"
    return f"corrupt image data ({type(err).__name__}: {str(err)[:120]})"
