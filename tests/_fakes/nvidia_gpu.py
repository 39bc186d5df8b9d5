"""A generated NVIDIA-shaped GPU: a P-384 PKI like NVIDIA's and SPDM reports signed by its leaf.

The chain mirrors the real one in shape (root "Device Identity CA" -> intermediate -> leaf
with digitalSignature, the ``NVIDIA:<model>:<id>`` subjectAltName and the TCG DICE extension
carrying the FWID), so that an :class:`NvidiaGpuVerifier` pinning the generated root accepts
the generated reports. A test double for hardware only: the verifier and the server's
attester are the real code.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

UTC = timezone.utc
DICE_OID = x509.ObjectIdentifier("2.23.133.5.4.1")
NAME_OID = x509.ObjectIdentifier("1.3.6.1.4.1.412.274.1")
SHA384_OID = bytes.fromhex("0609608648016503040202")
FWID = bytes(range(0xA0, 0xA0 + 48))
DRIVER = "550.90.07"
VBIOS = bytes.fromhex("009f009601000000")  # 96.00.9f.00.01


def der_len(n: int) -> bytes:
    """A DER length."""
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, body: bytes) -> bytes:
    """One DER element."""
    return bytes([tag]) + der_len(len(body)) + body


def dice_extension(fwid: bytes, key: ec.EllipticCurvePublicKey) -> bytes:
    """SEQUENCE { INTEGER 1, SubjectPublicKeyInfo, SEQUENCE { OID sha384, OCTET STRING fwid } }."""
    spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    fw = tlv(0x30, SHA384_OID + tlv(0x04, fwid))
    return tlv(0x30, tlv(0x02, b"\1") + spki + fw)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test NVIDIA"),
        ]
    )


def make_cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    *,
    issuer: x509.Certificate | None = None,
    issuer_key: ec.EllipticCurvePrivateKey | None = None,
    ca: bool,
    not_before: datetime,
    not_after: datetime,
    extensions: list[tuple[x509.ExtensionType, bool]] = (),  # type: ignore[assignment]
    hash_alg: hashes.HashAlgorithm | None = None,
) -> x509.Certificate:
    """A certificate for ``key``; self-signed without ``issuer``."""
    issuer_name = issuer.subject if issuer is not None else _name(subject)
    signer = issuer_key or key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False
        )
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, True)
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical)
    return builder.sign(signer, hash_alg or hashes.SHA384())


def leaf_usage(digital_signature: bool = True) -> x509.KeyUsage:
    """The leaf's key usage."""
    return x509.KeyUsage(digital_signature, False, False, False, False, False, False, False, False)


def device_name(text: str) -> x509.SubjectAlternativeName:
    """The ``NVIDIA:<model>:<id>`` otherName."""
    raw = text.encode()
    return x509.SubjectAlternativeName([x509.OtherName(NAME_OID, tlv(0x0C, raw))])


def opaque_item(kind: int, data: bytes) -> bytes:
    """One OpaqueData item."""
    return kind.to_bytes(2, "little") + len(data).to_bytes(2, "little") + data


def default_opaque(fwid: bytes | None = FWID, driver: str = DRIVER) -> bytes:
    """Driver and VBIOS versions, project, NVDEC0 disabled, FWID: like a real H100's."""
    items = [
        opaque_item(6, VBIOS),
        opaque_item(17, b"1010\0"),
        opaque_item(3, driver.encode() + b"\0"),
        opaque_item(11, b"\x55"),
        opaque_item(12, b"".join(i.to_bytes(4, "little") for i in range(1, 5))),
    ]
    if fwid is not None:
        items.append(opaque_item(20, fwid))
    return b"".join(items)


def block(index: int, value: bytes, value_type: int = 1, spec: int = 1) -> bytes:
    """One DMTF measurement block."""
    body = bytes([value_type]) + len(value).to_bytes(2, "little") + value
    return bytes([index, spec]) + len(body).to_bytes(2, "little") + body


