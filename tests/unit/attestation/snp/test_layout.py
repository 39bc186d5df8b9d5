"""Strict parsing of the 1184-byte SEV-SNP report: real reports, then derived malformed ones."""

from __future__ import annotations

import struct

import pytest

from blindai.attestation.snp import TcbVersion
from blindai.attestation.snp._layout import REPORT_SIZE, parse_report
from blindai.errors import EvidenceError

from ._snp_kit import RealSet, make_report


def test_real_reports_parse_to_documented_fields(real_set: RealSet) -> None:
    report = parse_report(real_set.report)
    assert report.version == real_set.version
    assert report.measurement.hex() == real_set.measurement
    assert report.report_data.hex() == real_set.report_data
    assert report.vmpl == real_set.vmpl
    assert report.signing_key == real_set.signing_key
    assert report.chip_id.hex() == real_set.chip_id
    assert report.debug is real_set.debug
    bl, tee, snp, ucode = real_set.reported_tcb
    assert report.reported_tcb == TcbVersion(bootloader=bl, tee=tee, snp=snp, microcode=ucode)
    assert report.signed_bytes == real_set.report[:0x2A0]
    assert report.signature_algo == 1


def test_vlek_report_v3_details(sets: dict[str, RealSet]) -> None:
    report = parse_report(sets["trustee-milan-vlek"].report)
    assert report.cpuid == (0x19, 0x01, 0x01)
    assert report.platform_info == 0x27
    assert report.current_version == (1, 55, 29)
    assert report.current_tcb.microcode == 220 and report.committed_tcb.microcode == 219
    assert report.launch_mit_vector is None


def test_genoa_report_details(sets: dict[str, RealSet]) -> None:
    report = parse_report(sets["trustee-azure-genoa"].report)
    assert report.policy == 0x3001F
    assert report.guest_svn == 65547
    assert report.family_id.hex() == "01232000000000000000000000000000"
    assert report.image_id.hex() == "02000000000000000000000000000000"
    assert report.id_key_digest.hex().startswith("942fd93ebde6ea7a")
    assert report.cpuid == (0x19, 0x11, 0x01)
    assert report.current_version == (1, 55, 40)


def test_go_sev_guest_v2_has_no_cpuid(sets: dict[str, RealSet]) -> None:
    report = parse_report(sets["go-sev-guest-milan"].report)
    assert report.cpuid is None
    assert report.policy == 0xB0000
    assert report.current_version == (1, 49, 3)


@pytest.mark.parametrize("size", [0, 1, REPORT_SIZE - 1, REPORT_SIZE + 1, 2 * REPORT_SIZE])
def test_wrong_length_is_evidence_error(sets: dict[str, RealSet], size: int) -> None:
    data = (sets["virtee-sev-milan"].report * 2)[:size]
    with pytest.raises(EvidenceError, match="1184 bytes"):
        parse_report(data)


def test_non_bytes_is_evidence_error() -> None:
    with pytest.raises(EvidenceError):
        parse_report("not bytes")  # type: ignore[arg-type]


def _edit(raw: bytes, offset: int, value: bytes) -> bytes:
    out = bytearray(raw)
    out[offset : offset + len(value)] = value
    return bytes(out)


@pytest.mark.parametrize("version", [0, 1, 6, 7, 0xFFFFFFFF])
def test_unknown_version_is_evidence_error(sets: dict[str, RealSet], version: int) -> None:
    raw = _edit(sets["virtee-sev-milan"].report, 0, struct.pack("<I", version))
    with pytest.raises(EvidenceError, match="version"):
        parse_report(raw)


@pytest.mark.parametrize(
    ("name", "offset"),
    [
        ("virtee-sev-milan", 0x4C),  # after the key information field
        ("virtee-sev-milan", 0x188),  # v2: CPUID bytes are reserved
        ("virtee-sev-milan", 0x19F),
        ("trustee-milan-vlek", 0x18B),  # v3: after CPUID
        ("virtee-sev-milan", 0x1EB),
        ("virtee-sev-milan", 0x1EF),
        ("virtee-sev-milan", 0x1F8),  # v2-v4: no mitigation vectors
        ("trustee-milan-vlek", 0x29F),
        ("virtee-sev-milan", 0x2A0 + 144),  # after R and S
        ("virtee-sev-milan", 0x49F),
    ],
)
def test_non_zero_reserved_bytes_are_evidence_error(
    sets: dict[str, RealSet], name: str, offset: int
) -> None:
    raw = bytearray(sets[name].report)
    assert raw[offset] == 0
    raw[offset] = 0x01
    with pytest.raises(EvidenceError, match="reserved"):
        parse_report(bytes(raw))


