"""The Nitro certificate chain: ``cabundle[0]`` (a pinned root) -> ... -> ``certificate``.

AWS puts the whole chain in the document: ``cabundle[0]`` is the AWS Nitro Enclaves root,
``cabundle[i]`` issues ``cabundle[i + 1]`` and ``cabundle[-1]`` issues the enclave's
short-lived (3 h) ``certificate``. Here:

1. ``cabundle[0]`` must be byte-identical to a pinned root (SHA-256 of its DER);
2. every certificate must use ECDSA with SHA-384 over a P-384 key, and ``certificate`` must
   assert the digitalSignature key usage (which the WebPKI end-entity profile leaves open);
3. the path is built and checked by :mod:`cryptography.x509.verification` (signatures,
   validity, basic constraints, key usage, path length) at each of the given times, with the
   pinned root as the only trust anchor. The stock client profile requires an
   authorityKeyIdentifier and a subjectAltName on the leaf, which AWS's leaf lacks: the
   end-entity extension policy is the WebPKI default with those two made optional. The CA
   profile is the WebPKI default, unchanged;
4. the verified path must be exactly ``[certificate, cabundle[-1], ..., cabundle[0]]``: the
   path builder would accept an unordered or padded bundle, AWS's format does not.

Not checked: revocation (AWS publishes no CRL for these certificates; the CRL distribution
points in the intermediates are not fetched, as nothing here touches the network).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import SignatureAlgorithmOID

from blindai.attestation._anchors import fingerprint
from blindai.attestation._x509 import load_der_certificate
from blindai.errors import ChainError, EvidenceError

__all__ = ["verify_chain"]


def verify_chain(
    certificate: bytes,
    cabundle: Sequence[bytes],
    *,
    trusted_roots: frozenset[bytes],
    times: Sequence[tuple[str, datetime]],
) -> ec.EllipticCurvePublicKey:
    """Check the chain at every ``(label, time)``; return the leaf's P-384 public key.

    Raises :class:`ChainError` when the chain is not acceptable, :class:`EvidenceError` when a
    certificate is not DER X.509 at all.
    """
    if fingerprint(cabundle[0]) not in trusted_roots:
        raise ChainError(
            f"cabundle[0] is not a pinned AWS Nitro root (SHA-256 {fingerprint(cabundle[0]).hex()})"
        )
    bundle = [_load(der, f"cabundle[{i}]") for i, der in enumerate(cabundle)]
    leaf = _load(certificate, "certificate")
    names = [f"cabundle[{i}]" for i in range(len(bundle))] + ["certificate"]
    keys = [_p384_key(cert, name) for cert, name in zip([*bundle, leaf], names, strict=True)]
    for label, when in times:
        _check_path(leaf, bundle, when, label)
    _check_leaf_usage(leaf)
    return keys[-1]


def _load(der: bytes, name: str) -> x509.Certificate:
    try:
        return load_der_certificate(der)
    except ValueError as exc:
        raise EvidenceError(f"{name} is not a DER X.509 certificate") from exc


def _p384_key(cert: x509.Certificate, name: str) -> ec.EllipticCurvePublicKey:
    if cert.signature_algorithm_oid != SignatureAlgorithmOID.ECDSA_WITH_SHA384:
        raise ChainError(f"{name} is not signed with ECDSA/SHA-384")
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ChainError(f"{name} has an unusable public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise ChainError(f"{name} does not hold a P-384 key")
    return key


def _check_leaf_usage(leaf: x509.Certificate) -> None:
    # AWS's validation process: the target certificate must assert digitalSignature
    try:
        usage: x509.KeyUsage | None = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is None or not usage.digital_signature:
        raise ChainError("certificate lacks the digitalSignature key usage")


def _extension_policies() -> tuple[verification.ExtensionPolicy, verification.ExtensionPolicy]:
    agnostic = verification.Criticality.AGNOSTIC
    ee = (
        verification.ExtensionPolicy.webpki_defaults_ee()
        .may_be_present(x509.AuthorityKeyIdentifier, agnostic, None)
        .may_be_present(x509.SubjectAlternativeName, agnostic, None)
    )
    return verification.ExtensionPolicy.webpki_defaults_ca(), ee


def _check_path(
    leaf: x509.Certificate, bundle: list[x509.Certificate], when: datetime, label: str
) -> None:
    ca_policy, ee_policy = _extension_policies()
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store([bundle[0]]))
        .time(when)
        .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
        .build_client_verifier()
    )
    try:
        chain = verifier.verify(leaf, bundle[1:]).chain
    except verification.VerificationError as exc:
        raise ChainError(
            f"certificate chain rejected at {label} ({when.isoformat()}): {exc}"
        ) from exc
    if chain != [leaf, *reversed(bundle)]:
        raise ChainError("cabundle is not the ordered chain root -> ... -> issuer of certificate")
