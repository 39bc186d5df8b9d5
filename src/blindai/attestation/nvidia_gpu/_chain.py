"""The GPU's certificate chain: leaf (signs the report) -> ... -> NVIDIA Device Identity CA.

NVML returns the chain as PEM, leaf first and root last (for an H100: ``GH100 A01 GSP FMC LF``
-> ``GH100 A01 GSP BROM`` -> ``NVIDIA GH100 Provisioner ICA 1`` -> ``NVIDIA GH100 Identity``
-> ``NVIDIA Device Identity CA``). Here:

1. the last certificate must be byte-identical to a pinned root (SHA-256 of its DER);
2. every certificate is signed with ECDSA/SHA-384 and holds a P-384 key; the leaf asserts the
   digitalSignature key usage;
3. the path is built and checked by :mod:`cryptography.x509.verification` at ``now`` with the
   pinned root as the only trust anchor (WebPKI CA profile; the end-entity profile with the
   subjectAltName and authorityKeyIdentifier optional, as device leaves may lack them), and
   must be exactly the given order;
4. the leaf's TCG DICE extension (OID 2.23.133.5.4.1: version, a public key, and the FWID
   ``{sha384, digest}``) is parsed strictly; its FWID is returned for the verifier to compare
   with the report's.

Not checked: revocation. NVIDIA publishes OCSP (``ocsp.ndis.nvidia.com``) and CRLs for these
certificates; nothing here touches the network, so a revoked GPU certificate is accepted.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import verification
from cryptography.x509.oid import SignatureAlgorithmOID

from blindai.attestation._anchors import fingerprint
from blindai.attestation._x509 import load_der_certificate, load_pem_certificates
from blindai.errors import ChainError

__all__ = ["DICE_TCB_INFO_OID", "GpuChain", "leaf_fwid", "load_chain", "p384_key", "verify_chain"]

DICE_TCB_INFO_OID = x509.ObjectIdentifier("2.23.133.5.4.1")
#: subjectAltName otherName type of NVIDIA device leaves: "NVIDIA:<model>:<device id>"
NVIDIA_DEVICE_NAME_OID = x509.ObjectIdentifier("1.3.6.1.4.1.412.274.1")
MAX_CHAIN_BYTES = 64 << 10
MAX_CHAIN_LENGTH = 8
_SHA384_OID = bytes.fromhex("0609608648016503040202")
_FWID_SIZE = 48


@dataclass(frozen=True)
class GpuChain:
    """A verified chain: the leaf's key, FWID, device name parts and every subject."""

    leaf_key: ec.EllipticCurvePublicKey
    leaf_der: bytes
    fwid: bytes | None
    model: str | None
    device_id: str | None
    subjects: tuple[str, ...]


def load_chain(blobs: Iterable[bytes]) -> list[x509.Certificate]:
    """Certificates from PEM or DER blobs, in order; :class:`ChainError` when none or too many."""
    blobs = list(blobs)
    if sum(len(b) for b in blobs) > MAX_CHAIN_BYTES:
        raise ChainError(f"GPU certificates larger than {MAX_CHAIN_BYTES} bytes")
    certs: list[x509.Certificate] = []
    for blob in blobs:
        try:
            if b"-----BEGIN CERTIFICATE-----" in blob:
                certs.extend(load_pem_certificates(blob))
            else:
                certs.append(load_der_certificate(blob))
        except ValueError as exc:
            raise ChainError(f"a GPU certificate is not PEM or DER X.509: {exc}") from exc
    if len(certs) < 2:
        raise ChainError("the GPU certificate chain needs the leaf and the root at least")
    if len(certs) > MAX_CHAIN_LENGTH:
        raise ChainError(f"the GPU certificate chain is longer than {MAX_CHAIN_LENGTH}")
    return certs


def verify_chain(
    certs: Sequence[x509.Certificate], *, trusted_roots: Collection[bytes], now: datetime
) -> GpuChain:
    """Check ``certs`` (leaf first, pinned root last) at ``now``; see the module docstring."""
    root = certs[-1]
    if fingerprint(root.public_bytes(Encoding.DER)) not in trusted_roots:
        raise ChainError(
            "the GPU chain does not end at a pinned NVIDIA root (SHA-256 "
            f"{fingerprint(root.public_bytes(Encoding.DER)).hex()})"
        )
    keys = [p384_key(cert, i) for i, cert in enumerate(certs)]
    leaf = certs[0]
    _check_leaf_usage(leaf)
    _check_path(certs, now)
    model, device_id = _device_name(leaf)
    return GpuChain(
        leaf_key=keys[0],
        leaf_der=leaf.public_bytes(Encoding.DER),
        fwid=leaf_fwid(leaf),
        model=model,
        device_id=device_id,
        subjects=tuple(c.subject.rfc4514_string() for c in certs),
    )


