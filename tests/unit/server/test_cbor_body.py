"""Strict, bounded CBOR decoding of bodies: same answers as cbor2 where both accept, and limits."""

from __future__ import annotations

import asyncio
import os
import random
import struct

import cbor2
import pytest

from blindai.errors import InvalidInput, PayloadTooLarge
from blindai.server.cbor_body import (
    CborLimits,
    Uint8ArrayDecoder,
    decode,
    read_upload,
)

LIMITS = CborLimits(max_bytes=1 << 20)

MESSAGES = [
    0,
    23,
    24,
    255,
    65535,
    2**32,
    2**64 - 1,
    -1,
    -(2**64),
    1.5,
    -0.0,
    float("inf"),
    True,
    False,
    None,
    "",
    "é∆😀",
    b"",
    b"\x00\xff" * 100,
    [],
    [1, [2, [3]]],
    {"a": 1, "b": [b"x", None], 7: "int key"},
    {
        "model_id": "0" * 36,
        "inputs": [
            {"info": {"fact": [1, 3], "datum_type": 0, "node_name": None}, "bytes_data": b"\0" * 12}
        ],
        "client_info": {"platform": "linux", "uid": "x"},
    },
]


@pytest.mark.parametrize("message", MESSAGES, ids=range(len(MESSAGES)))
def test_same_answer_as_cbor2(message):
    body = cbor2.dumps(message)
    assert decode(body, limits=LIMITS) == cbor2.loads(body)


def test_half_precision_and_single_floats():
    for value in (0.5, -2.0, 65504.0):
        assert decode(b"\xf9" + struct.pack(">e", value), limits=LIMITS) == value
    assert decode(b"\xfa\x3f\xc0\x00\x00", limits=LIMITS) == 1.5


def _int_array(data: bytes) -> bytes:
    return cbor2.dumps(list(data))


@pytest.mark.parametrize("size", [65, 1000, 70000, (1 << 18) + 3])
def test_long_integer_arrays_become_bytes(size):
    rng = random.Random(size)
    # runs of 0x18 (24 is written 0x18 0x18) are where heads and values could be confused
    data = bytes(rng.choice([0, 5, 23, 24, 24, 24, 25, 200, 255]) for _ in range(size))
    assert decode(_int_array(data), limits=LIMITS) == data
    body = cbor2.dumps({"model": list(data), "x": 24, "tail": [24, 24]})
    assert decode(body, limits=LIMITS) == {"model": data, "x": 24, "tail": [24, 24]}


def test_short_arrays_stay_lists():
    assert decode(cbor2.dumps(list(range(64))), limits=LIMITS) == list(range(64))


def test_long_integer_arrays_must_hold_bytes():
    for bad in (list(range(300)), [5] * 70 + [300], [5] * 70 + [b"x"]):
        with pytest.raises(InvalidInput, match="must hold bytes"):
            decode(cbor2.dumps(bad), limits=LIMITS)


def test_long_arrays_of_other_things_stay_lists():
    for value in ([b"x"] * 100, [-1] * 100, [1.5] * 100, [{"a": 1}] * 100):
        assert decode(cbor2.dumps(value), limits=LIMITS) == value


def test_chunked_array_decoding_matches_whole():
    data = os.urandom(5000) + b"\x18" * 100 + bytes(range(256))
    encoded = _int_array(data)[3:]  # the elements, without the array head
    for cut in (1, 2, 3, 7, 64, 999):
        decoder = Uint8ArrayDecoder(len(data))
        pos = 0
        while not decoder.done:
            used = decoder.feed(encoded[pos : pos + cut])
            assert used > 0
            pos += used
        assert bytes(decoder.out) == data and pos == len(encoded)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (cbor2.dumps(2**64), "tags"),  # big integer: tag 2
        (cbor2.dumps(-(2**64) - 1), "tags"),
        (b"\xc1\x00", "tags"),  # epoch date
        (b"\x9f\x01\xff", "indefinite"),
        (b"\x5f\x41\x00\xff", "indefinite"),
        (b"\x81" * 17 + b"\x00", "nests deeper"),
        (b"\xa2\x61a\x01\x61a\x02", "appears twice"),
        (b"\xa1\x40\x01", "keys must be text or integers"),
        (b"\x62\xff\xfe", "not UTF-8"),
        (b"\x43ab", "ends inside"),
        (b"\x01\x02", "bytes after"),
        (b"\x1c", "reserved"),
        (b"\xf8\x20", "simple value"),
    ],
)
def test_refusals(body, fragment):
    with pytest.raises(InvalidInput, match=fragment):
        decode(body, limits=LIMITS)


