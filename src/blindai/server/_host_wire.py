"""The frames between the server and a model host (``model_host``, ``_model_host_worker``).

One frame is a JSON header and raw buffers, over a ``SOCK_STREAM`` socket pair::

    <u32 header length> <u32 buffer count> <u64 length of each buffer>... header buffers...

Arrays travel as their bytes (numpy's native byte order: both ends are the same machine), their
dtype named in the header: no pickle, so that a model host that onnxruntime's bugs let a hostile
model take over cannot run code in the server by what it answers (the server only parses JSON
and copies bytes, under a size bound). String arrays travel as UTF-8 (``surrogatepass``: the
same ``str`` comes out) with an int64 buffer of each element's byte length; an array of maps
(onnxruntime's ZipMap gives a list of dicts of floats) as each map's size, its keys (int64, or
strings as above) and its values (float64), all in buffers: the JSON header stays small
(``MAX_HEADER``), whatever the outputs.

Both ends set a short socket timeout: reads and writes wake up to see whether the run was
stopped (``should_stop``) or the connection is being closed.
"""

from __future__ import annotations

import json
import math
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from blindai.server._bfloat16 import bfloat16
from blindai.server._shown import shown

__all__ = [
    "Frame",
    "FrameError",
    "Stopped",
    "decode_arrays",
    "encode_arrays",
    "read_frame",
    "write_frame",
]

MAX_HEADER = 16 << 20
"""Largest JSON header of a frame (names, dtypes and shapes only)."""
_PREFIX = struct.Struct("<II")
_LENGTH = struct.Struct("<Q")
_MAX_BUFFERS = 1 << 16
_MAX_DIMS = 64
_NUMERIC = frozenset(
    "float32 float64 float16 int8 int16 int32 int64 uint8 uint16 uint32 uint64 bool".split()
)


class FrameError(Exception):
    """A frame that does not follow this format, or is over the reader's bound."""


class Stopped(Exception):
    """``should_stop()`` said to give up while a frame was being written."""


@dataclass
class Frame:
    """One message: its JSON header and its raw buffers."""

    header: dict[str, Any]
    buffers: list[memoryview]


def _dtype(name: str) -> np.dtype[Any]:
    if name in _NUMERIC:
        return np.dtype(name)
    found = bfloat16() if name == "bfloat16" else None
    if found is None:
        raise FrameError(f"unknown dtype {name[:32]!r}")
    return found


def encode_arrays(arrays: Sequence[tuple[str, np.ndarray]]) -> tuple[list[Any], list[Any]]:
    """(header entries, buffers) for named arrays (ValueError for what cannot travel)."""
    entries: list[Any] = []
    buffers: list[Any] = []
    for name, array in arrays:
        shape = list(array.shape)
        if array.dtype.kind != "O":
            if array.dtype.name not in _NUMERIC and array.dtype.name != "bfloat16":
                raise ValueError(
                    f"array {shown(name)} has dtype {array.dtype}, which cannot travel"
                )
            data = np.ascontiguousarray(array)
            entries.append({"name": name, "dtype": array.dtype.name, "shape": shape})
            buffers.append(data.reshape(-1).view(np.uint8).data if data.size else b"")
            continue
        items = array.reshape(-1).tolist()
        if all(isinstance(x, str) for x in items):
            entries.append({"name": name, "dtype": "str", "shape": shape})
            buffers += _encode_strings(items)
        elif all(isinstance(x, dict) for x in items):
            entries.append({"name": name, "dtype": "map", "shape": shape})
            buffers += _encode_maps(name, items)
        else:
            raise ValueError(f"array {shown(name)} holds objects that cannot travel")
    return entries, buffers


def _encode_strings(items: list[str]) -> list[bytes]:
    encoded = [x.encode("utf-8", "surrogatepass") for x in items]
    return [np.array([len(b) for b in encoded], np.int64).tobytes(), b"".join(encoded)]


