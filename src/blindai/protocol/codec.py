"""CBOR codec for BlindAI 0.6 messages, strict on input: every problem is a ProtocolError."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from blindai._documents import loads_cbor
from blindai.errors import ProtocolError
from blindai.protocol import streaming
from blindai.protocol._views import UNSUPPORTED, VIEW_BYTES, loads_views
from blindai.protocol.messages import DatumType, TensorInfo, WireTensor

__all__ = [
    "MAX_DIM",
    "MAX_DIMS",
    "MAX_ELEMENTS",
    "decode_map",
    "decode_tensor",
    "decode_tensors",
    "dumps",
    "encode_tensor",
    "loads",
    "model_bytes",
]

MAX_DIMS = 32
MAX_DIM = (1 << 63) - 1
"""A dimension must fit in onnxruntime's int64."""
MAX_ELEMENTS = 1 << 48
"""Bound on the product of a shape's non-zero dimensions (even for an empty tensor), so that
no size computed from it overflows numpy or onnxruntime."""


def dumps(obj: Any) -> bytes:
    """Encode a message (large byte strings copied once, see ``protocol.streaming.dumps``)."""
    return streaming.dumps(obj)


def loads(body: bytes | bytearray | memoryview, *, what: str) -> Any:
    """Decode a CBOR body; ProtocolError when it is not CBOR, or not the CBOR the messages use
    (:func:`blindai._documents.loads_cbor`: text or byte map keys, no semantic tags, as the
    server's bounded decoder for larger bodies: integer keys sharing one hash made a 16 KiB
    /run body cost 13 ms of the event loop)."""
    try:
        return loads_cbor(body)
    except Exception as exc:  # cbor2 raises several types on garbage
        raise ProtocolError(
            f"{what}: body is not valid CBOR (or holds a tag, a map key other than a text "
            "string, or nests deeper than 64)"
        ) from exc


def decode_map(
    body: bytes | bytearray | memoryview, *, what: str, views: bool = False
) -> dict[str, Any]:
    """Decode a CBOR body that must be a map with string keys. ``views``: its byte strings of
    64 KiB or more are read-only views of ``body``, not copies (``protocol._views``; a
    smaller body holds none, and cbor2 decodes it faster)."""
    obj = loads_views(body) if views and len(body) >= VIEW_BYTES else UNSUPPORTED
    if obj is UNSUPPORTED:
        obj = loads(body, what=what)
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise ProtocolError(f"{what}: body must be a CBOR map with text keys")
    return obj


def encode_tensor(t: WireTensor, *, datum_as_name: bool = False) -> dict[str, Any]:
    """The wire map of a tensor (``info`` holds exactly fact, datum_type, node_name)."""
    datum: int | str = t.info.datum_type.name if datum_as_name else int(t.info.datum_type)
    return {
        "info": {"fact": list(t.info.fact), "datum_type": datum, "node_name": t.info.node_name},
        "bytes_data": t.bytes_data,
    }


def _int_list(value: Any, what: str) -> list[int]:
    if not isinstance(value, list) or len(value) > MAX_DIMS:
        raise ProtocolError(f"{what}: must be a list of at most {MAX_DIMS} integers")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ProtocolError(f"{what}: dimensions must be non-negative integers")
        if v > MAX_DIM:  # checked before any arithmetic: a big integer costs nothing here
            raise ProtocolError(f"{what}: a dimension must fit in 64 bits")
    nonzero = 1
    for v in value:
        nonzero *= v or 1
        if nonzero > MAX_ELEMENTS:
            raise ProtocolError(f"{what}: the shape has more than 2**48 elements")
    return value


def decode_tensor(obj: Any, *, index: int = 0) -> WireTensor:
    """Validate one wire tensor map; the byte count is checked against shape and type."""
    where = f"tensor {index}"
    if not isinstance(obj, Mapping):
        raise ProtocolError(f"{where}: must be a map with info and bytes_data")
    info, data = obj.get("info"), obj.get("bytes_data")
    if not isinstance(info, Mapping):
        raise ProtocolError(f"{where}: info must be a map")
    if isinstance(data, list):  # some clients send bytes as an int array
        data = _bytes_from_ints(data, f"{where}: bytes_data")
    if not isinstance(data, bytes | memoryview):
        raise ProtocolError(f"{where}: bytes_data must be a byte string")
    fact = _int_list(info.get("fact"), f"{where}: fact")
    try:
        datum = DatumType.parse(info.get("datum_type"))
    except ValueError as exc:
        raise ProtocolError(f"{where}: {exc}") from None
    name = info.get("node_name")
    if name is not None and not isinstance(name, str):
        raise ProtocolError(f"{where}: node_name must be a string or null")
    count = 1
    for d in fact:
        count *= d
    if count * datum.numpy_dtype.itemsize != len(data):
        raise ProtocolError(f"{where}: {len(data)} bytes do not match shape {fact} of {datum.name}")
    return WireTensor(TensorInfo(tuple(fact), datum, name), data)


def decode_tensors(value: Any, *, what: str) -> list[WireTensor]:
    """Validate a list of wire tensors."""
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise ProtocolError(f"{what}: must be a list of tensors")
    return [decode_tensor(t, index=i) for i, t in enumerate(value)]


def _bytes_from_ints(value: list[Any], what: str) -> bytes:
    try:
        return bytes(value)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"{what}: an integer array must hold bytes (0-255)") from exc


def model_bytes(value: Any) -> bytes:
    """The model from an upload: a byte string, or an array of ints (one per byte)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, list):
        return _bytes_from_ints(value, "model")
    raise ProtocolError("model must be a byte string or an array of byte values")
