"""``GET /models`` and ``POST /export`` replies: round trips, and strict refusals."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest

from blindai.errors import ProtocolError
from blindai.protocol.replication import (
    ExportedModel,
    ListedModel,
    decode_export,
    decode_models,
    encode_export,
    encode_models,
    export_frame,
)
from blindai.protocol.streaming import head

LISTED = [ListedModel("id-1", "clf", b"\1" * 32, 10), ListedModel("id-2", None, b"\2" * 32, 0)]
EXPORTED = ExportedModel("id-1", b"onnx", "clf", b"\1" * 32, False, {"spec": {}, "files": {}})


@pytest.mark.parametrize("size", [0, 23, 24, 255, 256, 65_535, 65_536, 1 << 20])
def test_export_frame_is_the_map_cbor2_writes(size: int):
    """The server sends head, bytes, tail: byte for byte the map encoded whole."""
    model = ExportedModel("id-1", bytes(size), "clf", b"\1" * 32, True, None)
    head, tail = export_frame(model, size)
    as_one = cbor2.dumps(
        {
            "model_id": model.model_id,
            "model": model.model,
            "model_name": model.name,
            "hash": model.hash,
            "optimize": model.optimize,
            "pipeline": model.pipeline,
        }
    )
    assert head + model.model + tail == as_one == encode_export(model)


def test_round_trips():
    assert decode_models(encode_models(LISTED)) == LISTED
    assert decode_export(encode_export(EXPORTED)) == EXPORTED


def _listed(**changes: Any) -> bytes:
    doc = cbor2.loads(encode_models(LISTED[:1]))
    doc[0].update(changes)
    return cbor2.dumps(doc)


def _exported(**changes: Any) -> bytes:
    doc = cbor2.loads(encode_export(EXPORTED))
    doc.update(changes)
    return cbor2.dumps(doc)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"\xff", "not valid CBOR"),
        (cbor2.dumps({"a": 1}), "list of maps"),
        (cbor2.dumps([1]), "list of maps"),
        (_listed(model_id=1), "model_id"),
        (_listed(name=b"x"), "name"),
        (_listed(hash="x"), "hash"),
        (_listed(size=True), "size"),
        (_listed(size="1"), "size"),
        (_listed(size=-1), "size"),
        (_listed(uploaded_ns=1 << 70), "uploaded_ns"),
        (_listed(uploaded_ns=-(1 << 70)), "uploaded_ns"),
        (_listed(uploaded_ns=-1), "uploaded_ns"),
    ],
)
def test_malformed_model_lists(body: bytes, match: str):
    with pytest.raises(ProtocolError, match=match):
        decode_models(body)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"\xff", "not valid CBOR"),
        (cbor2.dumps([]), "must be a CBOR map"),
        (_exported(model="x"), "model"),
        (_exported(model_name=1), "model_name"),
        (_exported(optimize=1), "optimize"),
        (_exported(pipeline=[]), "pipeline"),
        (_exported(hash=None), "hash"),
    ],
)
def test_malformed_exports(body: bytes, match: str):
    with pytest.raises(ProtocolError, match=match):
        decode_export(body)


def test_every_upload_time_accepted_is_a_date():
    """A peer's time past year 9999 made ``uploaded`` (and ``blindai models``) raise
    ValueError; the largest accepted is a date."""
    (listed,) = decode_models(_listed(uploaded_ns=(1 << 63) - 1))
    assert listed.uploaded.year == 2262


_P61 = (1 << 61) - 1  # every multiple of it hashes to 0 in CPython
# [{k * 2**61-1: 0 for k in 1..30,000}], 390 KB, written item by item (a dict would take
# the very time the test is about)
_COLLIDING = (
    b"\x81" + head(5, 30_000) + b"".join(cbor2.dumps(k * _P61) + b"\x00" for k in range(1, 30_001))
)


@pytest.mark.parametrize("decode", [decode_models, decode_export])
def test_costly_cbor_in_a_reply_is_refused_at_once(decode: Any):
    """The replies are decoded as CBOR from another party (text or byte map keys, no semantic
    tags), as every other reply is. Before: plain cbor2, whose map of 30,000 integer keys
    sharing one hash took more than 10 s to build (quadratic: a reply of a few MB held
    ``blindai models`` for hours); a rational tag's gcd was quadratic in its size too."""
    import time

    for body in (_COLLIDING, cbor2.dumps(cbor2.CBORTag(30, [10**400, 3]))):
        start = time.monotonic()
        with pytest.raises(ProtocolError, match="is not valid CBOR"):
            decode(body)
        assert time.monotonic() - start < 1.0