def _encode_maps(name: str, items: list[dict[Any, Any]]) -> list[bytes]:
    """Each map's size, a kind byte (0: int keys, 1: string keys), the keys, the values."""
    keys = [k for x in items for k in x]
    values = [v for x in items for v in x.values()]
    if not all(type(v) is float for v in values):
        raise ValueError(f"array {shown(name)} holds maps whose values are not floats")
    sizes = np.array([len(x) for x in items], np.int64).tobytes()
    floats = np.array(values, np.float64).tobytes()
    if all(type(k) is int for k in keys):
        return [sizes, b"\x00", np.array(keys, np.int64).tobytes(), floats]
    if all(type(k) is str for k in keys):
        return [sizes, b"\x01", *_encode_strings(keys), floats]
    raise ValueError(f"array {shown(name)} holds maps whose keys are not all ints or all strings")


def _take(buffers: list[memoryview], index: int) -> tuple[memoryview, int]:
    if index >= len(buffers):
        raise FrameError("fewer buffers than the header names")
    return buffers[index], index + 1


def _shape_ok(shape: Any) -> bool:
    """At most numpy's 64 dimensions, each an int below 2**63, checked before their product
    is taken (in Python integers: a host's shape of thousands of huge dimensions took minutes
    of one call holding the GIL)."""
    return (
        isinstance(shape, list)
        and len(shape) <= _MAX_DIMS
        and all(type(d) is int and 0 <= d < 1 << 63 for d in shape)
    )


def decode_arrays(entries: Any, buffers: list[memoryview]) -> list[tuple[str, np.ndarray]]:
    """The named arrays of :func:`encode_arrays` (FrameError for anything inconsistent)."""
    if not isinstance(entries, list):
        raise FrameError("no array list")
    arrays: list[tuple[str, np.ndarray]] = []
    index = 0
    try:
        for entry in entries:
            name, kind, shape = str(entry["name"]), str(entry["dtype"]), entry["shape"]
            if not _shape_ok(shape):
                raise FrameError("a bad shape")
            count = math.prod(shape)
            if kind == "map":
                array, index = _maps(buffers, index, count)
                arrays.append((name, array.reshape(shape)))
                continue
            if kind == "str":
                lengths_raw, index = _take(buffers, index)
                data, index = _take(buffers, index)
                arrays.append((name, _strings(lengths_raw, data, count, shape)))
                continue
            dtype = _dtype(kind)
            raw, index = _take(buffers, index)
            if raw.nbytes != count * dtype.itemsize:
                raise FrameError("a buffer of the wrong size")
            arrays.append((name, np.frombuffer(raw, dtype=dtype).reshape(shape)))
    except (KeyError, TypeError, ValueError) as exc:
        raise FrameError(f"a bad array ({type(exc).__name__})") from None
    if index != len(buffers):
        raise FrameError("more buffers than the header names")
    return arrays


def _strings(lengths_raw: memoryview, data: memoryview, count: int, shape: list[int]) -> np.ndarray:
    lengths = np.frombuffer(lengths_raw, dtype=np.int64)
    # each length within the data, and every end too: a sum that wrapped around int64 has an
    # end below zero (lengths summing to the data's size modulo 2**64 sliced it many times)
    ends_array = np.cumsum(lengths)
    if (
        lengths.size != count
        or ((lengths < 0) | (lengths > data.nbytes) | (ends_array < 0)).any()
        or (int(ends_array[-1]) if count else 0) != data.nbytes
    ):
        raise FrameError("string lengths that do not fit the data")
    ends = ends_array.tolist()
    raw = bytes(data)
    out = np.empty(count, dtype=object)
    start = 0
    for i, end in enumerate(ends):
        out[i] = raw[start:end].decode("utf-8", "surrogatepass")
        start = end
    return out.reshape(shape)


