"""AWS Nitro attestation documents: bytes -> unverified typed structure. Strict; no crypto.

An attestation document is a COSE_Sign1 structure (RFC 9052), untagged or with tag 18::

    [protected: bstr .cbor {1: -35}, unprotected: {}, payload: bstr, signature: bstr .size 96]

whose payload is the CBOR map described in AWS's "Verifying the root of trust" (module_id,
digest, timestamp, pcrs, certificate, cabundle, and optional public_key, user_data, nonce).

Strictness: every CBOR item must be in preferred encoding (definite lengths, shortest integer
and length forms, no tags inside, no duplicate map keys): re-encoding the decoded value must
give back the exact bytes. Unknown payload keys and header parameters are rejected; lengths
follow AWS's bounds. Anything else raises :class:`~blindai.errors.EvidenceError`.

Nothing here is trusted: :mod:`.verifier` checks the chain and the signature.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import cbor2

from blindai.errors import EvidenceError

__all__ = [
    "COSE_SIGN1_TAG",
    "ES384",
    "MAX_DOCUMENT_SIZE",
    "AttestationDocument",
    "CoseSign1",
    "parse",
    "parse_cose_sign1",
    "parse_document",
]

COSE_SIGN1_TAG = 18
ES384 = -35
#: generous: real documents are 4-7 KiB (each certificate is at most 1024 bytes)
MAX_DOCUMENT_SIZE = 64 * 1024
SIGNATURE_SIZE = 96
PROTECTED_ES384 = bytes(cbor2.dumps({1: ES384}))  # a1 01 38 22
DIGEST = "SHA384"
PCR_SIZE = 48  # SHA-384
PCR_COUNT = 32
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MAX_TIMESTAMP_MS = 253402300799999  # 9999-12-31T23:59:59.999Z, the last datetime
_REQUIRED = ("module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle")
_OPTIONAL = {"public_key": (1, 1024), "user_data": (0, 512), "nonce": (0, 512)}
_CERT_SIZE = (1, 1024)


@dataclass(frozen=True)
class CoseSign1:
    """An unverified COSE_Sign1 envelope."""

    protected: bytes
    payload: bytes
    signature: bytes

    def to_be_signed(self) -> bytes:
        """The Sig_structure ``["Signature1", protected, h'', payload]`` the signature covers."""
        return bytes(cbor2.dumps(["Signature1", self.protected, b"", self.payload]))


@dataclass(frozen=True)
class AttestationDocument:
    """An unverified attestation-document payload; absent optional fields are ``None``."""

    module_id: str
    digest: str
    timestamp_ms: int
    pcrs: dict[int, bytes]
    certificate: bytes
    cabundle: tuple[bytes, ...]
    public_key: bytes | None
    user_data: bytes | None
    nonce: bytes | None

    @property
    def issued_at(self) -> datetime:
        """``timestamp`` as an aware UTC datetime (millisecond precision)."""
        return _EPOCH + timedelta(milliseconds=self.timestamp_ms)


def parse(evidence: bytes) -> tuple[CoseSign1, AttestationDocument]:
    """Parse a whole attestation document: the envelope, then its payload."""
    envelope = parse_cose_sign1(evidence)
    return envelope, parse_document(envelope.payload)


def parse_cose_sign1(evidence: bytes) -> CoseSign1:
    """Parse the COSE_Sign1 envelope; only ES384 with a 96-byte raw signature is accepted."""
    if not isinstance(evidence, bytes):
        raise EvidenceError("a Nitro attestation document must be bytes")
    if len(evidence) > MAX_DOCUMENT_SIZE:
        raise EvidenceError(f"Nitro attestation document larger than {MAX_DOCUMENT_SIZE} bytes")
    item = _strict_loads(evidence, "attestation document", allow_tag=True)
    if isinstance(item, cbor2.CBORTag):
        if item.tag != COSE_SIGN1_TAG:
            raise EvidenceError(f"attestation document has CBOR tag {item.tag}, not COSE_Sign1")
        item = item.value
    # inside a tag, cbor2 yields a tuple and frozendicts
    if not isinstance(item, list | tuple) or len(item) != 4:
        raise EvidenceError("attestation document is not a 4-element COSE_Sign1 array")
    protected, unprotected, payload, signature = item
    _check_protected(protected)
    if not isinstance(unprotected, Mapping) or unprotected:
        raise EvidenceError("COSE unprotected header must be an empty map")
    if not isinstance(payload, bytes):
        raise EvidenceError("COSE payload must be a byte string (detached payloads unsupported)")
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_SIZE:
        raise EvidenceError(f"ES384 signature must be {SIGNATURE_SIZE} bytes (raw r||s)")
    return CoseSign1(protected=protected, payload=payload, signature=signature)


def _check_protected(protected: Any) -> None:
    # preferred encoding admits exactly one encoding of {1: -35}: compare the bytes
    if not isinstance(protected, bytes):
        raise EvidenceError("COSE protected header must be a byte string")
    if protected != PROTECTED_ES384:
        raise EvidenceError(
            f"COSE protected header must be exactly {{1 (alg): {ES384} (ES384)}}, "
            f"got {protected[:16].hex()}"
        )


def parse_document(payload: bytes) -> AttestationDocument:
    """Parse the attestation-document payload map with strict types and lengths."""
    doc = _strict_loads(payload, "attestation document payload")
    if not isinstance(doc, dict) or not all(isinstance(k, str) for k in doc):
        raise EvidenceError("attestation document payload must be a map with text keys")
    unknown = sorted(set(doc) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:  # names from unverified bytes: escaped (no newline, no terminal escape), few
        shown = ", ".join(f"{name!r:.40}" for name in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise EvidenceError(f"unknown attestation document field(s): {shown}{more}")
    missing = [k for k in _REQUIRED if k not in doc]
    if missing:
        raise EvidenceError(f"attestation document lacks field(s): {', '.join(missing)}")
    digest = _text(doc["digest"], "digest")
    if digest != DIGEST:
        raise EvidenceError(f"unsupported PCR digest {digest!r}: only {DIGEST} is accepted")
    return AttestationDocument(
        module_id=_text(doc["module_id"], "module_id"),
        digest=digest,
        timestamp_ms=_timestamp(doc["timestamp"]),
        pcrs=_pcrs(doc["pcrs"]),
        certificate=_bstr(doc["certificate"], "certificate", *_CERT_SIZE),
        cabundle=_cabundle(doc["cabundle"]),
        public_key=_optional(doc, "public_key"),
        user_data=_optional(doc, "user_data"),
        nonce=_optional(doc, "nonce"),
    )


def _strict_loads(data: bytes, what: str, *, allow_tag: bool = False) -> Any:
    """Decode one CBOR item; reject trailing bytes and anything but preferred encoding."""
    try:
        item = cbor2.loads(data)
        canonical = cbor2.dumps(item)
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise EvidenceError(f"{what} is not valid CBOR: {type(exc).__name__}") from exc
    if canonical != data:
        raise EvidenceError(f"{what}: trailing bytes or non-preferred CBOR encoding")
    if not allow_tag and _has_tag(item):
        raise EvidenceError(f"{what}: CBOR tags are not allowed here")
    return item


def _has_tag(item: Any) -> bool:
    if isinstance(item, cbor2.CBORTag):
        return True
    if isinstance(item, list):
        return any(_has_tag(x) for x in item)
    if isinstance(item, dict):
        return any(_has_tag(k) or _has_tag(v) for k, v in item.items())
    return False


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise EvidenceError(f"{name} must be a non-empty text string")
    return value


def _bstr(value: Any, name: str, low: int, high: int) -> bytes:
    if not isinstance(value, bytes):
        raise EvidenceError(f"{name} must be a byte string")
    if not low <= len(value) <= high:
        raise EvidenceError(f"{name} must be {low}..{high} bytes, got {len(value)}")
    return value


def _optional(doc: dict[str, Any], name: str) -> bytes | None:
    value = doc.get(name)
    return None if value is None else _bstr(value, name, *_OPTIONAL[name])


def _timestamp(value: Any) -> int:
    if type(value) is not int or not 0 < value <= _MAX_TIMESTAMP_MS:
        raise EvidenceError("timestamp must be a positive integer of milliseconds before 10000")
    return value


def _pcrs(value: Any) -> dict[int, bytes]:
    if not isinstance(value, dict) or not 1 <= len(value) <= PCR_COUNT:
        raise EvidenceError(f"pcrs must be a map of 1..{PCR_COUNT} entries")
    pcrs: dict[int, bytes] = {}
    for index, pcr in value.items():
        if type(index) is not int or not 0 <= index < PCR_COUNT:
            raise EvidenceError(f"PCR index must be an integer 0..{PCR_COUNT - 1}")
        pcrs[index] = _bstr(pcr, f"PCR{index}", PCR_SIZE, PCR_SIZE)
    if 0 not in pcrs:
        raise EvidenceError("pcrs lacks PCR0, the enclave image measurement")
    return pcrs


def _cabundle(value: Any) -> tuple[bytes, ...]:
    if not isinstance(value, list) or not value:
        raise EvidenceError("cabundle must be a non-empty array")
    return tuple(_bstr(c, f"cabundle[{i}]", *_CERT_SIZE) for i, c in enumerate(value))