def p384_key(cert: x509.Certificate, index: int) -> ec.EllipticCurvePublicKey:
    """The certificate's P-384 key, once its signature algorithm is ECDSA/SHA-384."""
    if cert.signature_algorithm_oid != SignatureAlgorithmOID.ECDSA_WITH_SHA384:
        raise ChainError(f"GPU certificate {index} is not signed with ECDSA/SHA-384")
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ChainError(f"GPU certificate {index} has an unusable public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise ChainError(f"GPU certificate {index} does not hold a P-384 key")
    return key


def _check_leaf_usage(leaf: x509.Certificate) -> None:
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise ChainError("the GPU leaf certificate has no key usage extension") from None
    if not usage.digital_signature:
        raise ChainError("the GPU leaf certificate lacks the digitalSignature key usage")


def _check_path(certs: Sequence[x509.Certificate], now: datetime) -> None:
    agnostic = verification.Criticality.AGNOSTIC
    ee_policy = (
        verification.ExtensionPolicy.webpki_defaults_ee()
        .may_be_present(x509.AuthorityKeyIdentifier, agnostic, None)
        .may_be_present(x509.SubjectAlternativeName, agnostic, None)
    )
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store([certs[-1]]))
        .time(now)
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee_policy
        )
        .build_client_verifier()
    )
    try:
        chain = verifier.verify(certs[0], list(certs[1:-1])).chain
    except verification.VerificationError as exc:
        raise ChainError(f"GPU certificate chain rejected at {now.isoformat()}: {exc}") from exc
    if chain != list(certs):
        raise ChainError("the GPU certificates are not the ordered chain leaf -> ... -> root")


def _device_name(leaf: x509.Certificate) -> tuple[str | None, str | None]:
    """``(model, device id)`` from the leaf's ``NVIDIA:<model>:<id>`` otherName, if present."""
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None, None
    for name in san.get_values_for_type(x509.OtherName):
        if name.type_id == NVIDIA_DEVICE_NAME_OID:
            text = _utf8_string(name.value)
            parts = text.split(":")
            if len(parts) != 3 or parts[0] != "NVIDIA" or not parts[1] or not parts[2]:
                raise ChainError(f"the GPU leaf's device name {text!r} is not NVIDIA:MODEL:ID")
            return parts[1], parts[2]
    return None, None


def _utf8_string(der: bytes) -> str:
    tag, start, end = _tlv(der, 0)
    if tag != 0x0C or end != len(der):
        raise ChainError("the GPU leaf's device name is not a DER UTF8String")
    try:
        return der[start:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ChainError("the GPU leaf's device name is not valid UTF-8") from exc


def leaf_fwid(leaf: x509.Certificate) -> bytes | None:
    """The FWID digest of the leaf's DICE extension, or None when it has none."""
    try:
        value = leaf.extensions.get_extension_for_oid(DICE_TCB_INFO_OID).value
    except x509.ExtensionNotFound:
        return None
    if not isinstance(value, x509.UnrecognizedExtension):  # pragma: no cover - cryptography
        raise ChainError("unexpected decoding of the GPU leaf's DICE extension")
    return _parse_dice(value.value)


def _parse_dice(der: bytes) -> bytes:
    """SEQUENCE { INTEGER 1, SubjectPublicKeyInfo, SEQUENCE { OID sha384, OCTET STRING } }."""
    # A hand parser, on purpose: NVIDIA's DICE TcbInfo extension has a custom OID, which
    # cryptography hands over undecoded (UnrecognizedExtension.value, the raw extnValue) and
    # has no public DER decoder for; adding an ASN.1 library to the client for these three
    # fields is not worth it. Only this exact form is accepted (strict, minimal lengths);
    # anything else is a ChainError.
    tag, start, end = _tlv(der, 0)
    if tag != 0x30 or end != len(der):
        raise ChainError("the GPU leaf's DICE extension is not one DER SEQUENCE")
    items = []
    pos = start
    while pos < end:
        item = _tlv(der, pos)
        items.append(item)
        pos = item[2]
    if [t for t, _, _ in items] != [0x02, 0x30, 0x30] or der[items[0][1] : items[0][2]] != b"\1":
        raise ChainError("the GPU leaf's DICE extension is not {version 1, key, FWID}")
    _, fstart, fend = items[2]
    _, _, oid_end = _tlv(der, fstart)
    dtag, dstart, dend = _tlv(der, oid_end)
    if der[fstart:oid_end] != _SHA384_OID or dtag != 0x04 or dend != fend:
        raise ChainError("the GPU leaf's FWID is not {sha384, OCTET STRING}")
    if dend - dstart != _FWID_SIZE:
        raise ChainError(f"the GPU leaf's FWID is not {_FWID_SIZE} bytes")
    return der[dstart:dend]


def _tlv(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of contents, end) of the DER element at ``pos``; strict lengths."""
    if pos + 2 > len(der):
        raise ChainError("truncated DER in a GPU certificate extension")
    tag, first = der[pos], der[pos + 1]
    head = pos + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        raw = der[head : head + count]
        if count == 0 or count > 2 or len(raw) != count or raw[0] == 0:
            raise ChainError("bad DER length in a GPU certificate extension")
        length, head = int.from_bytes(raw, "big"), head + count
        if length < 0x80:
            raise ChainError("non-minimal DER length in a GPU certificate extension")
    if head + length > len(der):
        raise ChainError("truncated DER in a GPU certificate extension")
    return tag, head, head + length
