"""The wire codec: tensors to and from bytes, strictness on input."""

from __future__ import annotations

import cbor2
import numpy as np
import pytest

from blindai.errors import ProtocolError
from blindai.protocol import codec
from blindai.protocol.messages import DatumType, WireTensor


def test_big_endian_and_non_contiguous_arrays_go_little_endian_c_order():
    a = np.arange(6, dtype=">i4").reshape(2, 3).T
    t = WireTensor.from_numpy(a, "x")
    assert t.info.fact == (3, 2)
    assert t.info.datum_type is DatumType.I32
    assert t.bytes_data == np.ascontiguousarray(a, dtype="<i4").tobytes()
    np.testing.assert_array_equal(t.as_numpy(), a)


def test_round_trip_through_cbor():
    t = WireTensor.from_numpy(np.array([[True, False]]), "flag")
    back = codec.decode_tensor(cbor2.loads(codec.dumps(codec.encode_tensor(t))))
    assert back == t
    named = codec.encode_tensor(t, datum_as_name=True)
    assert named["info"]["datum_type"] == "Bool"
    assert codec.decode_tensor(named) == t


def test_tensors_from_numpy_are_views_encoded_as_their_bytes():
    a = np.arange(20_000, dtype=np.float32).reshape(200, 100)  # 80 KB: over the copy size
    t = WireTensor.from_numpy(a, "x")
    assert isinstance(t.bytes_data, memoryview) and t.bytes_data.readonly
    assert np.shares_memory(np.frombuffer(t.bytes_data, np.uint8), a)  # no copy
    as_bytes = WireTensor(t.info, a.tobytes())
    encoded = codec.dumps(codec.encode_tensor(t))
    assert encoded == cbor2.dumps(codec.encode_tensor(as_bytes))
    assert codec.decode_tensor(cbor2.loads(encoded)) == as_bytes
    small = WireTensor.from_numpy(a[:10], "x")  # 4 KB: copied, cheaper than a view to encode
    assert type(small.bytes_data) is bytes and small.as_numpy().tolist() == a[:10].tolist()
    empty = WireTensor.from_numpy(np.zeros((0, 3), np.int64))
    assert empty.bytes_data == b"" and empty.as_numpy().shape == (0, 3)


def test_bytes_as_int_array_are_accepted():
    t = codec.decode_tensor(
        {"info": {"fact": [2], "datum_type": 6, "node_name": None}, "bytes_data": [1, 2]}
    )
    assert t.bytes_data == b"\x01\x02"


@pytest.mark.parametrize(
    "value",
    [True, 99, -1, "f32", None, 1.5],
)
def test_invalid_datum_types(value):
    with pytest.raises(ValueError, match="invalid datum_type"):
        DatumType.parse(value)


def test_unsupported_numpy_dtype():
    with pytest.raises(ValueError, match="no BlindAI datum type"):
        DatumType.from_numpy(np.dtype("complex64"))


def test_too_many_dimensions():
    with pytest.raises(ProtocolError, match="at most"):
        codec.decode_tensor({"info": {"fact": [1] * 33, "datum_type": 0}, "bytes_data": b"\0" * 4})


@pytest.mark.parametrize("value", ["x", {"a": 1}, 3])
def test_model_bytes_refuses_other_types(value):
    with pytest.raises(ProtocolError):
        codec.model_bytes(value)


def test_decode_map_requires_text_keys():
    with pytest.raises(ProtocolError, match="text keys"):
        codec.decode_map(cbor2.dumps({b"k": 2}), what="x")


@pytest.mark.parametrize(
    ("body", "match"),
    [
        # integer keys chosen to share one hash: 1350 of them (a 16 KiB /run body, decoded on
        # the event loop) cost 13 ms there, 5400 (68 KB) 204 ms
        (cbor2.dumps({i * ((1 << 61) - 1): 0 for i in range(1, 50)}), "map key other than"),
        (cbor2.dumps({"x": {1: 2}}), "map key other than"),
        (cbor2.dumps({"x": cbor2.CBORTag(30, [10**400, 3])}), "holds a tag"),
        (b"\xa1\x61x" + b"\x81" * 70 + b"\x00", "nests deeper than 64"),
    ],
)
def test_costly_cbor_is_refused_before_it_is_decoded(body: bytes, match: str):
    """As the server's bounded decoder refuses them in bodies over 16 KiB."""
    with pytest.raises(ProtocolError, match=match):
        codec.decode_map(body, what="run")


def test_as_numpy_checks_size():
    t = WireTensor(WireTensor.from_numpy(np.zeros(2, np.float32)).info, b"\0" * 4)
    with pytest.raises(ValueError, match="needs 8"):
        t.as_numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_])
def test_a_scalar_keeps_shape_empty(dtype: type) -> None:
    scalar = np.array(1, dtype=dtype)
    wire = WireTensor.from_numpy(scalar, "s")
    assert wire.info.fact == ()
    decoded = codec.decode_tensor(codec.encode_tensor(wire))
    assert decoded.as_numpy().shape == ()
    assert decoded.as_numpy() == scalar


@pytest.mark.parametrize(
    ("fact", "fragment"),
    [
        ([2**62, 0], "more than 2\\*\\*48"),  # issue 10: an empty tensor of this shape was a 500
        ([2**64, 0], "fit in 64 bits"),
        ([2**63, 1], "fit in 64 bits"),
        ([1 << 30, 1 << 30, 0], "more than 2\\*\\*48"),
    ],
)
def test_shapes_are_bounded_even_when_empty(fact, fragment):
    with pytest.raises(ProtocolError, match=fragment):
        codec.decode_tensor({"info": {"fact": fact, "datum_type": 0}, "bytes_data": b""})


class _NoArithmetic(int):
    """A dimension that fails the test if anything multiplies it."""

    def __mul__(self, other: object) -> int:
        raise AssertionError("a dimension was multiplied before its bounds were checked")

    __rmul__ = __mul__


def test_big_integer_dimensions_are_refused_before_any_arithmetic():
    # issue 10: 32 big-integer dimensions (3 MB of body) took 16 s to multiply out
    fact = [_NoArithmetic(2 ** (8 * 100_000))] * 32
    with pytest.raises(ProtocolError, match="64 bits"):
        codec.decode_tensor({"info": {"fact": fact, "datum_type": 0}, "bytes_data": b""})
