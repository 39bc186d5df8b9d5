"""The frames between the server and a model host: arrays come back as they went, and a frame
that breaks the format, or is over the reader's bound, is refused before it is allocated."""

from __future__ import annotations

import socket
import struct
import threading

import ml_dtypes
import numpy as np
import pytest

from blindai.server._host_wire import (
    MAX_HEADER,
    FrameError,
    Stopped,
    decode_arrays,
    encode_arrays,
    read_frame,
    write_frame,
)


def _round_trip(arrays: list[tuple[str, np.ndarray]], max_bytes: int = 1 << 30) -> list:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        entries, buffers = encode_arrays(arrays)
        sender = threading.Thread(target=write_frame, args=(ours, {"a": entries}, buffers))
        sender.start()
        frame = read_frame(theirs, max_bytes=max_bytes)
        sender.join()
        assert frame is not None
        return decode_arrays(frame.header["a"], frame.buffers)


def test_arrays_come_back_bit_for_bit() -> None:
    rng = np.random.default_rng(1)
    floats = rng.standard_normal((3, 4)).astype(np.float32)
    arrays = [
        ("f32", floats),
        ("f64 strided", rng.standard_normal((4, 6))[:, ::2]),
        ("nan", np.array([np.nan, -0.0, np.inf], np.float32)),
        ("bf16", floats.astype(ml_dtypes.bfloat16)),
        ("bool", floats > 0),
        ("u64", np.array([0, 2**64 - 1], np.uint64)),
        ("scalar", np.array(5, np.int8)),
        ("empty", np.zeros((0, 7), np.int32)),
        ("big", rng.standard_normal((1, 3, 224, 224)).astype(np.float32)),
        ("str", np.array([["é", ""], ["\x00", "z" * 70000]], dtype=object)),
        ("int maps", np.array([{1: 0.5, 2: 0.25}, {}], dtype=object)),
        ("str maps", np.array([{"a": 1.0}, {"b": float("nan"), "c": -2.0}], dtype=object)),
    ]
    back = _round_trip(arrays)
    assert [n for n, _ in back] == [n for n, _ in arrays]
    for (name, sent), (_, got) in zip(arrays, back, strict=True):
        assert got.dtype == sent.dtype and got.shape == sent.shape, name
        if sent.dtype == object:
            assert repr(got.tolist()) == repr(sent.tolist()), name
            assert [type(k) for m in got.ravel() if isinstance(m, dict) for k in m] == [
                type(k) for m in sent.ravel() if isinstance(m, dict) for k in m
            ], name
        else:
            assert got.tobytes() == np.ascontiguousarray(sent).tobytes(), name


@pytest.mark.parametrize(
    "array",
    [
        np.array([b"bytes"], dtype=object),
        np.array([{1: 1}], dtype=object),  # an int value: ZipMap gives floats
        np.array([{1: 1.0, "a": 2.0}], dtype=object),
        np.array([1 + 2j], np.complex64),
    ],
)
def test_what_cannot_travel_is_refused_when_sent(array: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"cannot travel|not floats|not all"):
        encode_arrays([("x", array)])


def _raw(header: bytes, buffers: list[bytes], lengths: list[int] | None = None) -> bytes:
    sizes = lengths if lengths is not None else [len(b) for b in buffers]
    return (
        struct.pack("<II", len(header), len(sizes))
        + b"".join(struct.pack("<Q", n) for n in sizes)
        + header
        + b"".join(buffers)
    )


def _read(raw: bytes, max_bytes: int = 1 << 20):  # type: ignore[no-untyped-def]
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        ours.sendall(raw)
        ours.shutdown(socket.SHUT_WR)
        frame = read_frame(theirs, max_bytes=max_bytes)
        assert frame is not None
        return decode_arrays(frame.header["a"], frame.buffers)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_raw(b"{}", [], lengths=[1 << 40]), "more than"),
        (struct.pack("<II", MAX_HEADER + 1, 0), "more than"),
        (_raw(b"[1]", []), "not an object"),
        (_raw(b"{", []), "not JSON"),
        (_raw(b"[" * 100_000 + b"]" * 100_000, []), "not JSON"),  # RecursionError, not ours
        (_raw(b'{"a": [{"name": "x", "dtype": "float32", "shape": [3]}]}', [b"1234"]), "size"),
        (_raw(b'{"a": [{"name": "x", "dtype": "object", "shape": [1]}]}', [b"x"]), "dtype"),
        (_raw(b'{"a": [{"name": "x", "dtype": "int8", "shape": [-1]}]}', [b""]), "shape"),
        (_raw(b'{"a": [{"name": "x", "dtype": "int8", "shape": [1]}]}', [b"1", b"2"]), "more"),
        (
            _raw(
                b'{"a": [{"name": "x", "dtype": "str", "shape": [1]}]}', [b"\x05" + bytes(7), b"ab"]
            ),
            "string",
        ),
        (_raw(b'{"a": [{"dtype": "int8", "shape": [1]}]}', [b"1"]), "bad array"),
        (_raw(b"{}", [b"abc"])[:-1], "ended inside"),
    ],
)
def test_a_frame_that_breaks_the_format_is_refused(raw: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        _read(raw)


def test_a_write_the_peer_does_not_read_stops_when_told() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        ours.settimeout(0.02)
        told = threading.Event()
        threading.Timer(0.2, told.set).start()
        with pytest.raises(Stopped):
            write_frame(ours, {}, [bytes(64 << 20)], should_stop=told.is_set)


def test_string_lengths_that_wrap_around_64_bits_are_refused() -> None:
    """Lengths each within int64 whose sum wraps to the data's size: numpy's int64 sum and
    cumsum wrapped, the check passed, and the wrapped ends sliced the data again and again (a
    triple (2**63 - 1, 2**63 - 1, 2) returns to where it started, having taken all but 2
    bytes once more): a host could make 24 bytes of frame come out as a whole copy of the
    data, past ``max_bytes``."""
    data = bytes(range(48, 58)) * 100
    wrap = [2**63 - 1, 2**63 - 1, 2]
    lengths = np.array([len(data), *wrap * 4], np.uint64).astype(np.int64)
    header = b'{"a": [{"name": "x", "dtype": "str", "shape": [13]}]}'
    with pytest.raises(FrameError, match="string"):
        _read(_raw(header, [lengths.tobytes(), data]))


@pytest.mark.parametrize(
    "shape", [[10**4000] * 200, [1] * 65, [2**63]], ids=["huge dims", "65 dims", "2**63"]
)
def test_a_shape_no_array_can_have_is_refused_before_its_product(shape: list[int]) -> None:
    """The shape's product was computed first, in Python integers: 200 dimensions of 4000
    digits (a 0.8 MB header) took 1.7 s of one call holding the GIL, 800 of them 30 s, a
    16 MiB header minutes, the server's event loop stopped meanwhile. Refused at once: at most
    64 dimensions (numpy's), each below 2**63."""
    import time

    started = time.perf_counter()
    with pytest.raises(FrameError, match="shape"):
        decode_arrays([{"name": "x", "dtype": "int8", "shape": shape}], [memoryview(b"")])
    assert time.perf_counter() - started < 0.2
