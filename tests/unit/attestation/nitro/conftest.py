"""Nitro test kit: a generated P-384 chain shaped like AWS's, and documents signed by its leaf.

The chain mirrors the real one (root -> regional -> zonal -> instance -> 3-hour enclave leaf,
ECDSA/SHA-384, the same extensions), so that a :class:`NitroVerifier` pinned to the generated
root accepts the generated documents; each test then breaks one thing. Real evidence is read
in place through ``evidence_dir``; the sets' documented facts are in ``NITRO_SETS``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

UTC = timezone.utc
T0 = datetime(2024, 1, 10, 12, 0, 0, tzinfo=UTC)  # the generated leaf's notBefore
DOC_TIME = T0 + timedelta(hours=1)  # the generated document's timestamp
NOW = DOC_TIME + timedelta(seconds=30)  # the verification time of the generated documents
PROTECTED = bytes.fromhex("a1013822")  # {1: -35}


def ms(when: datetime) -> int:
    """Milliseconds since the epoch."""
    return round(when.timestamp() * 1000)


@dataclass(frozen=True)
class NitroSet:
    """One real evidence set and what its README documents."""

    name: str
    now: datetime
    debug: bool
    module_id: str
    timestamp_ms: int
    pcrs: dict[int, str]  # the non-zero PCRs, hex
    public_key: bytes | None
    user_data: bytes | None
    nonce_len: int
    nonce_prefix: str = ""

    def path(self, evidence_dir: Path) -> Path:
        return evidence_dir / "nitro" / self.name / "attestation_doc.cbor"


PCR3 = (
    "4a9329d69c836267b18abbf9f4a38889124490453419e426"
    "818626348d21f989dc930b1562682a9082887454e53425aa"
)
NITRO_SETS = {
    s.name: s
    for s in (
        NitroSet(
            name="evervault-production-pcrs",
            now=datetime(2022, 10, 13, 9, 0, 0, tzinfo=UTC),
            debug=False,
            module_id="i-020b6af9246d90e92-enc0183d09086c24190",
            timestamp_ms=1665651482136,
            pcrs={
                0: (
                    "f4d48b81a460c9916d1e685119074bf24660afd3e34fae9f"
                    "ca0a0d28d9d5599936332687e6f66fc890ac8cf150142d8b"
                ),
                1: (
                    "bcdf05fefccaa8e55bf2c8d6dee9e79bbff31e34bf28a99a"
                    "a19e6b29c37ee80b214a414b7607236edf26fcb78654e63f"
                ),
                2: (
                    "d8f114da658de5481f8d9ec73907feb553560787522f705c"
                    "92d7d96beed8e15e2aa611984e098c576832c292e8dc469a"
                ),
                3: PCR3,
                4: (
                    "1f442c86d494a88185642086d904ed89f62fb66ee9997d7b"
                    "1a4f040faab3bba4244c768a584e5778195b3afc715637c6"
                ),
                8: (
                    "8790eb3cce6c83d07e84b126dc61ca923333d6f66615c4a7"
                    "9157de48c5ab2418bdc60746ea7b7afbff03a1c6210201cb"
                ),
            },
            public_key=None,
            user_data=None,
            nonce_len=256,
            nonce_prefix="cb3dc2eb76c0c1344adf10cc4868591e5bb7fa4b4a8069e144762f71ea1d0017",
        ),
        NitroSet(
            name="evervault-debug-userdata",
            now=datetime(2022, 10, 12, 14, 0, 0, tzinfo=UTC),
            debug=True,
            module_id="i-03ad7cdb817437eeb-enc0183cc7569b3f6e1",
            timestamp_ms=1665582606081,
            pcrs={
                3: PCR3,
                4: (
                    "615fa5b1a8838d392d8e54aacc3d9ac0db87d63cb826516c"
                    "4cc94307c986fe465b29f3f54a55a2f121265528ae0aa6a7"
                ),
            },
            public_key=b"my super secret key",
            user_data=b"hello, world!",
            nonce_len=0,
        ),
        NitroSet(
            name="evervault-debug-nonce",
            now=datetime(2023, 9, 18, 15, 3, 30, tzinfo=UTC),
            debug=True,
            module_id="i-0918f6c55e3b61d89-enc018aa8b8e2285d13",
            timestamp_ms=1695049410860,
            pcrs={
                3: PCR3,
                4: (
                    "d0531b1400dd43288c82c226c16bf647c637dd5e4d9b4f7a"
                    "8aaadc6d6760b854a06c7008cca0d15ca80094dd33a65065"
                ),
            },
            public_key=None,
            user_data=bytes.fromhex(
                "3059301306072a8648ce3d020106082a8648ce3d030107034200042afc52fe36bd5f190b5c90a7ef"
                "3349716dcbc4aa003dde71114b11d2faa6648e0713c527439746a8d23dab9e1b999e847762ef385b"
                "b5cf27295323b9908b2acb"
            ),
            nonce_len=256,
            nonce_prefix="bba6bfd51866d2e4e095ba3277f208a4",
        ),
    )
}


@pytest.fixture(params=sorted(NITRO_SETS))
def nitro_set(request: pytest.FixtureRequest) -> NitroSet:
    """Each real Nitro evidence set in turn."""
    return NITRO_SETS[request.param]


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


@dataclass
class Issued:
    """A generated certificate and its private key."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(Encoding.DER)


