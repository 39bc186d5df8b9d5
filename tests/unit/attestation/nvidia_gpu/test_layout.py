"""Strict SPDM parsing on generated reports: every length, reserved field and item checked."""

from __future__ import annotations

import pytest

from blindai.attestation.nvidia_gpu._layout import MAX_REPORT_SIZE, parse_report
from blindai.attestation.nvidia_gpu._opaque import parse_opaque, vbios_version
from blindai.errors import EvidenceError
from tests._fakes.nvidia_gpu import (
    default_measurements,
    default_opaque,
    opaque_item,
    unsigned_report,
)
from tests.unit.attestation.nvidia_gpu._gpu_kit import NONCE

SIG = b"\x01" * 96


def report(**kw: object) -> bytes:
    measurements = kw.pop("measurements", default_measurements())
    return unsigned_report(NONCE, measurements, **kw) + SIG  # type: ignore[arg-type]


def patch(data: bytes, at: int, value: int) -> bytes:
    return data[:at] + bytes([value]) + data[at + 1 :]


def test_generated_report_parses() -> None:
    parsed = parse_report(report())
    assert parsed.requester_nonce == NONCE and parsed.slot_id == 0
    assert dict(parsed.measurements) == default_measurements()
    assert [b.value_type for b in parsed.blocks] == [1, 1, 1, 1]
    assert parsed.signature == SIG and parsed.signed_bytes == report()[:-96]
    assert parsed.opaque.driver_version == "550.90.07"
    assert parsed.opaque.text("project") == "1010" and parsed.opaque.text("chip_sku") is None
    assert dict(parsed.opaque.measurement_count) == {1: 1, 2: 2, 3: 3, 4: 4}


@pytest.mark.parametrize(
    ("at", "value", "match"),
    [
        (0, 0x12, "request SPDMVersion"),
        (1, 0xE1, "GET_MEASUREMENTS"),
        (2, 0x00, "signature requested"),
        (2, 0x03, "signature requested"),
        (3, 0x01, "all measurements"),
        (36, 0x10, "SlotIDParam reserved"),
        (37, 0x10, "response SPDMVersion"),
        (38, 0x61, "MEASUREMENTS"),
        (39, 0x01, "Param1"),
        (40, 0x01, "slot of the request"),
    ],
)
def test_header_fields(at: int, value: int, match: str) -> None:
    with pytest.raises(EvidenceError, match=match):
        parse_report(patch(report(), at, value))


def test_slot_must_agree() -> None:
    assert parse_report(report(slot=3)).slot_id == 3
    with pytest.raises(EvidenceError, match="slot of the request"):
        parse_report(patch(report(slot=3), 40, 0))


def test_block_count_disagrees_with_record() -> None:
    with pytest.raises(EvidenceError):
        parse_report(patch(report(), 41, 5))  # five blocks announced, four present
    with pytest.raises(EvidenceError, match="after the last measurement block"):
        parse_report(patch(report(), 41, 3))


def test_no_block() -> None:
    with pytest.raises(EvidenceError, match="no measurement block"):
        parse_report(report(measurements={}))


@pytest.mark.parametrize("index", [0, 0xFF])
def test_reserved_block_index(index: int) -> None:
    with pytest.raises(EvidenceError, match="reserved"):
        parse_report(report(measurements={index: b"x" * 48}))


def test_blocks_out_of_order_or_repeated() -> None:
    raw = report(measurements={1: b"a" * 48, 2: b"b" * 48})
    record_at = 45
    swapped = patch(patch(raw, record_at, 2), record_at + 55, 1)
    with pytest.raises(EvidenceError, match="out of order"):
        parse_report(swapped)
    with pytest.raises(EvidenceError, match="out of order"):
        parse_report(patch(raw, record_at + 55, 1))


def test_block_sizes_must_agree() -> None:
    raw = report(measurements={1: b"a" * 48})
    with pytest.raises(EvidenceError, match="disagrees"):
        parse_report(patch(raw, 45 + 5, 47))  # DMTF value size 47 in a 51-byte block
    short = unsigned_report(NONCE, {}, opaque=default_opaque())
    body = bytes([1, 1, 2, 0, 0, 0])  # MeasurementSize 2: no room for the DMTF header
    record = (1).to_bytes(1, "little") + len(body).to_bytes(3, "little") + body
    forged = short[:41] + record + short[45:] + SIG
    with pytest.raises(EvidenceError, match="too short for a DMTF"):
        parse_report(forged)


def test_non_dmtf_block() -> None:
    with pytest.raises(EvidenceError, match="DMTF"):
        parse_report(patch(report(measurements={1: b"a" * 48}), 46, 2))


def test_opaque_length_over_spdm_limit() -> None:
    raw = report(measurements={1: b"a" * 48})
    at = 45 + 55 + 32
    big = raw[:at] + (1025).to_bytes(2, "little") + raw[at + 2 :]
    with pytest.raises(EvidenceError, match="1024"):
        parse_report(big)


def test_oversized_report() -> None:
    with pytest.raises(EvidenceError, match="larger"):
        parse_report(b"\x11" * (MAX_REPORT_SIZE + 1))


def test_not_bytes() -> None:
    with pytest.raises(EvidenceError, match="must be bytes"):
        parse_report(bytearray(report()))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("opaque", "match"),
    [
        (default_opaque() + opaque_item(99, b""), "unknown OpaqueData type 99"),
        (default_opaque() + opaque_item(17, b"x\0"), "appears twice"),
        (default_opaque() + b"\x01\x00", "header truncated"),
        (default_opaque() + opaque_item(14, b"1234")[:-1], "truncated"),
        (opaque_item(6, bytes(8)), "lacks driver_version"),
        (opaque_item(3, b"550\0"), "lacks vbios_version"),
        (opaque_item(3, b"5\x0150\0") + opaque_item(6, bytes(8)), "printable"),
        (opaque_item(3, b"\0\0") + opaque_item(6, bytes(8)), "printable"),
        (opaque_item(3, b"550\0") + opaque_item(6, bytes(7)), "8 bytes"),
        (default_opaque(fwid=None) + opaque_item(20, bytes(47)), "fwid"),
        (default_opaque() + opaque_item(21, b"\x55") + opaque_item(15, b"\xff"), "printable"),
    ],
)
def test_opaque_items(opaque: bytes, match: str) -> None:
    with pytest.raises(EvidenceError, match=match):
        parse_opaque(opaque)


@pytest.mark.parametrize(
    ("value", "ok"), [(b"\xaa", "enabled"), (b"\x55", "disabled"), (b"\x00", None), (b"", None)]
)
def test_nvdec0_status(value: bytes, ok: str | None) -> None:
    opaque = opaque_item(3, b"550\0") + opaque_item(6, bytes(8)) + opaque_item(11, value)
    if ok is None:
        with pytest.raises(EvidenceError, match="nvdec0_status"):
            parse_opaque(opaque)
    else:
        assert parse_opaque(opaque).nvdec0_status == ok


def test_measurement_count_must_be_u32s() -> None:
    with pytest.raises(EvidenceError, match="u32"):
        parse_opaque(opaque_item(3, b"5\0") + opaque_item(6, bytes(8)) + opaque_item(12, b"123"))


def test_vbios_version_spelling() -> None:
    assert vbios_version(bytes.fromhex("009f009601000000")) == "96.00.9f.00.01"
    assert vbios_version(bytes.fromhex("01005e9601000000")) == "96.5e.00.01.01"
