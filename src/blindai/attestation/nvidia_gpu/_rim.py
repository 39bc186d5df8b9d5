"""NVIDIA reference integrity manifests (RIMs): signed SWID tags holding golden measurements.

NVIDIA publishes one RIM per driver version and one per VBIOS version (ISO/IEC 19770-2 SWID
tags following TCG's RIM information model), signed with XMLDSig (enveloped, ECDSA P-384,
SHA-384, exclusive of nothing: C14N 1.1), the signer's chain in ``KeyInfo/X509Data``, leaf
first, ending at the NVIDIA CoRIM signing root. NVIDIA serves them online; here a deployment
gives the files, and each is checked offline:

1. parsed with lxml, no DTD, no entities, no network, at most ``MAX_RIM_BYTES``;
2. the ``X509Data`` chain is checked with :mod:`cryptography.x509.verification` at ``now``,
   its last certificate pinned by SHA-256 (:class:`~blindai.errors.ChainError`);
3. the XML signature is checked by ``signxml`` with that leaf, accepting only ECDSA-SHA384
   and SHA-384 digests and exactly one reference (:class:`~blindai.errors.SignatureError`);
4. the golden values are read from what the signature covers only: ``Meta/@colloquialVersion``
   and every ``Payload/Resource`` (index, active, alternatives, ``Hash0..HashN``, size).

A RIM's ``index`` counts from 0; the SPDM block it describes is ``index + 1``.

Not checked offline: OCSP or CRL status of the RIM signer's chain (NVIDIA's OCSP service is
not asked), and whether NVIDIA has since withdrawn the RIM. A RIM file must come from a source
the deployment trusts to be current.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from cryptography import x509

from blindai.attestation._x509 import load_pem_certificates
from blindai.attestation.nvidia_gpu._chain import verify_chain
from blindai.errors import ChainError, CollateralError, ConfigurationError, SignatureError

__all__ = ["MAX_RIM_BYTES", "GoldenMeasurement", "ReferenceManifest", "verify_manifest"]

MAX_RIM_BYTES = 1 << 20
MAX_ALTERNATIVES = 64
_SWID = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd"
_DSIG = "http://www.w3.org/2000/09/xmldsig#"
_SHA384 = "http://www.w3.org/2001/04/xmlenc#sha384"


@dataclass(frozen=True)
class GoldenMeasurement:
    """One active RIM entry: the SPDM block index it describes and its accepted values."""

    index: int
    name: str
    values: tuple[bytes, ...]


@dataclass(frozen=True)
class ReferenceManifest:
    """The verified content of one RIM: its version, signer and active golden measurements."""

    version: str
    signer: str
    measurements: Mapping[int, GoldenMeasurement]


def verify_manifest(
    data: bytes, *, trusted_roots: Collection[bytes], now: datetime
) -> ReferenceManifest:
    """Steps 1 to 4 of the module docstring; return the signed golden values."""
    root = _parse(data)
    certs = _signer_chain(root)
    chain = verify_chain(certs, trusted_roots=trusted_roots, now=now)
    signed = _check_signature(root, certs[0], now)
    return ReferenceManifest(
        version=_version(signed),
        signer=chain.subjects[0],
        measurements=MappingProxyType(_measurements(signed)),
    )


def _lxml() -> Any:
    try:
        from lxml import etree
    except ImportError as exc:  # pragma: no cover - signxml depends on lxml
        raise ConfigurationError(
            "RIM files need signxml and lxml: pip install 'blindai[rim]'"
        ) from exc
    return etree


def _parse(data: bytes) -> Any:
    if len(data) > MAX_RIM_BYTES:
        raise ConfigurationError(f"a RIM file is larger than {MAX_RIM_BYTES} bytes")
    etree = _lxml()
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    try:
        tree = etree.ElementTree(etree.fromstring(data, parser))
    except etree.XMLSyntaxError as exc:
        raise ConfigurationError(f"a RIM file is not well-formed XML: {exc}") from exc
    if tree.docinfo.doctype:
        raise ConfigurationError("a RIM file must not have a DOCTYPE")
    root = tree.getroot()
    if root.tag != f"{{{_SWID}}}SoftwareIdentity":
        raise ConfigurationError("a RIM file's root is not a SWID SoftwareIdentity")
    return root


def _signer_chain(root: Any) -> list[x509.Certificate]:
    sigs = root.findall(f"{{{_DSIG}}}Signature")
    if len(sigs) != 1:
        raise SignatureError(f"a RIM must hold exactly one enveloped signature, has {len(sigs)}")
    texts = sigs[0].findall(f"{{{_DSIG}}}KeyInfo/{{{_DSIG}}}X509Data/{{{_DSIG}}}X509Certificate")
    certs = []
    for text in texts:
        body = "".join((text.text or "").split())
        pem = f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"
        try:
            certs.extend(load_pem_certificates(pem.encode("ascii")))
        except ValueError as exc:
            raise ChainError("a RIM signer certificate is not valid X.509") from exc
    if len(certs) < 2:
        raise ChainError("a RIM must carry its signer's chain up to the root in X509Data")
    return certs


def _check_signature(root: Any, leaf: x509.Certificate, now: datetime) -> Any:
    try:
        from signxml.algorithms import DigestAlgorithm, SignatureMethod
        from signxml.exceptions import InvalidInput, InvalidSignature
        from signxml.verifier import SignatureConfiguration, XMLVerifier
    except ImportError as exc:  # pragma: no cover - the dev extra installs signxml
        raise ConfigurationError("RIM files need signxml: pip install 'blindai[rim]'") from exc

    config = SignatureConfiguration(
        location="./",
        expect_references=1,
        signature_methods=frozenset({SignatureMethod.ECDSA_SHA384}),
        digest_algorithms=frozenset({DigestAlgorithm.SHA384}),
        verification_time=now,
    )
    try:
        result = XMLVerifier().verify(root, x509_cert=leaf, expect_config=config)
    except (InvalidSignature, InvalidInput) as exc:
        raise SignatureError(f"a RIM's XML signature does not verify: {exc}") from exc
    return result.signed_xml  # type: ignore[union-attr]


def _version(signed: Any) -> str:
    meta = signed.find(f"{{{_SWID}}}Meta")
    version = meta.get("colloquialVersion") if meta is not None else None
    if not version:
        raise CollateralError("a RIM has no Meta/@colloquialVersion")
    return str(version).lower()


def _measurements(signed: Any) -> dict[int, GoldenMeasurement]:
    payload = signed.find(f"{{{_SWID}}}Payload")
    if payload is None:
        raise CollateralError("a RIM has no Payload")
    found: dict[int, GoldenMeasurement] = {}
    seen: set[int] = set()
    for resource in payload.findall(f"{{{_SWID}}}Resource"):
        index, golden = _resource(resource)
        if index in seen:
            raise CollateralError(f"a RIM gives measurement index {index - 1} twice")
        seen.add(index)
        if golden is not None:
            found[index] = golden
    if not found:
        raise CollateralError("a RIM has no active measurement")
    return found


def _resource(resource: Any) -> tuple[int, GoldenMeasurement | None]:
    try:
        index = int(resource.get("index")) + 1
        count = int(resource.get("alternatives"))
        size = int(resource.get("size"))
    except (TypeError, ValueError) as exc:
        raise CollateralError("a RIM Resource lacks a numeric index, alternatives or size") from exc
    if not 1 <= index <= 0xFE or not 1 <= count <= MAX_ALTERNATIVES or size <= 0:
        raise CollateralError("a RIM Resource has index, alternatives or size out of range")
    active = resource.get("active")
    if active not in ("True", "False"):
        raise CollateralError(f"RIM measurement {index - 1}: active must be True or False")
    values = tuple(_hash(resource, i, size, index) for i in range(count))
    if active == "False":
        return index, None
    return index, GoldenMeasurement(index=index, name=resource.get("name") or "", values=values)


def _hash(resource: Any, i: int, size: int, index: int) -> bytes:
    text = resource.get(f"{{{_SHA384}}}Hash{i}")
    try:
        value = bytes.fromhex(text or "")
    except ValueError:
        value = b""
    if len(value) != size:
        raise CollateralError(f"RIM measurement {index - 1}: Hash{i} is not {size} bytes of hex")
    return value