def unsigned_report(
    nonce: bytes,
    measurements: dict[int, bytes],
    *,
    opaque: bytes | None = None,
    responder_nonce: bytes = b"\x42" * 32,
    slot: int = 0,
) -> bytes:
    """GET_MEASUREMENTS request || MEASUREMENTS response, without the signature."""
    request = bytes([0x11, 0xE0, 0x01, 0xFF]) + nonce + bytes([slot])
    record = b"".join(block(i, v) for i, v in sorted(measurements.items()))
    opaque = default_opaque() if opaque is None else opaque
    response = (
        bytes([0x11, 0x60, 0x00, slot, len(measurements)])
        + len(record).to_bytes(3, "little")
        + record
        + responder_nonce
        + len(opaque).to_bytes(2, "little")
        + opaque
    )
    return request + response


def sign(unsigned: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """Append the raw r||s ECDSA P-384/SHA-384 signature over ``unsigned``."""
    r, s = decode_dss_signature(key.sign(unsigned, ec.ECDSA(hashes.SHA384())))
    return unsigned + r.to_bytes(48, "big") + s.to_bytes(48, "big")


def default_measurements() -> dict[int, bytes]:
    """Four blocks, 48 bytes each."""
    return {i: hashlib.sha384(b"block %d" % i).digest() for i in range(1, 5)}


@dataclass
class FakeGpu:
    """One generated "NVIDIA" GPU: root -> intermediate -> leaf, and its measurements."""

    not_before: datetime
    not_after: datetime
    fwid: bytes = FWID
    model: str = "GH100"
    measurements: dict[int, bytes] = field(default_factory=default_measurements)

    def __post_init__(self) -> None:
        self.root_key = ec.generate_private_key(ec.SECP384R1())
        self.ica_key = ec.generate_private_key(ec.SECP384R1())
        self.leaf_key = ec.generate_private_key(ec.SECP384R1())
        span = {"not_before": self.not_before, "not_after": self.not_after}
        self.root = make_cert("Test Device Identity CA", self.root_key, ca=True, **span)
        self.ica = make_cert(
            "Test GH100 Identity", self.ica_key, issuer=self.root, issuer_key=self.root_key,
            ca=True, **span,
        )  # fmt: skip
        self.leaf = self.make_leaf()

    def make_leaf(
        self,
        *,
        key: ec.EllipticCurvePrivateKey | None = None,
        extensions: list[tuple[x509.ExtensionType, bool]] | None = None,
    ) -> x509.Certificate:
        """A leaf issued by the intermediate (the default extensions unless given)."""
        key = key or self.leaf_key
        if extensions is None:
            extensions = [
                (leaf_usage(), True),
                (device_name(f"NVIDIA:{self.model}:00C0FFEE"), False),
                (
                    x509.UnrecognizedExtension(
                        DICE_OID, dice_extension(self.fwid, key.public_key())
                    ),
                    False,
                ),
            ]
        return make_cert(
            "Test GSP FMC LF", key, issuer=self.ica, issuer_key=self.ica_key, ca=False,
            not_before=self.not_before, not_after=self.not_after, extensions=extensions,
        )  # fmt: skip

    @property
    def root_fingerprint(self) -> bytes:
        """SHA-256 of the generated root's DER: what a verifier trusting this GPU pins."""
        return hashlib.sha256(self.root.public_bytes(Encoding.DER)).digest()

    def chain_pem(self, leaf: x509.Certificate | None = None) -> bytes:
        """Leaf, intermediate, root: the PEM NVML returns."""
        certs = [leaf or self.leaf, self.ica, self.root]
        return b"".join(c.public_bytes(Encoding.PEM) for c in certs)

    def report(self, nonce: bytes, *, opaque: bytes | None = None) -> bytes:
        """A signed report answering ``nonce``."""
        return sign(unsigned_report(nonce, self.measurements, opaque=opaque), self.leaf_key)


def make_fake_gpu(now: datetime | None = None, **kwargs: object) -> FakeGpu:
    """A GPU whose certificates are valid a year around ``now`` (default: the real clock)."""
    now = now or datetime.now(UTC)
    return FakeGpu(
        not_before=now - timedelta(days=1), not_after=now + timedelta(days=365), **kwargs
    )  # type: ignore[arg-type]
