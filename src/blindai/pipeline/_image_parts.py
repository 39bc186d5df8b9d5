"""How many parts of an image file Pillow reads one at a time in Python, counted before it does.

Pillow reads a PNG's chunks (all of them: the header's, every ``IDAT``, those after) and a
JPEG's segments up to its first scan, and the stray bytes between them, in Python loops,
about 3 us a chunk and 1.4 us a segment; the step opens a file twice (its cost, then the
decode). A request of 64 MiB of empty chunks or comment segments held a worker for about
50 s, the GIL most of it. These walks stop at one more than :data:`MAX_IMAGE_PARTS`, so that
a file is refused in milliseconds.
"""

from __future__ import annotations

import struct

__all__ = ["MAX_IMAGE_PARTS", "PNG_SIGNATURE", "image_parts"]

MAX_IMAGE_PARTS = 65536
"""Most chunks of a PNG, or segments and stray bytes of a JPEG before its first scan. A PNG
of the largest request (64 MiB) in libpng's 8 KiB ``IDAT`` chunks has 8192; a JPEG's header
about ten segments (an ICC profile or extended XMP adds one per 64 KiB)."""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_LENGTH = struct.Struct(">I")
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})
"""JPEG markers without a length: TEM, RST0-7, SOI."""


def _png_chunks(data: bytes) -> int:
    count, offset, end = 0, len(PNG_SIGNATURE), len(data)
    while offset + 8 <= end and count <= MAX_IMAGE_PARTS:
        (length,) = _LENGTH.unpack_from(data, offset)
        count += 1
        if data[offset + 4 : offset + 8] == b"IEND":
            break
        offset += 12 + length
    return count


def _jpeg_header_parts(data: bytes) -> int:
    count, offset, end = 0, 2, len(data)
    while offset + 1 < end and count <= MAX_IMAGE_PARTS:
        if data[offset] != 0xFF:  # stray bytes: Pillow skips them one at a time
            found = data.find(b"\xff", offset)
            found = end if found < 0 else found
            count += found - offset
            offset = found
            continue
        marker = data[offset + 1]
        count += 1
        if marker == 0xFF:  # a fill byte
            offset += 1
        elif marker in (0xDA, 0xD9):  # the first scan (libjpeg reads on), or the end
            break
        elif marker in _STANDALONE:
            offset += 2
        else:
            offset += 2 + int.from_bytes(data[offset + 2 : offset + 4], "big")
    return count


def image_parts(data: bytes) -> tuple[str, int] | None:
    """``("PNG", chunks)`` or ``("JPEG", segments and stray bytes before the first scan)``,
    each counted up to ``MAX_IMAGE_PARTS + 1``; None for a file of another signature."""
    if data.startswith(PNG_SIGNATURE):
        return "PNG", _png_chunks(data)
    if data.startswith(b"\xff\xd8"):
        return "JPEG", _jpeg_header_parts(data)
    return None
