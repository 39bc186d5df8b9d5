"""AMD certificates: loading (DER, PEM, SNP certificate table) and the AMD X.509 extensions.

The SNP extended-report certificate table (``SNP_GET_EXT_REPORT``, the configfs-tsm
``auxblob``) is a list of 24-byte entries, a 16-byte GUID then little-endian u32 offset and
length (offsets from the start of the table), ended by an all-zero entry; the certificates
(DER) follow. GUIDs are in RFC 4122 byte order, as AMD's sev-tool (libuuid), virtee/sev and
go-sev-guest write and read them. Nothing loaded here is trusted: the chain is checked in
``_chain.py``.

AMD VCEK/VLEK certificates carry serial number 0, which ``cryptography`` parses with a
deprecation warning; it is silenced here, around the parse only, so no user sees it.
"""

from __future__ import annotations

import struct
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

from blindai.attestation._x509 import load_der_certificate, load_pem_certificates
from blindai.attestation.snp._layout import TcbVersion
from blindai.errors import ChainError, EvidenceError

__all__ = [
    "ARK_GUID",
    "ASK_GUID",
    "VCEK_GUID",
    "VLEK_GUID",
    "CertTableEntry",
    "amd_tcb",
    "build_cert_table",
    "hardware_id",
    "load_certificates",
    "parse_cert_table",
]

VCEK_GUID = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
ASK_GUID = uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782")  # also the ASVK
ARK_GUID = uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae")
VLEK_GUID = uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1")
_CERT_GUIDS = frozenset({VCEK_GUID, ASK_GUID, ARK_GUID, VLEK_GUID})

_ENTRY = struct.Struct("<16sII")
_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
_SERIAL_WARNING = "Parsed a serial number which wasn't positive"

_AMD = "1.3.6.1.4.1.3704.1"
OID_BL_SPL = x509.ObjectIdentifier(f"{_AMD}.3.1")
OID_TEE_SPL = x509.ObjectIdentifier(f"{_AMD}.3.2")
OID_SNP_SPL = x509.ObjectIdentifier(f"{_AMD}.3.3")
OID_UCODE_SPL = x509.ObjectIdentifier(f"{_AMD}.3.8")
OID_HWID = x509.ObjectIdentifier(f"{_AMD}.4")
HWID_SIZE = 64


@dataclass(frozen=True)
class CertTableEntry:
    """One entry of an SNP certificate table: a GUID and the bytes it points to."""

    guid: uuid.UUID
    data: bytes


def parse_cert_table(blob: bytes) -> tuple[CertTableEntry, ...]:
    """Parse an SNP extended-report certificate table; EvidenceError when malformed."""
    entries: list[tuple[uuid.UUID, int, int]] = []
    pos = 0
    while True:
        if pos + _ENTRY.size > len(blob):
            raise EvidenceError("certificate table has no all-zero terminating entry")
        guid, offset, length = _ENTRY.unpack_from(blob, pos)
        pos += _ENTRY.size
        if guid == bytes(16) and offset == 0 and length == 0:
            break
        entries.append((uuid.UUID(bytes=guid), offset, length))
    for guid_, offset, length in entries:
        if offset < pos or length == 0 or offset + length > len(blob):
            raise EvidenceError(f"certificate table entry {guid_} points outside the table")
    # entries must not overlap: each is copied, so that a few thousand entries naming the same
    # half of a 256 KiB table took 684 MiB (a 1 MiB auxblob some 11 GiB)
    end = pos
    for guid_, offset, length in sorted(entries, key=lambda e: e[1]):
        if offset < end:
            raise EvidenceError(f"certificate table entry {guid_} overlaps another")
        end = offset + length
    return tuple(CertTableEntry(g, bytes(blob[o : o + n])) for g, o, n in entries)


def build_cert_table(entries: Iterable[tuple[uuid.UUID, bytes]]) -> bytes:
    """Encode (GUID, DER) pairs as an SNP certificate table (the host's side; for tests)."""
    items = list(entries)
    offset = _ENTRY.size * (len(items) + 1)
    header = b""
    for guid, data in items:
        header += _ENTRY.pack(guid.bytes, offset, len(data))
        offset += len(data)
    return header + bytes(_ENTRY.size) + b"".join(data for _, data in items)


