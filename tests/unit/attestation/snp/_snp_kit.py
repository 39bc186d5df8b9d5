"""SEV-SNP test helpers: the four real evidence sets, and a generated AMD-like PKI for the paths
the real vectors cannot reach (the generated ARK is, of course, not pinned). The fixtures built
on them are in conftest.py."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from blindai.attestation.endorsements import Endorsements

NOW = datetime(2025, 6, 1, tzinfo=timezone.utc)
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
SHA384 = hashes.SHA384()


@dataclass(frozen=True)
class RealSet:
    """One real SEV-SNP evidence set and its documented values (tests/data/evidence/README.md)."""

    name: str
    report: bytes
    certificates: tuple[bytes, ...]
    measurement: str
    report_data: str
    reported_tcb: tuple[int, int, int, int]
    vmpl: int
    signing_key: str
    product: str
    version: int
    chip_id: str
    debug: bool

    @property
    def endorsements(self) -> Endorsements:
        return Endorsements(certificates=self.certificates)


_SETS = {
    "go-sev-guest-milan": dict(
        report="report.bin",
        certs=("vcek.der", "ask_ark_milan.pem"),
        measurement="b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01",
        report_data="0102030405" + "00" * 59,
        reported_tcb=(2, 0, 5, 68),
        vmpl=0,
        signing_key="vcek",
        product="Milan",
        version=2,
        chip_id="3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8e53786184ca39e359669a2b76a1936776b564ea464cdce40c05f63c9b610c5068b006b5d",
        debug=True,
    ),
    "virtee-sev-milan": dict(
        report="report.bin",
        certs=("vcek.der", "ask_ark_milan.pem"),
        measurement="7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f",
        report_data="d447b55d197491bfe15cf298f9de9986b7a7c4be2468b4f6e2d53b71d7c645810b0f2cdfca0040433be063fc1a8293f0f3f8dae7b79fecb3d1cd82bd6a93ebfd",
        reported_tcb=(3, 0, 8, 115),
        vmpl=0,
        signing_key="vcek",
        product="Milan",
        version=2,
        chip_id="d49554ec717f4e5b0fe6b143bcf0405bd7ae304727edf46603f2a76aef6a3abc15d7af38db757039029f0efacfd08e244324884738c72b082e2f87a44d541eb6",
        debug=False,
    ),
    "trustee-milan-vlek": dict(
        report="report.bin",
        certs=("vlek.der", "milan_ask_ark_asvk.pem"),
        measurement="8922ebbdd00ec2c541f36a6e7a82a8773a7accb451ed67bc94e740dbe92c93c4e8c9af857f5ceeb5a493df2a570d7bf0",
        report_data="819770b7e6ea6df8dd8fd4dd146b073c0bf4f3ce5b0977ecac486e3a05ed1bd54e2a7ac1f5d1ca02e7d7d5ef9f73b8574fd9359e3a480d741a4478e8a7bc27ca",
        reported_tcb=(4, 0, 24, 217),
        vmpl=1,
        signing_key="vlek",
        product="Milan",
        version=3,
        chip_id="00" * 64,
        debug=False,
    ),
    "trustee-azure-genoa": dict(
        report="derived/report.bin",
        certs=("derived/vcek.pem", "genoa_ask_ark_asvk.pem"),
        measurement="f57dc09a507c6ecd82369bffb600f0003792f4d99bc26e985ec0c266fc34faf3706faf814c9e61065768a6ff917c89ae",
        report_data="b581f12e29a2d7d64e5e0b738d563879a78b51c644d0fa0cce02b48699f6bf5f" + "00" * 32,
        reported_tcb=(10, 0, 23, 84),
        vmpl=0,
        signing_key="vcek",
        product="Genoa",
        version=3,
        chip_id="0506ffba875e939c2729d20c74eb72b4c5ba6bf7ea1faaa640141f12c6d64782fb487f68ce69dcd021e914cc0d9244327bc121f0242d6470903ad1d4aaea4ad1",
        debug=False,
    ),
}
SET_NAMES = sorted(_SETS)


def load_set(evidence_dir: Path, name: str) -> RealSet:
    spec = dict(_SETS[name])
    base = evidence_dir / "sev-snp" / name
    report = (base / str(spec.pop("report"))).read_bytes()
    certs = tuple((base / c).read_bytes() for c in spec.pop("certs"))  # type: ignore[attr-defined]
    return RealSet(name=name, report=report, certificates=certs, **spec)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# generated AMD-like PKI and reports

_AMD = "1.3.6.1.4.1.3704.1"
OID_TCB = {"bootloader": "3.1", "tee": "3.2", "snp": "3.3", "microcode": "3.8"}


def amd_name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Micro Devices"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def der_int(value: int) -> bytes:
    body = value.to_bytes(2, "big", signed=True).lstrip(b"\x00") or b"\x00"
    if body[0] & 0x80:
        body = b"\x00" + body
    return bytes([0x02, len(body)]) + body


def amd_extensions(
    tcb: tuple[int, int, int, int] | None, hwid: bytes | None
) -> list[x509.UnrecognizedExtension]:
    exts = []
    if tcb is not None:
        for (_, suffix), value in zip(OID_TCB.items(), tcb, strict=True):
            exts.append(
                x509.UnrecognizedExtension(
                    x509.ObjectIdentifier(f"{_AMD}.{suffix}"), der_int(value)
                )
            )
    if hwid is not None:
        exts.append(x509.UnrecognizedExtension(x509.ObjectIdentifier(f"{_AMD}.4"), hwid))
    return exts


def make_cert(
    *,
    subject: str,
    issuer: str,
    public_key: Any,
    signing_key: rsa.RSAPrivateKey,
    extensions: Sequence[x509.UnrecognizedExtension] = (),
    not_before: datetime = NOW - timedelta(days=365),
    not_after: datetime = NOW + timedelta(days=365),
    rsa_padding: Any = PSS,
    hash_algorithm: Any = SHA384,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(amd_name(subject))
        .issuer_name(amd_name(issuer))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(signing_key, hash_algorithm, rsa_padding=rsa_padding)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def make_report(
    *,
    version: int = 2,
    vmpl: int = 0,
    policy: int = 0x30000,
    key_info: int = 0,
    measurement: bytes = bytes(range(48)),
    report_data: bytes = b"\x11" * 64,
    tcb: tuple[int, int, int, int] = (3, 0, 8, 115),
    chip_id: bytes = b"\xc4" * 64,
    cpuid: tuple[int, int, int] = (0x19, 0x01, 0x01),
    mit_vectors: tuple[int, int] = (0, 0),
) -> bytearray:
    """An unsigned report with the given fields; everything else zero."""
    raw = bytearray(0x4A0)
    bl, tee, snp, ucode = tcb
    tcb_bytes = bytes([bl, tee, 0, 0, 0, 0, snp, ucode])
    struct.pack_into("<IIQ", raw, 0, version, 1, policy)
    struct.pack_into("<II", raw, 0x30, vmpl, 1)
    raw[0x38:0x40] = tcb_bytes
    struct.pack_into("<I", raw, 0x48, key_info)
    raw[0x50:0x90] = report_data
    raw[0x90:0xC0] = measurement
    raw[0x180:0x188] = tcb_bytes
    if version >= 3:
        raw[0x188:0x18B] = bytes(cpuid)
    raw[0x1A0:0x1E0] = chip_id
    raw[0x1E0:0x1E8] = tcb_bytes
    raw[0x1E8:0x1EB] = bytes([4, 52, 1])
    raw[0x1EC:0x1EF] = bytes([4, 52, 1])
    raw[0x1F0:0x1F8] = tcb_bytes
    if version >= 5:
        struct.pack_into("<QQ", raw, 0x1F8, *mit_vectors)
    return raw


def sign_report(raw: bytearray, key: ec.EllipticCurvePrivateKey) -> bytes:
    r, s = decode_dss_signature(key.sign(bytes(raw[:0x2A0]), ec.ECDSA(hashes.SHA384())))
    raw[0x2A0:0x2E8] = r.to_bytes(72, "little")
    raw[0x2E8:0x330] = s.to_bytes(72, "little")
    return bytes(raw)


@dataclass
class FakeAmd:
    """A generated ARK/ASK/ASVK and a P-384 VCEK and VLEK key, for one product."""

    product: str
    ark_key: rsa.RSAPrivateKey
    ask_key: rsa.RSAPrivateKey
    asvk_key: rsa.RSAPrivateKey
    vcek_key: ec.EllipticCurvePrivateKey
    vlek_key: ec.EllipticCurvePrivateKey
    ark: x509.Certificate
    ask: x509.Certificate
    asvk: x509.Certificate

    @property
    def ark_fingerprint(self) -> bytes:
        return hashlib.sha256(der(self.ark)).digest()

    def vcek(
        self,
        *,
        tcb: tuple[int, int, int, int] | None = (3, 0, 8, 115),
        hwid: bytes | None = b"\xc4" * 64,
        **kwargs: Any,
    ) -> x509.Certificate:
        return make_cert(
            subject="SEV-VCEK",
            issuer=f"SEV-{self.product}",
            public_key=self.vcek_key.public_key(),
            signing_key=self.ask_key,
            extensions=amd_extensions(tcb, hwid),
            **kwargs,
        )

    def vlek(
        self, *, tcb: tuple[int, int, int, int] | None = (3, 0, 8, 115), **kwargs: Any
    ) -> x509.Certificate:
        return make_cert(
            subject="SEV-VLEK",
            issuer=f"SEV-VLEK-{self.product}",
            public_key=self.vlek_key.public_key(),
            signing_key=self.asvk_key,
            extensions=amd_extensions(tcb, None),
            **kwargs,
        )

    def chain(self, leaf: x509.Certificate) -> tuple[bytes, ...]:
        return (der(leaf), der(self.ask), der(self.asvk), der(self.ark))


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_fake_amd(product: str = "Milan") -> FakeAmd:
    ark_key, ask_key, asvk_key = _rsa(), _rsa(), _rsa()
    ark_cn = f"ARK-{product}"
    long: dict[str, Any] = {
        "not_before": NOW - timedelta(days=3650),
        "not_after": NOW + timedelta(days=3650),
    }
    ark = make_cert(
        subject=ark_cn, issuer=ark_cn, public_key=ark_key.public_key(), signing_key=ark_key, **long
    )
    ask = make_cert(
        subject=f"SEV-{product}",
        issuer=ark_cn,
        public_key=ask_key.public_key(),
        signing_key=ark_key,
        **long,
    )
    asvk = make_cert(
        subject=f"SEV-VLEK-{product}",
        issuer=ark_cn,
        public_key=asvk_key.public_key(),
        signing_key=ark_key,
        **long,
    )
    return FakeAmd(
        product=product,
        ark_key=ark_key,
        ask_key=ask_key,
        asvk_key=asvk_key,
        vcek_key=ec.generate_private_key(ec.SECP384R1()),
        vlek_key=ec.generate_private_key(ec.SECP384R1()),
        ark=ark,
        ask=ask,
        asvk=asvk,
    )
