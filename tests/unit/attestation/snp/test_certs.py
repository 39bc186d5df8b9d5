"""Certificate loading: DER, PEM bundles, the SNP certificate table; AMD extensions."""

from __future__ import annotations

import struct
import uuid
import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from blindai.attestation.snp._certs import (
    ARK_GUID,
    ASK_GUID,
    VCEK_GUID,
    VLEK_GUID,
    amd_tcb,
    build_cert_table,
    hardware_id,
    load_certificates,
    parse_cert_table,
)
from blindai.attestation.snp._layout import TcbVersion
from blindai.errors import ChainError, EvidenceError

from ._snp_kit import FakeAmd, RealSet, der


def _names(certs: list[x509.Certificate]) -> list[str]:
    return [c.subject.rfc4514_string().split(",")[0] for c in certs]


def test_guids_are_the_ghcb_values() -> None:
    assert str(VCEK_GUID) == "63da758d-e664-4564-adc5-f4b93be8accd"
    assert str(ASK_GUID) == "4ab7b379-bbac-4fe4-a02f-05aef327c782"
    assert str(ARK_GUID) == "c0b406a4-a803-4952-9743-3fb6014cd0ae"
    assert str(VLEK_GUID) == "a8074bc2-a25a-483e-aae6-39c045a0b8a1"


def test_loads_der_and_pem_bundles(sets: dict[str, RealSet]) -> None:
    certs = load_certificates(sets["go-sev-guest-milan"].certificates)
    assert _names(certs) == ["CN=SEV-VCEK", "CN=SEV-Milan", "CN=ARK-Milan"]
    certs = load_certificates(sets["trustee-milan-vlek"].certificates)
    assert _names(certs) == ["CN=SEV-VLEK", "CN=SEV-Milan", "CN=ARK-Milan", "CN=SEV-VLEK-Milan"]


def test_serial_zero_warning_is_contained(sets: dict[str, RealSet]) -> None:
    blobs = sets["go-sev-guest-milan"].certificates + sets["trustee-milan-vlek"].certificates
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        certs = load_certificates(blobs)
    assert len(certs) == 7
    assert caught == []


def _real_table(real: RealSet) -> tuple[bytes, list[x509.Certificate]]:
    vcek, ask, ark = load_certificates(real.certificates)
    entries = [(VCEK_GUID, der(vcek)), (ASK_GUID, der(ask)), (ARK_GUID, der(ark))]
    return build_cert_table(entries), [vcek, ask, ark]


def test_cert_table_round_trip(sets: dict[str, RealSet]) -> None:
    table, certs = _real_table(sets["virtee-sev-milan"])
    entries = parse_cert_table(table)
    assert [e.guid for e in entries] == [VCEK_GUID, ASK_GUID, ARK_GUID]
    assert [e.data for e in entries] == [der(c) for c in certs]
    # the table layout: 16-byte GUID (RFC 4122 order), u32 offset, u32 length; zero terminator
    guid, offset, length = struct.unpack_from("<16sII", table, 0)
    assert guid == bytes.fromhex("63da758de6644564adc5f4b93be8accd")
    assert offset == 4 * 24 and length == len(der(certs[0]))
    assert table[3 * 24 : 4 * 24] == bytes(24)
    assert load_certificates([table]) == certs


def test_cert_table_ignores_unknown_guids(fake_amd: FakeAmd) -> None:
    other = uuid.UUID("ecae0c0f-9502-43b1-afa2-0ae2e0d565b6")
    table = build_cert_table([(other, b"\x01" * 8), (ARK_GUID, der(fake_amd.ark))])
    assert len(parse_cert_table(table)) == 2
    assert load_certificates([table]) == [fake_amd.ark]


def test_cert_table_whose_first_byte_is_0x30() -> None:
    guid = uuid.UUID(bytes=b"\x30" + b"\x01" * 15)
    table = build_cert_table([(guid, b"\xaa" * 4)])
    assert load_certificates([table]) == []


def test_empty_cert_table_is_just_a_terminator() -> None:
    assert parse_cert_table(bytes(24)) == ()


@pytest.mark.parametrize(
    ("table", "match"),
    [
        (b"", "terminating"),
        (bytes(23), "terminating"),
        (struct.pack("<16sII", b"\x01" * 16, 48, 4) + b"\x00" * 4, "terminating"),
        (struct.pack("<16sII", b"\x01" * 16, 8, 4) + bytes(24) + b"\x00" * 8, "outside"),
        (struct.pack("<16sII", b"\x01" * 16, 48, 9) + bytes(24) + b"\x00" * 8, "outside"),
        (struct.pack("<16sII", b"\x01" * 16, 48, 0) + bytes(24), "outside"),
    ],
)
def test_malformed_cert_table(table: bytes, match: str) -> None:
    with pytest.raises(EvidenceError, match=match):
        parse_cert_table(table)


