"""How many parts of an image file Pillow reads one at a time in Python, counted before it does.

Pillow reads a PNG's chunks (all of them: the header's, every ``IDAT``, those after) and a
JPEG's segments up to its first scan, and the stray bytes between them, in Python loops,
about 3 us a chunk and 1.4 us a segment; the step opens a file twice (its cost, then the
decode). A request of 64 MiB of empty chunks or comment segments held a worker for about
50 s, the GIL most of it. These walks stop at one more than :data:`MAX_IMAGE_PARTS`, so that
a file is refused in milliseconds. The PNG walk also adds up what Pillow's strings of its text
chunks may take (:data:`MAX_PNG_TEXT_BYTES`).

A second JPEG walk, :func:`jpeg_scans`, follows the file as libjpeg reads it (markers, segment
lengths, scans' coded data, up to the end of image): the scans it decodes, whether it keeps
the whole image's coefficients, and runs of fill bytes it would read in quadratic time.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from PIL.JpegImagePlugin import MARKER
from PIL.PngImagePlugin import MAX_TEXT_CHUNK

from blindai.errors import PipelineError

__all__ = [
    "MAX_IMAGE_PARTS",
    "MAX_JPEG_FILL",
    "MAX_PNG_TEXT_BYTES",
    "PNG_SIGNATURE",
    "ImageParts",
    "JpegScans",
    "image_parts",
    "jpeg_scans",
]

MAX_IMAGE_PARTS = 65536
"""Most chunks of a PNG, or segments and stray bytes of a JPEG before its first scan. A PNG
of the largest request (64 MiB) in libpng's 8 KiB ``IDAT`` chunks has 8192; a JPEG's header
about ten segments (an ICC profile or extended XMP adds one per 64 KiB)."""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_LENGTH = struct.Struct(">I")
_SEGMENTS = frozenset(code & 0xFF for code, (*_, read) in MARKER.items() if read is not None)
"""JPEG markers whose length Pillow reads, then skips what it counts (SOFn, DHT, DQT, APPn...)."""
_BARE = frozenset(code & 0xFF for code, (*_, read) in MARKER.items() if read is None)
"""JPEG markers Pillow reads alone and goes on after: SOI, EOI (it reads past an end of image),
RSTn, JPG (``FF C8``), JPEG-LS's ``FF F0`` to ``FF FD``."""


MAX_PNG_TEXT_BYTES = 64 << 20
"""Most memory a PNG's text chunks may take once Pillow has read them (:func:`_text_bytes`).
Pillow inflates each compressed one up to 1 MiB and keeps every one as a string, up to 64
million characters (4 bytes each in a string holding one emoji): a 65 KiB PNG of 63 compressed
``iTXt`` chunks took 259 MB, read as soon as the file is opened, for the step's cost too. A
PNG's text (a description, XMP, a workflow) is kilobytes."""


def _text_bytes(kind: bytes, length: int) -> int:
    """The most memory Pillow's string of a text chunk takes: ``tEXt`` Latin-1 (a byte a
    character), ``zTXt`` inflated up to ``MAX_TEXT_CHUNK``, ``iTXt`` UTF-8, inflated or not (up
    to 4 bytes a character)."""
    if kind == b"tEXt":
        return length
    if kind == b"zTXt":
        return MAX_TEXT_CHUNK
    if kind == b"iTXt":
        return 4 * max(length, MAX_TEXT_CHUNK)
    return 0


def _read_bytes(kind: bytes, length: int) -> int:
    """What reading a text chunk takes beside its string, while it is read: its bytes and
    their copy past the keyword, and a compressed one's inflated bytes (an ``iTXt``'s decoded
    into a string that grows to 4 bytes a character as it goes). Measured (RSS): one 1 MiB
    ``iTXt`` of one emoji took 10 MB with its string, 14 of them 64.6 MB; a 10 MiB ``tEXt``
    31.3 MB."""
    if kind == b"tEXt":
        return 3 * length
    if kind == b"zTXt":
        return 2 * length + 2 * MAX_TEXT_CHUNK
    return 2 * length + 7 * max(length, MAX_TEXT_CHUNK)  # 6 measured, and a margin


def _png_chunks(data: bytes) -> tuple[int, int]:
    """The chunks of a PNG (up to ``MAX_IMAGE_PARTS + 1``) and what its text chunks among them
    may take (:func:`_text_bytes`, and :func:`_read_bytes` of the one that takes most to read)."""
    count, text, reading, offset, end = 0, 0, 0, len(PNG_SIGNATURE), len(data)
    while offset + 8 <= end and count <= MAX_IMAGE_PARTS:
        (length,) = _LENGTH.unpack_from(data, offset)
        kind = data[offset + 4 : offset + 8]
        count += 1
        if kind == b"IEND":
            break
        if size := _text_bytes(kind, length):
            text += size
            reading = max(reading, _read_bytes(kind, length))
        offset += 12 + length
    return count, text + reading


