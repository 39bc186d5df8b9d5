"""The Intel DCAP quote envelope: bytes -> untrusted typed structure. Strict; no crypto.

The envelope (header, report body, ECDSA signature data with the PCK chain) is the same for
SGX and TDX quotes of versions 3, 4 and 5; each kind parses its own report body
(:mod:`blindai.attestation.sgx`, :mod:`blindai.attestation.tdx`). Bytes after
``signature_data_len`` (a larger buffer, padding) are tolerated and left out of
:attr:`QuoteEnvelope.quote`. Nothing here is verified.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from blindai.errors import EvidenceError

__all__ = [
    "BODY_SGX",
    "BODY_TD10",
    "BODY_TD15",
    "INTEL_QE_VENDOR_ID",
    "TEE_SGX",
    "TEE_TDX",
    "QuoteEnvelope",
    "QuoteHeader",
    "parse_envelope",
]

HEADER_LEN = 48
TEE_SGX = 0x00000000
TEE_TDX = 0x00000081
BODY_SGX, BODY_TD10, BODY_TD15 = 1, 2, 3
#: body type -> (TEE type, exact length)
BODIES = {BODY_SGX: (TEE_SGX, 384), BODY_TD10: (TEE_TDX, 584), BODY_TD15: (TEE_TDX, 648)}
ATT_KEY_ECDSA_P256 = 2
CERT_PCK_CHAIN = 5
CERT_QE_REPORT = 6
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
_QE_REPORT_LEN = 384
_SIG_LEN = 64
_KEY_LEN = 64


@dataclass(frozen=True)
class QuoteHeader:
    """The 48-byte quote header (untrusted)."""

    version: int
    att_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes


@dataclass(frozen=True)
class QuoteEnvelope:
    """A structurally valid quote: header, body and the PCK chain it carries (untrusted).

    ``quote`` is the quote without trailing bytes (header through signature data), the input
    handed to dcap-qvl; ``pck_chain_pem`` is certification data type 5 (PCK leaf, PCK CA,
    root) with trailing NUL bytes removed.
    """

    header: QuoteHeader
    body_type: int
    body: bytes
    quote: bytes
    pck_chain_pem: bytes


class _Reader:
    """Cursor over a bounded byte range; every read past the end is an EvidenceError."""

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = start
        self.end = len(data) if end is None else end

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise EvidenceError(f"quote truncated: {what} needs {n} bytes")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "little")

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "little")

    def sub(self, n: int, what: str) -> _Reader:
        start = self.pos
        self.take(n, what)
        return _Reader(self.data, start, start + n)

    def expect_end(self, what: str) -> None:
        if self.pos != self.end:
            raise EvidenceError(f"{self.end - self.pos} unexpected bytes after {what}")


def _parse_header(r: _Reader) -> QuoteHeader:
    raw = r.take(HEADER_LEN, "header")
    version, key_type, tee_type, qe_svn, pce_svn = struct.unpack_from("<HHIHH", raw)
    header = QuoteHeader(version, key_type, tee_type, qe_svn, pce_svn, raw[12:28], raw[28:48])
    if version not in (3, 4, 5):
        raise EvidenceError(f"unsupported quote version {version}")
    if key_type != ATT_KEY_ECDSA_P256:
        raise EvidenceError(f"unsupported attestation key type {key_type}")
    if tee_type not in (TEE_SGX, TEE_TDX) or (version == 3 and tee_type != TEE_SGX):
        raise EvidenceError(f"unsupported TEE type {tee_type:#x} in a v{version} quote")
    if header.qe_vendor_id != INTEL_QE_VENDOR_ID:
        raise EvidenceError("quote from an unknown quoting enclave vendor")
    return header


def _parse_body(r: _Reader, header: QuoteHeader) -> tuple[int, bytes]:
    if header.version == 5:
        body_type, size = r.u16("body type"), r.u32("body size")
    else:
        body_type = BODY_SGX if header.tee_type == TEE_SGX else BODY_TD10
        size = BODIES[body_type][1]
    if body_type not in BODIES:
        raise EvidenceError(f"unsupported quote body type {body_type}")
    tee_type, length = BODIES[body_type]
    if tee_type != header.tee_type or size != length:
        raise EvidenceError(f"body type {body_type} of {size} bytes does not fit the header")
    return body_type, r.take(size, "report body")


def _parse_pck_chain(r: _Reader) -> bytes:
    cert_type, size = r.u16("certification data type"), r.u32("certification data size")
    if cert_type != CERT_PCK_CHAIN:
        raise EvidenceError(f"certification data type {cert_type} is not a PCK chain (5)")
    chain = r.take(size, "PCK certificate chain").rstrip(b"\0")
    r.expect_end("the PCK certificate chain")
    if not chain:
        raise EvidenceError("empty PCK certificate chain")
    return chain


def _parse_qe_section(r: _Reader) -> bytes:
    """QE report, its signature, QE auth data, then the PCK chain."""
    r.take(_QE_REPORT_LEN + _SIG_LEN, "QE report and signature")
    r.take(r.u16("QE auth data size"), "QE auth data")
    return _parse_pck_chain(r)


def _parse_signature_data(r: _Reader, version: int) -> bytes:
    r.take(_SIG_LEN + _KEY_LEN, "quote signature and attestation key")
    if version == 3:
        return _parse_qe_section(r)
    cert_type, size = r.u16("certification data type"), r.u32("certification data size")
    if cert_type != CERT_QE_REPORT:
        raise EvidenceError(f"certification data type {cert_type} is not a QE report (6)")
    inner = r.sub(size, "QE report certification data")
    r.expect_end("the certification data")
    return _parse_qe_section(inner)


_TEE_NAMES = {TEE_SGX: "an SGX", TEE_TDX: "a TDX"}


def parse_envelope(data: bytes, *, tee_type: int | None = None) -> QuoteEnvelope:
    """Parse a DCAP quote v3/v4/v5; EvidenceError when malformed, unsupported or, when
    ``tee_type`` is given (:data:`TEE_SGX`, :data:`TEE_TDX`), a quote of the other TEE."""
    r = _Reader(bytes(data))
    header = _parse_header(r)
    if tee_type is not None and header.tee_type != tee_type:
        raise EvidenceError(
            f"this is {_TEE_NAMES[header.tee_type]} quote, not {_TEE_NAMES[tee_type]} quote"
        )
    body_type, body = _parse_body(r, header)
    sig_len = r.u32("signature data size")
    chain = _parse_signature_data(r.sub(sig_len, "signature data"), header.version)
    return QuoteEnvelope(header, body_type, body, r.data[: r.pos], chain)