def issue(
    cn: str,
    issuer: Issued | None,
    *,
    not_before: datetime,
    not_after: datetime,
    ca: bool,
    key: ec.EllipticCurvePrivateKey | None = None,
    hash_alg: hashes.SHA256 | hashes.SHA384 | None = None,
    key_ids: bool = True,
    key_usage: bool = True,
    digital_signature: bool = True,
) -> Issued:
    """Issue a certificate shaped like AWS's (self-signed when ``issuer`` is None)."""
    key = key or ec.generate_private_key(ec.SECP384R1())
    signer = issuer.key if issuer else key
    issuer_name = issuer.cert.subject if issuer else _name(cn)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if key_usage:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=digital_signature,
                content_commitment=not ca,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if key_ids:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        if issuer is not None:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
                critical=False,
            )
    cert = builder.sign(signer, hash_alg or hashes.SHA384())
    return Issued(key, cert)


@dataclass
class Chain:
    """root -> regional -> zonal -> instance -> leaf, like AWS's cabundle + certificate."""

    root: Issued
    cas: list[Issued]  # regional, zonal, instance
    leaf: Issued

    @property
    def cabundle(self) -> list[bytes]:
        return [self.root.der, *(c.der for c in self.cas)]

    @property
    def root_fingerprint(self) -> bytes:
        return hashlib.sha256(self.root.der).digest()


def make_chain(**leaf_kwargs: Any) -> Chain:
    """A fresh generated chain; the leaf lives T0 .. T0 + 3 h."""
    root = issue(
        "test.nitro-root",
        None,
        not_before=datetime(2019, 1, 1, tzinfo=UTC),
        not_after=datetime(2049, 1, 1, tzinfo=UTC),
        ca=True,
    )
    regional = issue(
        "regional",
        root,
        not_before=datetime(2024, 1, 1, tzinfo=UTC),
        not_after=datetime(2024, 2, 1, tzinfo=UTC),
        ca=True,
    )
    zonal = issue(
        "zonal",
        regional,
        not_before=datetime(2024, 1, 9, tzinfo=UTC),
        not_after=datetime(2024, 1, 15, tzinfo=UTC),
        ca=True,
    )
    instance = issue(
        "instance",
        zonal,
        not_before=T0 - timedelta(hours=2),
        not_after=T0 + timedelta(days=1),
        ca=True,
        key_ids=False,
    )
    kwargs: dict[str, Any] = {
        "not_before": T0,
        "not_after": T0 + timedelta(hours=3),
        "ca": False,
        "key_ids": False,
    }
    kwargs.update(leaf_kwargs)
    leaf = issue("enclave", instance, **kwargs)
    return Chain(root, [regional, zonal, instance], leaf)


@pytest.fixture(scope="session")
def chain() -> Chain:
    """One generated chain shared by the session (keys are costly enough)."""
    return make_chain()


def default_payload(chain: Chain) -> dict[str, Any]:
    """A well-formed payload in AWS's key order, signed by nothing yet."""
    pcrs = {i: bytes(48) for i in range(16)}
    pcrs[0] = hashlib.sha384(b"enclave image").digest()
    return {
        "module_id": "i-0123456789abcdef0-enc0123456789abcdef",
        "digest": "SHA384",
        "timestamp": ms(DOC_TIME),
        "pcrs": pcrs,
        "certificate": chain.leaf.der,
        "cabundle": chain.cabundle,
        "public_key": None,
        "user_data": b"\x01" * 32,
        "nonce": b"\x02" * 16,
    }


def sign(key: ec.EllipticCurvePrivateKey, protected: bytes, payload: bytes) -> bytes:
    """Raw r||s ES384 signature over the COSE Sig_structure."""
    tbs = cbor2.dumps(["Signature1", protected, b"", payload])
    r, s = decode_dss_signature(key.sign(tbs, ec.ECDSA(hashes.SHA384())))
    return r.to_bytes(48, "big") + s.to_bytes(48, "big")


@dataclass
class DocSpec:
    """How to build one generated document; change one field per test."""

    payload: dict[str, Any] | None = None
    payload_bytes: bytes | None = None  # overrides payload when given
    protected: bytes = PROTECTED
    unprotected: Any = field(default_factory=dict)
    signer: ec.EllipticCurvePrivateKey | None = None  # default: the leaf key
    tag: int | None = None


DROP = object()  # a payload change that removes the key


def make_document(chain: Chain, spec: DocSpec | None = None, **changes: Any) -> bytes:
    """Encode and sign a COSE_Sign1 attestation document from ``spec`` (+ payload changes)."""
    spec = spec or DocSpec()
    payload = dict(spec.payload or default_payload(chain))
    for key, value in changes.items():
        if value is DROP:
            payload.pop(key, None)
        else:
            payload[key] = value
    body = spec.payload_bytes if spec.payload_bytes is not None else cbor2.dumps(payload)
    signature = sign(spec.signer or chain.leaf.key, spec.protected, body)
    item: Any = [spec.protected, spec.unprotected, body, signature]
    if spec.tag is not None:
        item = cbor2.CBORTag(spec.tag, item)
    return cbor2.dumps(item)


class Kit:
    """The helpers above, handed to tests as the ``kit`` fixture (no imports from conftest)."""

    UTC = UTC
    T0 = T0
    DOC_TIME = DOC_TIME
    NOW = NOW
    PROTECTED = PROTECTED
    DROP = DROP
    NITRO_SETS = NITRO_SETS
    DocSpec = DocSpec
    ms = staticmethod(ms)
    issue = staticmethod(issue)
    make_chain = staticmethod(make_chain)
    default_payload = staticmethod(default_payload)
    make_document = staticmethod(make_document)
    sign = staticmethod(sign)


@pytest.fixture(scope="session")
def kit() -> type[Kit]:
    """Constants and builders for generated Nitro documents."""
    return Kit
