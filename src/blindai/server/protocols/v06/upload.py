"""``/upload`` received as it arrives: the model's bytes go to a :class:`ModelFile`, never whole
into memory.

The body is a CBOR map. Its small fields (name, options, pipeline, settings) are decoded as
they complete; when the ``model`` value is a byte string (our client), its declared length is
checked (``check_model_size``) before a byte of it is read, then its bytes are hashed and
written to the model file in a worker thread while the next ones arrive (a few batches of
``BATCH`` bytes in memory). Any other form of ``model`` -- the original clients' array of
integers -- is read whole as before and decoded by :func:`~.wire.decode_upload`.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import cbor2

from blindai.errors import InvalidInput, PayloadTooLarge
from blindai.server.model_file import ModelFile

__all__ = ["BATCH", "StreamedUpload", "receive_upload"]

BATCH = 4 << 20
"""Bytes of model handed to the writer at once."""


@dataclass
class StreamedUpload:
    """What arrived: the fields, and the model as a file or (any other form) the whole body."""

    fields: dict[str, Any]
    model: ModelFile | None
    body: bytes | None
    """The whole body, when the model was not a byte string (decode it as a whole)."""


class _Body:
    """The body's chunks, buffered from ``start``; counted against ``most`` bytes."""

    def __init__(self, chunks: AsyncIterator[bytes], most: int, refusal: str) -> None:
        self._chunks = chunks
        self._most = most
        self._refusal = refusal
        self.buf = bytearray()
        self.pos = 0
        self.received = 0

    async def chunk(self) -> bytes | None:
        """The next chunk as it came (None at the end of the body)."""
        async for chunk in self._chunks:
            if not chunk:
                continue  # starlette ends the stream with an empty chunk
            self.received += len(chunk)
            if self.received > self._most:
                raise PayloadTooLarge(self._refusal)
            return chunk
        return None

    async def more(self) -> bool:
        """Append the next chunk to the buffer; False at the end of the body."""
        chunk = await self.chunk()
        if chunk is None:
            return False
        self.buf += chunk
        return True

    async def item(self, most: int) -> Any:
        """The next complete CBOR item (at most ``most`` bytes)."""
        while True:
            stream = io.BytesIO(memoryview(self.buf)[self.pos :])
            try:
                value = cbor2.CBORDecoder(stream).decode()
            except cbor2.CBORDecodeEOF:
                if len(self.buf) - self.pos > most:
                    raise PayloadTooLarge(self._refusal) from None
                if not await self.more():
                    raise InvalidInput("upload: the body ends inside an item") from None
                continue
            except Exception as exc:  # cbor2 raises several types on garbage
                raise InvalidInput("upload: body is not valid CBOR") from exc
            self.pos += stream.tell()
            return value

    async def head(self) -> tuple[int, int, int]:
        """(major type, argument, bytes the head takes) of the next item, not consumed."""
        while len(self.buf) - self.pos < 9 and await self.more():
            pass
        view = self.buf[self.pos : self.pos + 9]
        if not view:
            raise InvalidInput("upload: the body ends inside an item")
        major, info = view[0] >> 5, view[0] & 31
        if info < 24:
            return major, info, 1
        if info > 27:
            return major, -1, 1  # indefinite or reserved: not a length we can stream
        size = 1 << (info - 24)
        if len(view) < 1 + size:
            raise InvalidInput("upload: the body ends inside an item")
        return major, int.from_bytes(view[1 : 1 + size], "big"), 1 + size

    async def rest(self) -> bytes:
        """The whole body, from its first byte."""
        while await self.more():
            pass
        return bytes(self.buf)


async def receive_upload(
    chunks: AsyncIterator[bytes],
    *,
    check_model_size: Callable[[int], None],
    max_body_bytes: int,
    max_field_bytes: int,
    refusal: str,
    open_model: Callable[[int], ModelFile],
    write: Callable[[ModelFile, list[bytes]], Awaitable[None]],
) -> StreamedUpload:
    """Read an /upload body (see the module); ``write`` runs ``ModelFile.write`` off the loop.

    PayloadTooLarge(``refusal``) past ``max_body_bytes`` or for a field over
    ``max_field_bytes``; ``check_model_size`` refuses a model from its declared size, before
    any of its bytes is read.
    """
    body = _Body(chunks, max_body_bytes, refusal)
    major, count, used = await body.head()
    if major != 5 or count < 0:
        return StreamedUpload({}, None, await body.rest())
    body.pos += used
    fields: dict[str, Any] = {}
    model: ModelFile | None = None
    try:
        for _ in range(count):
            key = await body.item(max_field_bytes)
            if key == "model":
                if model is not None:
                    raise InvalidInput("upload: body must be a CBOR map with distinct text keys")
                major, size, used = await body.head()
                if major != 2 or size < 0:
                    return StreamedUpload({}, None, await body.rest())
                check_model_size(size)
                body.pos += used
                model = open_model(size)
                await _stream_model(body, model, write)
                continue
            if not isinstance(key, str) or key in fields:
                raise InvalidInput("upload: body must be a CBOR map with distinct text keys")
            fields[key] = await body.item(max_field_bytes)
        if body.pos != len(body.buf) or await body.more():
            raise InvalidInput("upload: bytes after the message")
    except BaseException:
        if model is not None:
            model.close()
        raise
    return StreamedUpload(fields, model, None)


async def _stream_model(
    body: _Body, model: ModelFile, write: Callable[[ModelFile, list[bytes]], Awaitable[None]]
) -> None:
    """The model's bytes, from the buffer then straight from the stream (chunks not copied),
    into ``model``: one batch written while the next arrives. What follows the model is left
    in the buffer."""
    left = model.size
    head = bytes(memoryview(body.buf)[body.pos : body.pos + left])
    del body.buf[: body.pos + len(head)]
    body.pos = 0
    batch: list[bytes] = [head] if head else []
    batched, left = len(head), left - len(head)
    pending: asyncio.Future[None] | None = None
    try:
        while left:
            chunk = await body.chunk()
            if chunk is None:
                raise InvalidInput("upload: the body ends inside the model")
            if len(chunk) > left:
                body.buf += memoryview(chunk)[left:]
                chunk = chunk[:left]
            batch.append(chunk)
            batched += len(chunk)
            left -= len(chunk)
            if batched >= BATCH:
                if pending is not None:
                    await pending
                pending = asyncio.ensure_future(write(model, batch))
                batch, batched = [], 0
        if batch:
            if pending is not None:
                await pending
            pending = asyncio.ensure_future(write(model, batch))
        if pending is not None:
            await pending
    finally:
        if pending is not None and not pending.done():
            # the request failed while a batch was being written: let it finish first
            await asyncio.wait([pending])
            if not pending.cancelled():
                pending.exception()  # retrieved: the request's own error is the one raised