def _table_of_overlapping_entries(size: int) -> bytes:
    """As many entries as fit, each naming the same second half of the table."""
    count = size // 48
    start = 24 * (count + 1)
    entry = struct.pack("<16sII", uuid.uuid4().bytes, start, size - start)
    return entry * count + bytes(24) + b"\x30" * (size - start)


def test_overlapping_entries_are_refused_before_any_is_copied() -> None:
    """Each entry's bytes are copied: 5461 entries naming the same half of a 256 KiB table
    took 684 MiB (a 1 MiB auxblob from the host some 11 GiB, a 4 MiB answer from a server
    some 175 GiB)."""
    with pytest.raises(EvidenceError, match="overlaps another"):
        parse_cert_table(_table_of_overlapping_entries(64 << 10))  # 43 MiB without the check
    second = struct.pack("<16sII", b"\x02" * 16, 74, 4)  # 2 bytes into the first's
    table = struct.pack("<16sII", b"\x01" * 16, 72, 4) + second + bytes(24) + b"\x00" * 6
    with pytest.raises(EvidenceError, match="overlaps another"):
        parse_cert_table(table)
    adjacent = struct.pack("<16sII", b"\x02" * 16, 76, 2)
    table = struct.pack("<16sII", b"\x01" * 16, 72, 4) + adjacent + bytes(24) + b"\x00" * 6
    assert [len(e.data) for e in parse_cert_table(table)] == [4, 2]


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"not a certificate",
        b"\x30\x82\x01\x00" + b"\x00" * 20,
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ],
)
def test_unreadable_blob_is_chain_error(blob: bytes) -> None:
    with pytest.raises(ChainError, match="blob 0"):
        load_certificates([blob])


def test_cert_table_with_garbage_certificate_is_chain_error() -> None:
    table = build_cert_table([(VCEK_GUID, b"\x30\x03\x02\x01\x00")])
    with pytest.raises(ChainError, match="unreadable certificate"):
        load_certificates([table])


def test_real_vcek_extensions(sets: dict[str, RealSet]) -> None:
    real = sets["go-sev-guest-milan"]
    vcek = load_certificates(real.certificates)[0]
    assert amd_tcb(vcek) == TcbVersion(bootloader=2, tee=0, snp=5, microcode=68)
    assert hardware_id(vcek).hex() == real.chip_id


def test_hwid_as_octet_string(fake_amd: FakeAmd) -> None:
    hwid = bytes(range(64))
    cert = fake_amd.vcek(hwid=b"\x04\x40" + hwid)
    assert hardware_id(cert) == hwid


@pytest.mark.parametrize(
    "hwid", [b"\x01" * 63, b"\x04\x41" + b"\x01" * 64, b"\x03\x40" + bytes(64)]
)
def test_malformed_hwid(fake_amd: FakeAmd, hwid: bytes) -> None:
    with pytest.raises(ChainError, match="hwID"):
        hardware_id(fake_amd.vcek(hwid=hwid))


def test_missing_extensions(fake_amd: FakeAmd) -> None:
    cert = fake_amd.vcek(tcb=None, hwid=None)
    with pytest.raises(ChainError, match=r"lacks extension 1\.3\.6\.1\.4\.1\.3704\.1\.3\.1"):
        amd_tcb(cert)
    with pytest.raises(ChainError, match=r"lacks extension 1\.3\.6\.1\.4\.1\.3704\.1\.4"):
        hardware_id(cert)


@pytest.mark.parametrize(
    "value", [b"\x04\x01\x05", b"\x02\x01", b"\x02\x02\x01\x00", b"\x02\x01\xff"]
)
def test_malformed_tcb_extension(fake_amd: FakeAmd, value: bytes) -> None:
    cert = fake_amd.vcek(tcb=None, hwid=None)
    oid = x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.3.1")
    builder = x509.CertificateBuilder(
        issuer_name=cert.issuer,
        subject_name=cert.subject,
        public_key=cert.public_key(),
        serial_number=1,
        not_valid_before=cert.not_valid_before_utc,
        not_valid_after=cert.not_valid_after_utc,
    ).add_extension(x509.UnrecognizedExtension(oid, value), critical=False)
    bad = builder.sign(fake_amd.ask_key, hashes.SHA384())
    with pytest.raises(ChainError, match="malformed TCB extension"):
        amd_tcb(bad)