def _load_der(der: bytes) -> x509.Certificate:
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=_SERIAL_WARNING, category=CryptographyDeprecationWarning
        )
        return load_der_certificate(der)


def _load_pems(blob: bytes) -> list[x509.Certificate]:
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=_SERIAL_WARNING, category=CryptographyDeprecationWarning
        )
        return load_pem_certificates(blob)


def _load_blob(index: int, blob: bytes) -> list[x509.Certificate]:
    if _PEM_BEGIN in blob:
        try:
            return _load_pems(blob)
        except ValueError as exc:
            raise ChainError(f"certificate blob {index}: unreadable PEM") from exc
    der_error: ValueError | None = None
    if blob[:1] == b"\x30":
        try:
            return [_load_der(blob)]
        except ValueError as exc:
            der_error = exc  # a certificate table may start with 0x30 too
    try:
        table = parse_cert_table(blob)
    except EvidenceError as exc:
        if der_error is not None:
            raise ChainError(f"certificate blob {index}: unreadable DER ({der_error})") from exc
        raise ChainError(
            f"certificate blob {index} is not DER, PEM or a certificate table"
        ) from exc
    try:
        return [_load_der(e.data) for e in table if e.guid in _CERT_GUIDS]
    except ValueError as exc:
        raise ChainError(f"certificate table {index} holds an unreadable certificate") from exc


def load_certificates(blobs: Iterable[bytes]) -> list[x509.Certificate]:
    """All certificates in ``blobs``: DER, PEM (one or several) or SNP certificate tables."""
    certs: list[x509.Certificate] = []
    for index, blob in enumerate(blobs):
        certs.extend(_load_blob(index, bytes(blob)))
    return certs


def _der_small_int(der: bytes) -> int:
    # A hand parser, on purpose: the AMD TCB extensions have custom OIDs, which cryptography
    # hands over undecoded (UnrecognizedExtension.value: the raw extnValue) and has no public
    # DER decoder for. Only this form is accepted: a DER INTEGER, non-negative, one or two
    # content bytes (an SPL fits 0..255); anything else is malformed.
    if len(der) < 3 or der[0] != 0x02 or der[1] != len(der) - 2 or der[1] > 2:
        raise ValueError("not a small DER INTEGER")
    value = int.from_bytes(der[2:], "big", signed=True)
    if not 0 <= value <= 255:
        raise ValueError("SPL out of range")
    return value


def _extension_bytes(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bytes:
    """The raw extnValue of AMD extension ``oid`` (cryptography decodes no AMD extension)."""
    try:
        ext = cert.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound as exc:
        raise ChainError(f"AMD certificate lacks extension {oid.dotted_string}") from exc
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):  # pragma: no cover - AMD OIDs
        raise ChainError(f"unexpected extension type for {oid.dotted_string}")
    return value.value


def amd_tcb(cert: x509.Certificate) -> TcbVersion:
    """The TCB a VCEK/VLEK certifies (blSPL, teeSPL, snpSPL, ucodeSPL extensions)."""
    parts = {}
    for name, oid in (
        ("bootloader", OID_BL_SPL),
        ("tee", OID_TEE_SPL),
        ("snp", OID_SNP_SPL),
        ("microcode", OID_UCODE_SPL),
    ):
        try:
            parts[name] = _der_small_int(_extension_bytes(cert, oid))
        except ValueError as exc:
            raise ChainError(f"malformed TCB extension {oid.dotted_string}") from exc
    return TcbVersion(**parts)


def hardware_id(cert: x509.Certificate) -> bytes:
    """The VCEK's hwID extension: 64 raw bytes, or the same as a DER OCTET STRING."""
    # by hand, like _der_small_int: AMD's KDS puts the 64 bytes there without a DER tag (every
    # VCEK here does); a DER OCTET STRING of them is also read, as go-sev-guest does
    raw = _extension_bytes(cert, OID_HWID)
    if len(raw) == HWID_SIZE:
        return raw
    if len(raw) == HWID_SIZE + 2 and raw[0] == 0x04 and raw[1] == HWID_SIZE:
        return raw[2:]
    raise ChainError("malformed hwID extension in the VCEK")
