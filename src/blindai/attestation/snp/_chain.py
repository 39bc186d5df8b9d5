"""The AMD chain: VCEK -> ASK -> ARK, or VLEK -> ASVK -> ARK, the ARK pinned by fingerprint.

AMD names the certificates by common name: ``ARK-<product>`` (self-signed root),
``SEV-<product>`` (ASK, signs VCEKs), ``SEV-VLEK-<product>`` (ASVK, signs VLEKs),
``SEV-VCEK`` and ``SEV-VLEK`` (the report signing keys). Every AMD signature in the chain is
RSASSA-PSS with SHA-384, MGF1-SHA-384 and a 48-byte salt; nothing else is accepted.

Checked: the ARK's fingerprint is pinned and its self-signature holds; each signature in the
chain; each certificate's validity at ``now``; names link issuer to subject. Not checked:
revocation (AMD CRLs are not fetched: this code never touches the network).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from blindai.attestation._anchors import fingerprint
from blindai.errors import ChainError

__all__ = ["AmdChain", "leaf_candidates", "verify_chain"]

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
_LEAF_NAMES = {"vcek": "SEV-VCEK", "vlek": "SEV-VLEK"}


@dataclass(frozen=True)
class AmdChain:
    """A verified chain: the report-signing key certificate, its issuer and the pinned ARK.

    ``product`` is the ARK's product name (``ARK-Milan`` -> ``Milan``).
    """

    leaf: x509.Certificate
    intermediate: x509.Certificate
    ark: x509.Certificate
    product: str


def _common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if len(attrs) == 1 else ""
    return value if isinstance(value, str) else ""


def _declares_amd_pss(cert: x509.Certificate) -> bool:
    """The certificate says RSASSA-PSS with SHA-384 and MGF1 (the rest: :func:`_signed_by`)."""
    try:
        params = cert.signature_algorithm_parameters
        digest = cert.signature_hash_algorithm
    except (ValueError, UnsupportedAlgorithm):  # e.g. an unknown MGF or hash OID
        return False
    return (
        cert.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS
        and isinstance(digest, hashes.SHA384)
        and isinstance(params, padding.PSS)
        and isinstance(params.mgf, padding.MGF1)
    )


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """``issuer`` signed ``cert`` with AMD's RSASSA-PSS {SHA-384, MGF1-SHA-384, salt 48}.

    :meth:`~cryptography.x509.Certificate.verify_directly_issued_by` checks the names and the
    signature, and refuses a certificate whose outer signatureAlgorithm differs from the one
    inside its TBS. cryptography exposes neither the PSS salt length nor the MGF1 hash, so the
    signature is verified once more with AMD's exact parameters: a PSS signature made with
    another salt length or MGF1 hash does not verify under them.
    """
    if not _declares_amd_pss(cert):
        return False
    try:
        cert.verify_directly_issued_by(issuer)
        key = cast(rsa.RSAPublicKey, issuer.public_key())  # it just verified a PSS signature
        key.verify(cert.signature, cert.tbs_certificate_bytes, _PSS, hashes.SHA384())
    except (ValueError, TypeError, UnsupportedAlgorithm, InvalidSignature):
        return False
    return True


def _find_ark(certs: Sequence[x509.Certificate], pins: Collection[bytes]) -> x509.Certificate:
    for cert in certs:
        if fingerprint(cert.public_bytes(Encoding.DER)) in pins:
            if not _common_name(cert).startswith("ARK-") or not _signed_by(cert, cert):
                raise ChainError("the pinned ARK is not a valid self-signed AMD root")
            return cert
    raise ChainError("no certificate is a pinned AMD root key (ARK)")


def _find_signed(
    certs: Sequence[x509.Certificate], issuer: x509.Certificate, name: str, role: str
) -> x509.Certificate:
    candidates = [c for c in certs if _common_name(c) == name]
    if not candidates:
        raise ChainError(f"no {role} ({name}) among the certificates")
    for cert in candidates:
        if _signed_by(cert, issuer):
            return cert
    raise ChainError(f"no {role} ({name}) is signed by {_common_name(issuer)}")


def _check_validity(now: datetime, *certs: x509.Certificate) -> None:
    for cert in certs:
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise ChainError(
                f"{_common_name(cert)} is valid {cert.not_valid_before_utc.isoformat()} .. "
                f"{cert.not_valid_after_utc.isoformat()}, not at {now.isoformat()}"
            )


def leaf_candidates(certs: Sequence[x509.Certificate], signing_key: str) -> list[x509.Certificate]:
    """The certificates named as ``signing_key`` ("vcek" or "vlek") with an ECDSA P-384 key."""
    name = _LEAF_NAMES[signing_key]
    found = [c for c in certs if _common_name(c) == name]
    if not found:
        raise ChainError(f"no {signing_key.upper()} certificate ({name}) among the certificates")
    return [c for c in found if _is_p384(c)]


def _public_key(cert: x509.Certificate) -> object:
    try:
        return cert.public_key()
    except (ValueError, UnsupportedAlgorithm):  # e.g. a point not on the curve
        return None


def _is_p384(cert: x509.Certificate) -> bool:
    key = _public_key(cert)
    return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP384R1)


def verify_chain(
    certs: Sequence[x509.Certificate],
    leaf: x509.Certificate,
    *,
    signing_key: str,
    pins: Collection[bytes],
    now: datetime,
) -> AmdChain:
    """Check ``leaf`` (a VCEK or VLEK, per ``signing_key``) up to a pinned ARK, valid at ``now``."""
    ark = _find_ark(certs, pins)
    product = _common_name(ark).removeprefix("ARK-")
    inter_name = f"SEV-{product}" if signing_key == "vcek" else f"SEV-VLEK-{product}"
    role = "ASK" if signing_key == "vcek" else "ASVK"
    intermediate = _find_signed(certs, ark, inter_name, role)
    if not _signed_by(leaf, intermediate):
        raise ChainError(f"the {signing_key.upper()} is not signed by the {role} ({inter_name})")
    _check_validity(now, ark, intermediate, leaf)
    return AmdChain(leaf=leaf, intermediate=intermediate, ark=ark, product=product)