@pytest.mark.parametrize("offset", [0x38 + 2, 0x180 + 3, 0x1E0 + 5, 0x1F0 + 4])
def test_tcb_reserved_bytes_are_evidence_error(sets: dict[str, RealSet], offset: int) -> None:
    raw = _edit(sets["virtee-sev-milan"].report, offset, b"\x01")
    with pytest.raises(EvidenceError, match="TCB_VERSION"):
        parse_report(raw)


@pytest.mark.parametrize(
    ("key_info", "match"),
    [(1 << 5, "reserved bits"), (2 << 2, "neither VCEK"), (7 << 2, "neither VCEK")],
)
def test_bad_key_information_is_evidence_error(
    sets: dict[str, RealSet], key_info: int, match: str
) -> None:
    raw = _edit(sets["virtee-sev-milan"].report, 0x48, struct.pack("<I", key_info))
    with pytest.raises(EvidenceError, match=match):
        parse_report(raw)


@pytest.mark.parametrize(
    ("policy", "match"), [(0x10000, "bit 17"), (0x30000 | 1 << 26, "reserved bits")]
)
def test_bad_guest_policy_is_evidence_error(
    sets: dict[str, RealSet], policy: int, match: str
) -> None:
    raw = _edit(sets["virtee-sev-milan"].report, 0x08, struct.pack("<Q", policy))
    with pytest.raises(EvidenceError, match=match):
        parse_report(raw)


@pytest.mark.parametrize("algo", [0, 2])
def test_unknown_signature_algorithm_is_evidence_error(sets: dict[str, RealSet], algo: int) -> None:
    raw = _edit(sets["virtee-sev-milan"].report, 0x34, struct.pack("<I", algo))
    with pytest.raises(EvidenceError, match="signature algorithm"):
        parse_report(raw)


def test_turin_family_is_unsupported() -> None:
    raw = make_report(version=3, cpuid=(0x1A, 0x02, 0x00))
    with pytest.raises(EvidenceError, match="CPU family"):
        parse_report(bytes(raw))


def test_version_5_mitigation_vectors() -> None:
    report = parse_report(bytes(make_report(version=5, mit_vectors=(3, 7))))
    assert (report.launch_mit_vector, report.current_mit_vector) == (3, 7)
    raw = make_report(version=5)
    raw[0x208] = 1
    with pytest.raises(EvidenceError, match="reserved"):
        parse_report(bytes(raw))


def test_key_info_flags() -> None:
    report = parse_report(bytes(make_report(key_info=0b111)))
    assert (report.author_key_en, report.mask_chip_id, report.signing_key) == (True, True, "vlek")


def test_tcb_version_round_trip_and_order() -> None:
    tcb = TcbVersion.from_bytes(bytes.fromhex("0300000000000873"))
    assert tcb == TcbVersion(bootloader=3, tee=0, snp=8, microcode=115)
    assert tcb.to_bytes().hex() == "0300000000000873"
    assert tcb.meets(tcb)
    assert tcb.meets(TcbVersion(bootloader=2, tee=0, snp=8, microcode=100))
    assert not tcb.meets(TcbVersion(bootloader=3, tee=0, snp=9, microcode=0))
    assert not tcb.meets(TcbVersion(bootloader=0, tee=1, snp=0, microcode=0))
    assert str(tcb) == "bl=3 tee=0 snp=8 ucode=115"
    assert tcb.to_dict() == {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}


@pytest.mark.parametrize("bad", [-1, 256, True, "3"])
def test_tcb_version_rejects_out_of_range(bad: object) -> None:
    with pytest.raises(ValueError, match=r"0\.\.255"):
        TcbVersion(bootloader=bad, tee=0, snp=0, microcode=0)  # type: ignore[arg-type]


def test_tcb_version_from_bytes_length() -> None:
    with pytest.raises(EvidenceError, match="8 bytes"):
        TcbVersion.from_bytes(b"\x00" * 7)
