"""Real inputs made by the tests: a WordPiece tokenizer.json, PNG/JPEG images, WAV files."""

from __future__ import annotations

import io
import re
import struct
import wave
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

WORDS = ["the", "cat", "dog", "sat", "on", "mat", "a", "man", "eat", "##ing", "food", "."]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
VOCAB = {t: i for i, t in enumerate(SPECIAL + WORDS)}


@dataclass(frozen=True)
class Port:
    """A model input or output as the pipeline sees it (the server's TensorSpec has the same)."""

    name: str
    dtype: np.dtype | None
    shape: tuple[int | None, ...]


def wordpiece_json() -> bytes:
    """A BERT-style (uncased WordPiece, [CLS] ... [SEP]) tokenizer.json, built in memory."""
    tok = Tokenizer(WordPiece(VOCAB, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", VOCAB["[CLS]"]), ("[SEP]", VOCAB["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece()
    return tok.to_str().encode()


def rgb_image(width: int = 40, height: int = 30) -> Image.Image:
    """A deterministic gradient (red rises left to right, green top to bottom, blue fixed)."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    arr = np.stack([x, y, np.full_like(x, 77)], axis=-1).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    """Encode with Pillow."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose IHDR claims another size (CRC fixed): a decompression-bomb header."""
    data = bytearray(encode(Image.new("RGB", (1, 1)), "PNG"))
    ihdr = 8 + 8  # signature, then length + type of the IHDR chunk
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def png_with_chunks(count: int, kind: bytes = b"abCd") -> bytes:
    """An 8x8 PNG with ``count`` empty ancillary chunks after its header chunk."""
    data = encode(Image.new("RGB", (8, 8)), "PNG")
    chunk = struct.pack(">I", 0) + kind + struct.pack(">I", zlib.crc32(kind))
    return data[:33] + chunk * count + data[33:]  # signature and IHDR: 8 + 25 bytes


def png_with_text(count: int, kind: bytes = b"iTXt") -> bytes:
    """An 8x8 PNG with ``count`` compressed text chunks (``iTXt`` or ``zTXt``), each 1 MiB
    once Pillow inflates it (its limit), with one emoji: a string of 4 bytes a character."""
    text = ("\U0001f600" + "a" * ((1 << 20) - 64)).encode()
    chunks = b""
    for i in range(count):
        key = f"k{i}".encode()
        head = key + (b"\0\x01\x00\0\0" if kind == b"iTXt" else b"\0\0")
        body = head + zlib.compress(text if kind == b"iTXt" else b"a" * len(text), 9)
        chunks += struct.pack(">I", len(body)) + kind + body
        chunks += struct.pack(">I", zlib.crc32(kind + body))
    data = encode(Image.new("RGB", (8, 8)), "PNG")
    return data[:33] + chunks + data[33:]


def png_with_exif(entries: int, *, ifd_pointers: bool = False) -> bytes:
    """An 8x4 PNG whose eXIf chunk rotates it (orientation 6) and holds ``entries`` IFD
    entries in all (each a SHORT of its own tag); ``ifd_pointers``: its Exif and GPS IFD
    pointers name that same IFD, which Pillow then reads three times."""
    head = [struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0)]
    if ifd_pointers:
        head += [struct.pack("<HHII", 0x8769, 4, 1, 8), struct.pack("<HHII", 0x8825, 4, 1, 8)]
    taken = {0x0112, 0x8769, 0x8825}
    tags = (t for t in range(0xC000, 0x10000) if t not in taken)  # private tags, plain SHORTs
    rest = [struct.pack("<HHIHH", next(tags), 3, 1, 7, 0) for _ in range(entries - len(head))]
    ifd = struct.pack("<H", entries) + b"".join(sorted(head + rest)) + struct.pack("<I", 0)
    exif = b"II*\x00" + struct.pack("<I", 8) + ifd
    chunk = struct.pack(">I", len(exif)) + b"eXIf" + exif
    chunk += struct.pack(">I", zlib.crc32(b"eXIf" + exif))
    data = encode(Image.new("RGB", (8, 4)), "PNG")
    return data[:33] + chunk + data[33:]


def jpeg_with_segments(count: int, stray: int = 0, lead: bytes = b"") -> bytes:
    """An 8x8 JPEG with ``lead`` (a marker Pillow reads without a length: ``FF D9``,
    ``FF C8``, ``FF 00``, ...), ``count`` empty comment segments, then ``stray`` bytes that are
    no segment's, after its first segment."""
    data = encode(Image.new("RGB", (8, 8)), "JPEG")
    first = 4 + int.from_bytes(data[4:6], "big")
    comments = b"\xff\xfe\x00\x02" * count
    return data[:first] + lead + comments + b"\x00" * stray + data[first:]


def _jpeg_segments(data: bytes) -> list[tuple[int, bytes]]:
    """A JPEG's segments after SOI as (marker, bytes); a scan's holds its entropy-coded data."""
    segments, i = [], 2
    while data[i + 1] != 0xD9:
        marker, end = data[i + 1], i + 2 + int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == 0xDA:  # the coded data runs to the next marker (not a stuffed 0 or RSTn)
            found = re.compile(rb"\xff[^\x00\xd0-\xd7]").search(data, end)
            end = found.start() if found else len(data) - 2
        segments.append((marker, data[i:end]))
        i = end
    return segments


def jpeg_of_scans(width: int, height: int, scans: int) -> bytes:
    """A progressive JPEG of one grey colour whose scans (headers and tables, without their
    coded data: libjpeg zero-fills them) are repeated to make ``scans`` of them in all."""
    img = Image.new("RGB", (width, height), (90, 90, 90))
    parts = _jpeg_segments(encode(img, "JPEG", progressive=True, subsampling=0))
    tables = b"".join(s for m, s in parts if m not in (0xC4, 0xDA))  # up to the frame header
    per_scan = []
    for marker, seg in parts:
        if marker == 0xDA:
            per_scan.append(seg[: 2 + int.from_bytes(seg[2:4], "big")])
        elif marker == 0xC4:  # the Huffman tables each scan uses come before it
            per_scan.append(seg)
    count = sum(m == 0xDA for m, _ in parts)
    assert scans % count == 0, f"a multiple of {count} scans"
    return b"\xff\xd8" + tables + b"".join(per_scan) * (scans // count) + b"\xff\xd9"


def wav_bytes(samples: np.ndarray, rate: int, width: int = 2) -> bytes:
    """A PCM WAV of ``samples`` in [-1, 1], shape [frames] or [frames, channels]."""
    x = samples if samples.ndim == 2 else samples[:, None]
    if width == 1:
        raw = np.clip(np.round(x * 127 + 128), 0, 255).astype(np.uint8).tobytes()
    elif width == 2:
        raw = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2").tobytes()
    elif width == 3:
        v = np.clip(np.round(x * 8388607), -8388608, 8388607).astype("<i4")
        raw = v.reshape(-1, 1).view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        raw = np.clip(np.round(x * 2147483647.0), -2147483648, 2147483647).astype("<i4").tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(x.shape[1])
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)
    return buf.getvalue()


def tone(seconds: float, rate: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    """A sine wave."""
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
