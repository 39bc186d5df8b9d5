"""The ``GET /attestation`` reply: round trip, and strict refusal of anything else."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest

from blindai.errors import ProtocolError
from blindai.protocol.attestation import (
    AttestationReply,
    decode_reply,
    encode_reply,
    parse_nonce,
    request_path,
)

REPLY = AttestationReply(
    kind="sev-snp",
    certificate=b"cert",
    evidence=b"report",
    nonce=b"n" * 16,
    collateral=None,
    certificates=(b"vcek", b"ask", b"ark"),
    info={"tee": "sev-snp"},
)


def test_round_trip():
    assert decode_reply(encode_reply(REPLY)) == REPLY


def test_request_path():
    assert request_path(None) == "/attestation"
    assert request_path(b"\x01" * 16) == "/attestation?nonce=" + "01" * 16
    assert parse_nonce(request_path(b"\xab" * 16).split("=")[1]) == b"\xab" * 16
    assert parse_nonce(None) is None
    assert parse_nonce("AB" * 16) == b"\xab" * 16


def _doc(**changes: Any) -> bytes:
    doc = cbor2.loads(encode_reply(REPLY))
    doc.update(changes)
    return cbor2.dumps({k: v for k, v in doc.items() if v is not ...})


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"\xff\x00", "not valid CBOR"),
        (cbor2.dumps([1, 2]), "must be a CBOR map"),
        (_doc(version=2), "version 2"),
        (_doc(version=...), "version None"),
        (_doc(kind=1), "kind"),
        (_doc(certificate="text"), "certificate"),
        (_doc(evidence=...), "evidence"),
        (_doc(nonce="n"), "nonce"),
        (_doc(collateral=[]), "collateral"),
        (_doc(certificates=b"x"), "certificates"),
        (_doc(certificates=["x"]), "byte strings"),
        (_doc(info=[]), "info"),
    ],
)
def test_malformed_replies_are_protocol_errors(body: bytes, match: str):
    with pytest.raises(ProtocolError, match=match):
        decode_reply(body)


def test_an_unsupported_version_is_shown_short():
    """The server's value went whole into the message (a 4 MiB byte string: a 16 MB line)."""
    with pytest.raises(ProtocolError) as info:
        decode_reply(_doc(version=b"\x1b" * 100_000))
    assert len(str(info.value)) < 100 and str(info.value).isprintable()


@pytest.mark.parametrize(
    "changes",
    [
        {"info": {"tee": cbor2.CBORTag(30, [10**400, 3])}},  # a rational, reduced by a gcd
        {"info": {1: "x", (1 << 61) - 1: "y"}},  # integer keys, chosen to share one hash
    ],
    ids=["rational-tag", "colliding-int-keys"],
)
def test_costly_cbor_in_a_reply_is_refused_before_it_is_decoded(changes: dict[str, Any]):
    """The reply is decoded before the server is verified: semantic tags and map keys other
    than text or bytes made cbor2 compute for minutes on a 4 MiB reply (a rational's gcd,
    colliding hashes); the info map took them as they were."""
    with pytest.raises(ProtocolError, match="not valid CBOR"):
        decode_reply(_doc(**changes))