def test_declared_sizes_are_refused_before_the_data():
    # the heads alone: nothing after them is needed to refuse
    for head in (b"\x5a\x7f\xff\xff\xff", b"\x9b" + (2**40).to_bytes(8, "big")):
        with pytest.raises(PayloadTooLarge) as info:
            decode(head, limits=LIMITS)
        assert info.value.status_code == 413
    with pytest.raises(PayloadTooLarge):
        decode(b"\x7a\x00\x10\x00\x01", limits=LIMITS)  # 1 MiB of text


def test_item_count_is_bounded():
    body = cbor2.dumps([[[0] * 60] * 60] * 5)  # 18305 items, no array over 64
    with pytest.raises(InvalidInput, match="more than"):
        decode(body, limits=CborLimits(max_items=10_000))


def test_big_integers_are_refused_at_their_tag_before_their_digits():
    """Issue 10: 32 big-integer dims in 3 MB froze the server for 16 s."""
    big = cbor2.dumps(2 ** (8 * 100_000))
    body = cbor2.dumps({"fact": [0]})[:-2] + b"\x98\x20" + big * 32
    with pytest.raises(InvalidInput, match="tags"):
        decode(body, limits=CborLimits(max_bytes=8 << 20))
    # the same with the digits cut off: refused at the tag, so they were never read
    with pytest.raises(InvalidInput, match="tags"):
        decode(body[: body.index(big) + 1], limits=CborLimits(max_bytes=8 << 20))


async def _chunks(body: bytes, size: int, *, stop_after: int | None = None):
    for i in range(0, len(body), size):
        if stop_after is not None and i >= stop_after:
            raise AssertionError("read past the point where the body should have been refused")
        yield body[i : i + size]
    yield b""  # as Starlette's request.stream() ends


def _upload(body: bytes, size: int, *, max_bytes: int = 1 << 20, max_body: int = 4 << 20):
    return asyncio.run(
        read_upload(_chunks(body, size), limits=CborLimits(max_bytes=max_bytes), max_body=max_body)
    )


@pytest.mark.parametrize("as_ints", [False, True])
@pytest.mark.parametrize("chunk", [1, 5, 4096, 1 << 20])
def test_streamed_upload(as_ints, chunk):
    model = os.urandom(3000) + b"\x18" * 33
    fields = {
        "model_name": "m",
        "model": list(model) if as_ints else model,
        "length": len(model),
        "optimize": True,
        "client_info": {"platform": "x", "list": [1, 2]},
    }
    got = _upload(cbor2.dumps(fields), chunk)
    assert got == {**fields, "model": model}


def test_streamed_upload_refuses_an_oversized_model_from_its_head():
    model = b"\0" * (2 << 20)
    for encoded in (cbor2.dumps({"model": model}), cbor2.dumps({"model": list(model)})):
        with pytest.raises(PayloadTooLarge, match="the model is 2097152 bytes, over the 1048576"):
            asyncio.run(
                read_upload(
                    _chunks(encoded, 4096, stop_after=8192),
                    limits=CborLimits(max_bytes=1 << 20),
                    max_body=8 << 20,
                )
            )


def test_streamed_upload_refuses_a_body_over_its_limit_while_it_arrives():
    body = cbor2.dumps({"model": b"\0" * 1000, "client_info": "x" * 100})
    with pytest.raises(PayloadTooLarge, match="body is over"):
        _upload(body, 64, max_body=512)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (cbor2.dumps([1]), "must be a CBOR map"),
        (cbor2.dumps({"model": "text"}), "byte string or an array"),
        (cbor2.dumps({1: b""}), "text keys"),
        (cbor2.dumps({"model": b"abc"})[:-1], "ends inside the model"),
        (cbor2.dumps({"model": list(b"abc" * 40)})[:-1], "ends inside the model"),
        (cbor2.dumps({"a": 1}) + b"\x00", "bytes after"),
        (cbor2.dumps({"a": "x" * 70000}), "over the 65536-byte limit"),
        (b"\xa2\x61a\x01\x61a\x02", "appears twice"),
    ],
)
def test_streamed_upload_refusals(body, fragment):
    with pytest.raises(PayloadTooLarge if "limit" in fragment else InvalidInput, match=fragment):
        _upload(body, 7)


def test_a_field_may_be_given_its_own_limit():
    body = cbor2.dumps({"model": b"m", "pipeline": {"files": {"vocab": b"v" * 100_000}}})
    with pytest.raises(PayloadTooLarge, match="65536-byte limit"):
        _upload(body, 4096)
    got = asyncio.run(
        read_upload(
            _chunks(body, 4096),
            limits=CborLimits(max_bytes=1 << 20),
            max_body=1 << 20,
            field_bytes={"pipeline": 200_000},
        )
    )
    assert got["pipeline"]["files"]["vocab"] == b"v" * 100_000
