"""``GET /attestation`` on the attested ports: one definition of its wire for both sides.

Behind a load balancer each TCP connection may reach another replica, so a client verifies the
replica at the other end of *this* TLS connection: its first request on every new connection is
``GET /attestation``, answered with the evidence for the certificate the connection presents.

==========================  ==============================================================
request                     reply (CBOR map, 200)
==========================  ==============================================================
``GET /attestation``        ``version`` 1; ``kind`` (``sgx``, ``tdx``, ``sev-snp``,
                            ``nitro``, ``simulation``); ``certificate`` (the DER this
                            server's TLS ports present); ``evidence`` (bytes binding it);
``GET /attestation?         ``nonce`` (the nonce bound, or null); ``collateral`` (SGX/TDX
nonce=HEX``                 collateral JSON as bytes, or null); ``certificates`` (SEV-SNP
                            VCEK chain, list of DER); ``info`` (the ``/info`` map)
==========================  ==============================================================

``nonce``: 16 to 64 bytes in lowercase or uppercase hex, chosen at random by the client for
this connection; the evidence then binds it too (:mod:`blindai.attestation.binding`). Without
it the server answers its cached evidence (refreshed every minute). Errors: 400 for a malformed
nonce, 503 while too many fresh-evidence requests are pending (try again).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cbor2

from blindai._documents import loads_cbor
from blindai.attestation.binding import NONCE_MAX_SIZE, NONCE_MIN_SIZE
from blindai.errors import ProtocolError
from blindai.escape import brief

__all__ = [
    "ATTESTATION_PATH",
    "ATTESTATION_VERSION",
    "AttestationReply",
    "decode_reply",
    "encode_reply",
    "parse_nonce",
    "request_path",
]

ATTESTATION_PATH = "/attestation"
ATTESTATION_VERSION = 1
_NONCE_HEX = frozenset("0123456789abcdefABCDEF")


@dataclass(frozen=True)
class AttestationReply:
    """What ``GET /attestation`` answers. Nothing in it is trusted before verification."""

    kind: str
    certificate: bytes
    evidence: bytes
    nonce: bytes | None = None
    collateral: bytes | None = None
    certificates: tuple[bytes, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)


def request_path(nonce: bytes | None) -> str:
    """``/attestation``, with ``?nonce=HEX`` when a nonce is given."""
    return ATTESTATION_PATH if nonce is None else f"{ATTESTATION_PATH}?nonce={nonce.hex()}"


def parse_nonce(value: str | None) -> bytes | None:
    """The nonce of a request's ``nonce`` query parameter; ProtocolError when malformed."""
    if value is None:
        return None
    if not NONCE_MIN_SIZE * 2 <= len(value) <= NONCE_MAX_SIZE * 2 or len(value) % 2:
        raise ProtocolError(
            f"nonce must be {NONCE_MIN_SIZE} to {NONCE_MAX_SIZE} bytes in hex "
            f"({NONCE_MIN_SIZE * 2} to {NONCE_MAX_SIZE * 2} hex digits)"
        )
    if not set(value) <= _NONCE_HEX:  # bytes.fromhex would also skip spaces
        raise ProtocolError("nonce must be hex digits only")
    return bytes.fromhex(value)


def encode_reply(reply: AttestationReply) -> bytes:
    """The CBOR body of a reply."""
    return cbor2.dumps(
        {
            "version": ATTESTATION_VERSION,
            "kind": reply.kind,
            "certificate": reply.certificate,
            "evidence": reply.evidence,
            "nonce": reply.nonce,
            "collateral": reply.collateral,
            "certificates": list(reply.certificates),
            "info": reply.info,
        }
    )


def _field(doc: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind):
        raise ProtocolError(f"the attestation reply has no valid {name}")
    return value


def decode_reply(body: bytes | bytearray) -> AttestationReply:
    """Parse a reply strictly; ProtocolError for anything else (nothing is verified here)."""
    try:
        doc = loads_cbor(body)  # the server is not verified yet
    except Exception as exc:  # cbor2 raises several types on garbage
        raise ProtocolError("the attestation reply is not valid CBOR") from exc
    if not isinstance(doc, dict):
        raise ProtocolError("the attestation reply must be a CBOR map")
    if doc.get("version") != ATTESTATION_VERSION:
        raise ProtocolError(f"unsupported attestation reply version {brief(doc.get('version'))}")
    certificates = _field(doc, "certificates", list)
    if not all(isinstance(c, bytes) for c in certificates):
        raise ProtocolError("the attestation reply's certificates must be byte strings")
    return AttestationReply(
        kind=_field(doc, "kind", str),
        certificate=_field(doc, "certificate", bytes),
        evidence=_field(doc, "evidence", bytes),
        nonce=_field(doc, "nonce", (bytes, type(None))),
        collateral=_field(doc, "collateral", (bytes, type(None))),
        certificates=tuple(certificates),
        info=_field(doc, "info", dict),
    )
