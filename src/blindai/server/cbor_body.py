"""Strict, bounded CBOR decoding of request bodies, whole or streamed.

cbor2 would decode an array of N integers into N Python objects (BlindAI 0.6.3 sends a model
that way: 400 MB of model took 4.4 GB), holds the GIL for the whole body (a 3 MB body of big
integers froze every port for 16 s), and cannot refuse a byte string from its declared length
before reading it. This decoder accepts the subset of CBOR the BlindAI messages use and bounds
everything before allocating:

- integers of at most 64 bits; tags (big integers, dates, ...) and indefinite lengths are
  refused; map keys are text or integers, never repeated; nesting at most ``max_depth``;
- byte strings and arrays of byte values at most ``max_bytes`` long, checked from their
  declared length; an array longer than ``max_small_array`` whose first element is an integer
  must hold byte values (0-255) and is decoded, vectorized with numpy, straight into ``bytes``
  (one byte per element, no Python object per element); text strings at most ``max_text``
  bytes; at most ``max_items`` map entries and array elements in all.

``decode(body)`` decodes a complete body; ``read_upload(stream)`` decodes a /upload map while it
arrives, keeping the model's bytes in one buffer and refusing an oversized model from its
declared length, before reading it. Every problem is InvalidInput (400) or, for sizes,
PayloadTooLarge (413).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from blindai.errors import InvalidInput, PayloadTooLarge
from blindai.server._text import limit as text_limit
from blindai.server.model_file import ModelFile

__all__ = [
    "STREAM_BATCH",
    "CborLimits",
    "ModelSink",
    "TooManyItems",
    "Uint8ArrayDecoder",
    "decode",
    "read_upload",
]

_T = TypeVar("_T")
_CHUNK = 1 << 18
"""Bytes of an integer array decoded at once (bounds numpy's temporaries)."""


@dataclass(frozen=True)
class CborLimits:
    """Bounds on what one body may hold."""

    max_bytes: int = 64 << 20
    """Longest byte string, or array of byte values."""
    max_text: int = 1 << 16
    """Longest text string (bytes of UTF-8)."""
    max_depth: int = 16
    """Deepest nesting of maps and arrays."""
    max_items: int = 1 << 14
    """Map entries and array elements in all (arrays decoded as bytes not counted)."""
    max_small_array: int = 64
    """Arrays of integers longer than this must hold byte values; they become ``bytes``."""
    setting: str = ""
    """The server setting ``max_bytes`` comes from, named in refusals (``max_model_bytes``)."""
    text_setting: str = ""
    """The server setting ``max_text`` comes from, named in refusals (``max_text_bytes``)."""

    def over(self, limit: int) -> str:
        """How a refusal names a byte limit."""
        return text_limit(limit, self.setting) if self.setting else f"the {limit}-byte limit"


class TooManyItems(InvalidInput):
    """The body holds more map entries and array elements than ``max_items``."""


class _NeedMore(Exception):
    """The buffer ends inside the item (streaming: read more and try again)."""


class Uint8ArrayDecoder:
    """Decodes the elements of a CBOR array of byte values (``0x00``-``0x17``, ``0x18 XX``).

    Chunk by chunk: ``feed`` takes what it can from the front of a chunk and says how many
    bytes it used; the array is complete when ``done``. The elements are found with numpy: in a
    run of ``0x18`` bytes, heads and values alternate from the run's first byte.
    """

    def __init__(self, count: int) -> None:
        self.out = bytearray(count)
        self.filled = 0
        self._pending = False  # the last byte fed was a 0x18 head: its value comes next

    @property
    def done(self) -> bool:
        """Whether every element has been decoded."""
        return self.filled == len(self.out) and not self._pending

    def feed(self, chunk: bytes | bytearray | memoryview) -> int:
        """Decode from the front of ``chunk``; returns the number of bytes used."""
        used = 0
        with memoryview(chunk) as view:
            while not self.done and used < len(view):
                if self._pending:
                    self.out[self.filled] = view[used]
                    self.filled += 1
                    self._pending = False
                    used += 1
                    continue
                used += self._feed_piece(view[used : used + _CHUNK])
        return used

    def _feed_piece(self, piece: memoryview) -> int:
        c = np.frombuffer(piece, np.uint8)
        n = len(c)
        is18 = c == 24
        # a 0x18 after another byte is a head; inside longer runs of 0x18, heads alternate
        # from the run's first byte: those positions are rare, fixed up on their own
        head18 = is18.copy()
        head18[1:] &= ~is18[:-1]
        inner = np.flatnonzero(is18[1:] & is18[:-1]) + 1
        if inner.size:
            first = np.ones(inner.size, bool)
            first[1:] = inner[1:] != inner[:-1] + 1
            starts = inner[np.maximum.accumulate(np.where(first, np.arange(inner.size), 0))] - 1
            head18[inner] = ((inner - starts) & 1) == 0
        value = np.zeros(n, bool)
        value[1:] = head18[:-1]
        ends = ~head18  # single-byte items and values end an element
        want = len(self.out) - self.filled
        cut = n
        if np.count_nonzero(ends) >= want:
            cut = int(np.searchsorted(np.cumsum(ends, dtype=np.int64), want) + 1)
        if (ends[:cut] & ~value[:cut] & (c[:cut] >= 24)).any():
            raise InvalidInput("an integer array must hold bytes (0-255)")
        got = c[:cut][ends[:cut]]
        self.out[self.filled : self.filled + len(got)] = got.tobytes()
        self.filled += len(got)
        self._pending = bool(cut == n and head18[n - 1])
        return cut


@dataclass
class _Reader:
    """Recursive-descent decoding over a buffer, from ``pos``."""

    data: memoryview
    limits: CborLimits
    pos: int = 0
    items: int = 0
    complete: bool = True
    """False while streaming: running out of data raises _NeedMore, not InvalidInput."""

    def take(self, n: int) -> memoryview:
        end = self.pos + n
        if end > len(self.data):
            if not self.complete:
                raise _NeedMore
            raise InvalidInput("body is not valid CBOR: it ends inside an item")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def head(self) -> tuple[int, int]:
        """(major type, argument) of the next item."""
        first = self.take(1)[0]
        major, info = first >> 5, first & 31
        if info < 24:
            return major, info
        if info <= 27:
            size = 1 << (info - 24)
            return major, int.from_bytes(self.take(size), "big")
        if info == 31:
            raise InvalidInput("indefinite-length CBOR items are not accepted")
        raise InvalidInput("body is not valid CBOR (reserved header)")

    def item(self, depth: int) -> Any:
        start = self.pos
        major, arg = self.head()
        if major == 0:
            return arg
        if major == 1:
            return -1 - arg
        if major == 2:
            return bytes(self.take(self._sized(arg, self.limits.max_bytes, "byte string")))
        if major == 3:
            raw = self.take(self._sized(arg, self.limits.max_text, "text string"))
            try:
                return str(raw, "utf-8")
            except UnicodeDecodeError:
                raise InvalidInput("body is not valid CBOR: text is not UTF-8") from None
        if major == 4:
            return self.array(arg, depth)
        if major == 5:
            return self.map(arg, depth)
        if major == 6:
            raise InvalidInput("CBOR tags (big integers, dates, ...) are not accepted")
        return self.simple(start, arg)

    def simple(self, start: int, arg: int) -> Any:
        info = self.data[start] & 31
        if info == 20 or info == 21:
            return info == 21
        if info == 22 or info == 23:
            return None
        if 25 <= info <= 27:
            fmt = {25: ">e", 26: ">f", 27: ">d"}[info]
            return struct.unpack(fmt, arg.to_bytes(struct.calcsize(fmt), "big"))[0]
        raise InvalidInput("body is not valid CBOR: unknown simple value")

    def _sized(self, n: int, limit: int, what: str) -> int:
        if n > limit:
            if limit == self.limits.max_bytes:
                where = self.limits.over(limit)
            elif limit == self.limits.max_text and self.limits.text_setting:
                where = text_limit(limit, self.limits.text_setting)
            else:
                where = f"{limit} bytes"
            raise PayloadTooLarge(f"a {what} of {n} bytes is over {where}")
        return n

    def _count(self, n: int) -> None:
        self.items += n
        if self.items > self.limits.max_items:
            raise TooManyItems(f"body holds more than {self.limits.max_items} items")

    def array(self, n: int, depth: int) -> Any:
        if n > self.limits.max_small_array:
            self._sized(n, self.limits.max_bytes, "array")  # from the head, before any element
            if self._next_is_integer():
                return self.byte_array(n)
        self._count(n)
        self._depth(depth)
        return [self.item(depth + 1) for _ in range(n)]

    def _next_is_integer(self) -> bool:
        if self.pos >= len(self.data):
            if not self.complete:
                raise _NeedMore
            raise InvalidInput("body is not valid CBOR: it ends inside an item")
        return self.data[self.pos] >> 5 == 0

    def byte_array(self, n: int) -> bytes:
        decoder = Uint8ArrayDecoder(n)
        self.pos += decoder.feed(self.data[self.pos : self.pos + 2 * n])
        if not decoder.done:
            if not self.complete:
                raise _NeedMore
            raise InvalidInput("body is not valid CBOR: it ends inside an array")
        return bytes(decoder.out)

    def map(self, n: int, depth: int) -> dict[Any, Any]:
        self._count(n)
        self._depth(depth)
        out: dict[Any, Any] = {}
        for _ in range(n):
            key = self.item(depth + 1)
            if not isinstance(key, str | int) or isinstance(key, bool):
                raise InvalidInput("CBOR map keys must be text or integers")
            if key in out:
                raise InvalidInput(f"CBOR map key {key!r:.40} appears twice")
            out[key] = self.item(depth + 1)
        return out

    def _depth(self, depth: int) -> None:
        if depth >= self.limits.max_depth:
            raise InvalidInput(f"CBOR nests deeper than {self.limits.max_depth}")


def decode(body: bytes | bytearray | memoryview, *, limits: CborLimits) -> Any:
    """Decode one complete CBOR item; trailing bytes are an error."""
    reader = _Reader(memoryview(body), limits)
    value = reader.item(0)
    if reader.pos != len(reader.data):
        raise InvalidInput("body is not valid CBOR: bytes after the message")
    return value


def _parse_front(
    buffer: bytearray, limits: CborLimits, parse: Callable[[_Reader], _T]
) -> tuple[_T, int]:
    """``parse`` over the front of a growing buffer: (result, bytes used); _NeedMore if short."""
    with memoryview(buffer) as view:
        reader = _Reader(view, limits, complete=False)
        return parse(reader), reader.pos


class _Stream:
    """Chunks of a body, buffered, counted against a limit."""

    def __init__(self, chunks: AsyncIterator[bytes], limit: int) -> None:
        self._chunks = chunks
        self._limit = limit
        self.received = 0
        self.buffer = bytearray()

    async def chunk(self) -> bytes | None:
        """The next chunk as it came, counted (None at the end of the body)."""
        async for chunk in self._chunks:
            if not chunk:
                continue  # Starlette's stream ends with an empty chunk
            self.received += len(chunk)
            if self.received > self._limit:
                raise PayloadTooLarge(f"body is over the {self._limit}-byte limit")
            return chunk
        return None

    async def more(self) -> bool:
        """Append the next chunk to the buffer; False at the end of the body."""
        chunk = await self.chunk()
        if chunk is None:
            return False
        self.buffer += chunk
        return True

    def consume(self, n: int) -> None:
        """Drop ``n`` bytes from the front (a fresh buffer: a bytearray whose front is deleted
        keeps growing its allocation as more is appended)."""
        self.buffer = self.buffer[n:]

    async def exactly(self, n: int) -> bytes:
        """The next ``n`` bytes, gathered in one buffer of their size."""
        out = bytearray(n)
        filled = min(n, len(self.buffer))
        out[:filled] = self.buffer[:filled]
        self.consume(filled)
        while filled < n:
            if not await self.more():
                raise InvalidInput("body is not valid CBOR: it ends inside the model")
            take = min(n - filled, len(self.buffer))
            out[filled : filled + take] = self.buffer[:take]
            self.consume(take)
            filled += take
        return bytes(out)

    async def small(self, limits: CborLimits, depth: int, most: int) -> Any:
        """One complete item of at most ``most`` bytes from the front of the buffer.

        An incomplete item is parsed again from its start once the buffer has doubled (or
        passed ``most``, or the body ended), not at every chunk: a 32 MiB pipeline of many files
        arriving in TLS records took 11 s of the event loop to parse chunk after chunk."""
        ended = False
        while True:
            try:
                value, used = _parse_front(self.buffer, limits, lambda r: r.item(depth))
            except _NeedMore:
                if len(self.buffer) > most:
                    raise PayloadTooLarge(f"a field is over the {most}-byte limit") from None
                if ended:
                    raise InvalidInput("body is not valid CBOR: it ends inside an item") from None
                want = min(2 * len(self.buffer) + 1, most + 1)
                while len(self.buffer) < want and not ended:
                    ended = not await self.more()
                continue
            self.consume(used)
            return value


@dataclass(frozen=True)
class ModelSink:
    """Where a byte-string model goes as it arrives: ``open(size)`` makes the file (see
    :class:`~blindai.server.model_file.ModelFile`), ``write(file, pieces)`` hashes and writes
    the next pieces off the event loop."""

    open: Callable[[int], ModelFile]
    write: Callable[[ModelFile, list[bytes]], Awaitable[None]]


STREAM_BATCH = 4 << 20
"""Bytes of a streamed model handed to the writer at once (one batch written while the next
arrives)."""


async def _stream_model(stream: _Stream, n: int, sink: ModelSink) -> ModelFile:
    """The model's ``n`` bytes into a file as they arrive: chunks are not gathered into one
    buffer; one batch is written (in a worker) while the next arrives."""
    model = sink.open(n)
    pending: asyncio.Future[None] | None = None
    try:
        head = bytes(stream.buffer[:n])
        stream.consume(len(head))
        batch, batched, left = ([head] if head else []), len(head), n - len(head)
        while left:
            chunk = await stream.chunk()
            if chunk is None:
                raise InvalidInput("body is not valid CBOR: it ends inside the model")
            if len(chunk) > left:
                stream.buffer += memoryview(chunk)[left:]
                chunk = chunk[:left]
            batch.append(chunk)
            batched += len(chunk)
            left -= len(chunk)
            if batched >= STREAM_BATCH:
                if pending is not None:
                    await pending
                pending = asyncio.ensure_future(sink.write(model, batch))
                batch, batched = [], 0
        if pending is not None:
            await pending
        if batch:
            await sink.write(model, batch)
        return model
    except BaseException:
        if pending is not None and not pending.done():
            await asyncio.wait([pending])  # the file is closed once no write is running
        if pending is not None and pending.done() and not pending.cancelled():
            pending.exception()  # retrieved: the request's own error is the one raised
        model.close()
        raise


async def _read_model(
    stream: _Stream, limits: CborLimits, sink: ModelSink | None = None
) -> bytes | ModelFile | list[Any]:
    while len(stream.buffer) < 9 and await stream.more():
        pass
    try:
        (major, n), used = _parse_front(stream.buffer, limits, _Reader.head)
    except _NeedMore:
        raise InvalidInput("body is not valid CBOR: it ends inside an item") from None
    if major not in (2, 4):
        raise InvalidInput("model must be a byte string or an array of byte values")
    if n > limits.max_bytes:
        raise PayloadTooLarge(f"the model is {n} bytes, over {limits.over(limits.max_bytes)}")
    stream.consume(used)
    if major == 2:
        return await stream.exactly(n) if sink is None else await _stream_model(stream, n, sink)
    decoder = Uint8ArrayDecoder(n)
    while True:
        used = decoder.feed(stream.buffer)
        stream.consume(used)
        if decoder.done:
            return bytes(decoder.out)
        if not await stream.more():
            raise InvalidInput("body is not valid CBOR: it ends inside the model")


async def read_upload(
    chunks: AsyncIterator[bytes],
    *,
    limits: CborLimits,
    max_body: int,
    field_bytes: Mapping[str, int] | None = None,
    into: ModelSink | None = None,
) -> dict[str, Any]:
    """Decode a /upload body (a map with text keys) while it arrives.

    The ``model`` value (byte string or array of byte values) may be up to ``limits.max_bytes``
    long and is refused from its declared length; any other value must fit in
    ``field_bytes[key]`` encoded bytes (``limits.max_text`` for keys not there). The body as a
    whole is refused once it passes ``max_body``. With ``into``, a byte-string model is not
    gathered in memory but streamed into a :class:`~blindai.server.model_file.ModelFile`
    (hashed as it arrives); the caller then owns that file.
    """
    sizes = field_bytes or {}
    stream = _Stream(chunks, max_body)
    while not stream.buffer and await stream.more():
        pass
    try:
        (major, n), used = _parse_front(stream.buffer, limits, _Reader.head)
    except _NeedMore:
        raise InvalidInput("upload: body is not valid CBOR") from None
    if major != 5:
        raise InvalidInput("upload: body must be a CBOR map with text keys")
    if n > limits.max_small_array:
        raise InvalidInput("upload: too many fields")
    stream.consume(used)
    out: dict[str, Any] = {}
    for _ in range(n):
        key = await stream.small(limits, 1, limits.max_text)
        if not isinstance(key, str):
            raise InvalidInput("upload: body must be a CBOR map with text keys")
        if key in out:
            raise InvalidInput(f"upload: field {key!r:.40} appears twice")
        if key == "model":
            out[key] = await _read_model(stream, limits, into)
            continue
        most = sizes.get(key, limits.max_text)
        out[key] = await stream.small(replace(limits, max_bytes=most, max_text=most), 1, most)
    if stream.buffer or await stream.more():
        raise InvalidInput("upload: bytes after the message")
    return out