def _maps(buffers: list[memoryview], index: int, count: int) -> tuple[np.ndarray, int]:
    sizes_raw, index = _take(buffers, index)
    kind, index = _take(buffers, index)
    sizes = np.frombuffer(sizes_raw, dtype=np.int64)
    if sizes.size != count or (sizes < 0).any() or kind.tobytes() not in (b"\x00", b"\x01"):
        raise FrameError("a map array of the wrong size")
    total = int(sizes.sum())
    if kind.tobytes() == b"\x00":
        raw, index = _take(buffers, index)
        if raw.nbytes != 8 * total:
            raise FrameError("map keys of the wrong size")
        keys: list[Any] = np.frombuffer(raw, dtype=np.int64).tolist()
    else:
        lengths, index = _take(buffers, index)
        data, index = _take(buffers, index)
        keys = _strings(lengths, data, total, [total]).tolist()
    raw, index = _take(buffers, index)
    if raw.nbytes != 8 * total:
        raise FrameError("map values of the wrong size")
    values = np.frombuffer(raw, dtype=np.float64).tolist()
    out = np.empty(count, dtype=object)
    start = 0
    for i, size in enumerate(sizes.tolist()):
        out[i] = dict(zip(keys[start : start + size], values[start : start + size], strict=True))
        if len(out[i]) != size:
            raise FrameError("a map with a key twice")
        start += size
    return out, index


def write_frame(
    sock: socket.socket,
    header: dict[str, Any],
    buffers: Sequence[Any] = (),
    *,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Send one frame whole (the caller holds the socket's write lock); Stopped when
    ``should_stop()`` turns true while the peer does not read (the stream is then unusable)."""
    head = json.dumps(header, separators=(",", ":")).encode()
    views = [memoryview(b).cast("B") for b in buffers]
    lengths = b"".join(_LENGTH.pack(v.nbytes) for v in views)
    pending = [memoryview(_PREFIX.pack(len(head), len(views)) + lengths + head), *views]
    pending = [v for v in pending if v.nbytes]
    while pending:
        try:
            sent = sock.sendmsg(pending[:512])
        except TimeoutError:
            if should_stop():
                raise Stopped from None
            continue
        while pending and sent >= pending[0].nbytes:
            sent -= pending[0].nbytes
            pending.pop(0)
        if pending and sent:
            pending[0] = pending[0][sent:]


def _read_exact(
    sock: socket.socket, view: memoryview, closing: Callable[[], bool], first: bool = False
) -> bool:
    """Fill ``view``; False at a clean end of stream before a frame (``first``)."""
    got = 0
    while got < view.nbytes:
        try:
            n = sock.recv_into(view[got:])
        except TimeoutError:
            if closing():
                raise FrameError("closed") from None
            continue
        if n == 0:
            if first and got == 0:
                return False
            raise FrameError("the stream ended inside a frame")
        got += n
    return True


def read_frame(
    sock: socket.socket, *, max_bytes: int, closing: Callable[[], bool] = lambda: False
) -> Frame | None:
    """The next frame, or None at the end of the stream; FrameError past ``max_bytes`` (the
    buffers are allocated only once their total is known to be within it)."""
    prefix = bytearray(_PREFIX.size)
    if not _read_exact(sock, memoryview(prefix), closing, first=True):
        return None
    head_len, count = _PREFIX.unpack(prefix)
    if count > _MAX_BUFFERS:
        raise FrameError("too many buffers")
    raw_lengths = bytearray(count * _LENGTH.size)
    _read_exact(sock, memoryview(raw_lengths), closing)
    lengths = [_LENGTH.unpack_from(raw_lengths, i * _LENGTH.size)[0] for i in range(count)]
    if head_len > MAX_HEADER or head_len + sum(lengths) > max_bytes:
        raise FrameError(f"a frame of more than {max_bytes} bytes")
    head = bytearray(head_len)
    _read_exact(sock, memoryview(head), closing)
    buffers = []
    for length in lengths:
        buffer = bytearray(length)
        _read_exact(sock, memoryview(buffer), closing)
        buffers.append(memoryview(buffer))
    try:
        header = json.loads(head)
    except (ValueError, RecursionError):  # nested deeper than the parser recurses
        raise FrameError("a header that is not JSON") from None
    if not isinstance(header, dict):
        raise FrameError("a header that is not an object")
    return Frame(header, buffers)
