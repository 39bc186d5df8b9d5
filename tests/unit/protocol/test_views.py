"""CBOR decoding with large byte strings left in place: cbor2's result in every case."""

from __future__ import annotations

import math

import cbor2
import numpy as np
import pytest

from blindai._documents import loads_cbor
from blindai.errors import ProtocolError
from blindai.protocol import codec, streaming
from blindai.protocol._views import UNSUPPORTED, VIEW_BYTES, loads_views
from blindai.protocol.messages import WireTensor

BIG = bytes(range(256)) * (VIEW_BYTES // 256 + 3)

PLAIN = [
    0,
    23,
    24,
    255,
    65536,
    2**64 - 1,
    -1,
    -(2**64),
    "",
    "héllo",
    b"",
    b"abc",
    [],
    [1, [2, [3]]],
    {},
    {"a": 1, "b": [True, False, None], "c": {"d": b"x"}},
    1.5,
    -0.0,
    1e300,
    {"outputs": [{"info": {"fact": [1, 3], "datum_type": 0, "node_name": "y"}, "bytes_data": BIG}]},
]


def _same(a: object, b: object) -> bool:
    if isinstance(a, memoryview):
        return isinstance(b, bytes) and a.tobytes() == b
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("value", PLAIN, ids=range(len(PLAIN)))
@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_the_subset_decodes_as_cbor2_does(value, kind):
    data = kind(cbor2.dumps(value))
    assert _same(loads_views(data), loads_cbor(data))


def test_half_floats_decode_as_cbor2_does():
    data = b"\xf9\x3c\x00"  # 1.0 as a half float
    assert loads_views(data) == loads_cbor(data) == 1.0


def test_large_byte_strings_are_read_only_views_of_the_buffer():
    body = bytearray(cbor2.dumps({"small": b"s" * (VIEW_BYTES - 1), "big": BIG}))
    doc = loads_views(body)
    assert type(doc["small"]) is bytes
    view = doc["big"]
    assert isinstance(view, memoryview) and view.readonly and view.tobytes() == BIG
    body[-1] ^= 1  # the same memory: the view sees it
    assert view[-1] == BIG[-1] ^ 1


@pytest.mark.parametrize(
    "data",
    [
        cbor2.dumps(cbor2.CBORTag(1, 0)),  # a tag
        cbor2.dumps(2**70),  # a big integer (a tag)
        b"\x5f\x41a\xff",  # an indefinite-length byte string
        b"\x9f\x01\xff",  # an indefinite-length array
        b"\xf7",  # undefined
        b"\xf0",  # an unassigned simple value
        b"\xa1\x01\x01",  # an integer key
        b"\xa1\x41a\x01",  # a byte-string key
        b"\xa2\x61a\x01\x61a\x02",  # a key twice
        b"\x62\xff\xfe",  # text that is not UTF-8
        b"\x01\x02",  # bytes after the item
        b"\x45ab",  # truncated
        b"",
        b"\x1c",  # reserved
        cbor2.dumps(list(range(300))),  # a long array (an older peer's byte string)
        cbor2.dumps({str(i): i for i in range(300)}),  # a large map
        cbor2.dumps([[0] * 200] * 25),  # more than 4096 items in all
        b"\x81" * 70 + b"\x01",  # deeper than 64
    ],
)
def test_anything_else_is_left_to_cbor2(data):
    assert loads_views(data) is UNSUPPORTED


def test_decode_map_with_views_gives_cbor2_s_answer_outside_the_subset():
    assert codec.decode_map(b"\xa2\x61a\x01\x61a\x02", what="x", views=True) == {"a": 2}
    with pytest.raises(ProtocolError, match="not valid CBOR"):
        codec.decode_map(cbor2.dumps({"a": cbor2.CBORTag(1, 0)}), what="x", views=True)
    with pytest.raises(ProtocolError, match="text keys"):
        codec.decode_map(cbor2.dumps([1]), what="x", views=True)


def test_a_reply_s_tensor_is_read_from_the_buffer():
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    body = bytearray(streaming.dumps({"outputs": [codec.encode_tensor(WireTensor.from_numpy(x))]}))
    reply = codec.decode_map(body, what="run reply", views=True)
    (tensor,) = codec.decode_tensors(reply["outputs"], what="outputs")
    assert isinstance(tensor.bytes_data, memoryview)
    out = tensor.as_numpy()
    assert np.array_equal(out, x) and not out.flags.writeable


def test_a_reply_of_many_small_items_is_left_to_cbor2_early():
    """The Python decoder gives up after 4096 items: a reply of many small items is cbor2's
    work (in C) rather than its own, whatever the reply holds."""
    doc = {"outputs": [[i] * 200 for i in range(200)], "big": BIG}
    data = cbor2.dumps(doc)
    assert loads_views(data) is UNSUPPORTED
    assert codec.decode_map(data, what="x", views=True) == doc