def _jpeg_header_parts(data: bytes) -> int:
    """The steps of Pillow's loop over a JPEG's header (``JpegImageFile._open``), as it takes
    them: a marker or a stray byte each, up to the first scan, the end of the data or a code it
    refuses."""
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
        if marker == 0xFF:  # a fill byte: the next FF starts the marker
            offset += 1
        elif marker == 0xDA:  # the first scan: libjpeg reads on
            break
        elif marker in _SEGMENTS:
            length = int.from_bytes(data[offset + 2 : offset + 4], "big")
            offset += 4 + max(length - 2, 0)
        elif marker in _BARE or marker == 0x00:  # FF 00: Pillow reads on from the next byte
            offset += 2
        else:  # Pillow refuses the file here
            break
    return count


_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
"""A marker as libjpeg finds the next one, in a scan's coded data or between segments: ``FF``
then a code other than a stuffed 0, a fill byte or a restart (RSTn, which it reads inside a
scan and passes over outside one)."""


MAX_JPEG_FILL = 65536
"""Most bytes ``FF`` in a row where libjpeg reads a JPEG byte by byte (coded data, between
segments): it reads such a run (fill bytes before a marker, or before a stuffed 0) without
saving its place, so fed 64 KiB at a time by Pillow it read the run again from its start each
time, and Pillow joined the data again: 8 MiB of ``FF`` in an 8x8 JPEG's scan took 1 s to
decode, 64 MiB 58 s. Runs of this length cost it about as much as other data. An encoder writes
a few fill bytes at most."""
_FILL = b"\xff" * (MAX_JPEG_FILL + 1)


_FRAMES = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
"""Start-of-frame markers (SOFn): not DHT (``C4``), JPG (``C8``) or DAC (``CC``)."""
_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})


@dataclass(frozen=True)
class JpegScans:
    """What libjpeg reads of a JPEG's scans (:func:`jpeg_scans`)."""

    count: int
    """Its start-of-scan markers libjpeg reaches (an upper bound of the scans it decodes)."""
    whole_image: bool
    """Whether libjpeg keeps the whole image's coefficients while it decodes: a progressive
    frame, a first scan of fewer components than the frame (its ``has_multiple_scans``, decided
    at the first scan, however many follow), or more than one scan."""


def jpeg_scans(data: bytes) -> JpegScans:
    """The scans libjpeg reads of a JPEG: its start-of-scan markers reached as libjpeg reaches
    them, from one marker to the next over each segment's length and each scan's coded data, up
    to the end of image. Not the bytes ``FF DA`` anywhere: data after the end (a phone's motion
    photo carries its video there) or inside a segment (an EXIF thumbnail, an ICC profile) is
    no scan. PipelineError past :data:`MAX_IMAGE_PARTS` markers (each one a step in Python
    here), or for a run of more than :data:`MAX_JPEG_FILL` bytes ``FF`` that libjpeg reads.

    A real JPEG's walk takes milliseconds (27 ms for 21 MiB of progressive scans); 64 MiB of
    ``FF`` runs just under the bound, each byte a candidate marker, take the regular expression
    about 0.6 s (about what libjpeg's own decode of them took before the bound)."""
    scans, markers, offset, fill = 0, 0, 2, -1
    whole_image, frame_components = False, 0
    while True:
        if fill < offset:  # the next long run of FF (found once: each search goes on from it)
            fill = data.find(_FILL, offset)
            fill = len(data) if fill < 0 else fill
        found = _NEXT_MARKER.search(data, offset, fill + 1)
        if found is None and fill < len(data):  # libjpeg would read the run
            raise PipelineError(f"JPEG holds more than {MAX_JPEG_FILL} bytes FF in a row")
        if found is None:
            break
        stop = found.start() + 1
        markers += 1
        if markers > MAX_IMAGE_PARTS:
            raise PipelineError(f"JPEG holds more than {MAX_IMAGE_PARTS} markers")
        code, offset = data[stop], stop + 1
        if code == 0xD9:  # the end of image: libjpeg reads no further
            break
        if code in (0x01, 0xD8):  # TEM, or a second SOI (libjpeg refuses the file)
            continue
        if code in _FRAMES:  # length, precision, height, width, then its components
            whole_image |= code in _PROGRESSIVE
            frame_components = data[offset + 7] if offset + 7 < len(data) else 0
        elif code == 0xDA and scans == 0:  # length, then its components
            components = data[offset + 2] if offset + 2 < len(data) else 0
            whole_image |= components < frame_components
        length = int.from_bytes(data[offset : offset + 2], "big")
        offset += 2 + max(length - 2, 0)
        scans += code == 0xDA
    return JpegScans(scans, whole_image or scans > 1)


@dataclass(frozen=True)
class ImageParts:
    """What :func:`image_parts` counted of a file."""

    kind: str
    """``PNG`` or ``JPEG``."""
    parts: int
    """A PNG's chunks, or a JPEG's segments and stray bytes before its first scan, as Pillow
    reads them; counted up to ``MAX_IMAGE_PARTS + 1``."""
    text_bytes: int = 0
    """The most memory a PNG's text chunks take once Pillow has read them."""


def image_parts(data: bytes) -> ImageParts | None:
    """What Pillow will read of a PNG or JPEG one part at a time, counted before it does; None
    for a file of another signature."""
    if data.startswith(PNG_SIGNATURE):
        return ImageParts("PNG", *_png_chunks(data))
    if data.startswith(b"\xff\xd8"):
        return ImageParts("JPEG", _jpeg_header_parts(data))
    return None
