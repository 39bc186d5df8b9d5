"""Typed results and their wire maps (the same for CBOR and JSON)."""

from __future__ import annotations

import json

import cbor2
import pytest

from blindai.errors import ProtocolError
from blindai.pipeline import Classification, Embedding, Label, Transcript, result_from_wire


@pytest.mark.parametrize(
    "result",
    [
        Classification((Label("cat", 0.9, 3), Label("dog", 0.1, 0))),
        Embedding((0.6, 0.8)),
        Transcript("hello world"),
    ],
)
def test_round_trips_through_cbor_and_json(result):
    assert result_from_wire(cbor2.loads(cbor2.dumps(result.to_wire()))) == result
    assert result_from_wire(json.loads(json.dumps(result.to_wire()))) == result


def test_cosine_and_top():
    assert Embedding((1.0, 0.0)).cosine(Embedding((1.0, 1.0))) == pytest.approx(2**-0.5)
    assert Classification((Label("a", 1.0, 0),)).top.label == "a"
    with pytest.raises(ValueError, match="different sizes"):
        Embedding((1.0,)).cosine(Embedding((1.0, 0.0)))


@pytest.mark.parametrize(
    "obj",
    [
        None,
        {"kind": "tensor"},
        {"kind": "labels", "labels": []},
        {"kind": "labels", "labels": [{"label": 1, "score": 0.5, "index": 0}]},
        {"kind": "labels", "labels": [{"label": "a", "score": "high", "index": 0}]},
        {"kind": "labels", "labels": [{"label": "a", "score": 0.5, "index": True}]},
        {"kind": "embedding", "embedding": "0.1"},
        {"kind": "embedding", "embedding": [True]},
        {"kind": "transcript", "text": b"bytes"},
    ],
)
def test_malformed_results_are_protocol_errors(obj):
    with pytest.raises(ProtocolError):
        result_from_wire(obj)
