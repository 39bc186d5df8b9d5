"""NVIDIA GPU attestation report: SPDM 1.1 GET_MEASUREMENTS + MEASUREMENTS -> untrusted structure.

The report NVML returns (``nvmlDeviceGetConfComputeGpuAttestationReport``) is the requester's
``GET_MEASUREMENTS`` message followed by the GPU's ``MEASUREMENTS`` response (DMTF DSP0274
1.1, tables "GET_MEASUREMENTS request message" and "Successful MEASUREMENTS response message"):

=========  ============================================================================
request    version 0x11, code 0xE0, Param1 0x01 (signature requested, bits 7:1 reserved),
           Param2 0xFF (all measurements), Nonce (32), SlotIDParam (bits 7:4 reserved)
response   version 0x11, code 0x60, Param1 0 (reserved when all measurements are asked),
           Param2 = the request's slot, NumberOfBlocks, MeasurementRecordLength (u24 LE),
           MeasurementRecord, Nonce (32), OpaqueLength (u16 LE, at most 1024), OpaqueData,
           Signature (96: ECDSA P-384 r||s, big-endian)
=========  ============================================================================

The signature covers the request and the response up to the signature (SPDM 1.1's L1/L2
transcript without VCA: ``GET_MEASUREMENTS || MEASUREMENTS-without-signature``), which is
``raw[:-96]``. Parsing is strict: every length must match exactly, reserved bits must be zero,
only DMTF-format measurement blocks with unique, increasing indices in 1..254, and nothing may
follow the signature. No cryptography here: a parsed :class:`SpdmReport` is *not* verified.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from blindai.attestation.nvidia_gpu._opaque import OpaqueData, parse_opaque
from blindai.errors import EvidenceError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "MAX_REPORT_SIZE",
    "NONCE_SIZE",
    "REQUEST_SIZE",
    "SIGNATURE_SIZE",
    "MeasurementBlock",
    "SpdmReport",
    "parse_report",
]

SPDM_VERSION = 0x11
GET_MEASUREMENTS = 0xE0
MEASUREMENTS = 0x60
REQUEST_SIZE = 37
NONCE_SIZE = 32
SIGNATURE_SIZE = 96
MAX_OPAQUE_SIZE = 1024  # SPDM 1.1: OpaqueLength shall not exceed 1024
MAX_REPORT_SIZE = 0x2000  # NVML's NVML_CC_GPU_ATTESTATION_REPORT_SIZE
_SIGNATURE_REQUESTED = 0x01
_ALL_MEASUREMENTS = 0xFF
_DMTF_SPECIFICATION = 0x01
_BLOCK_HEADER = 4  # Index, MeasurementSpecification, MeasurementSize (u16)
_DMTF_HEADER = 3  # DMTFSpecMeasurementValueType, DMTFSpecMeasurementValueSize (u16)
_RESPONSE_HEADER = 8


@dataclass(frozen=True)
class MeasurementBlock:
    """One DMTF measurement block: its index, value type (DSP0274 table 45) and value."""

    index: int
    value_type: int
    value: bytes


@dataclass(frozen=True)
class SpdmReport:
    """A parsed, unverified GPU attestation report.

    ``signed_bytes`` is what the GPU's leaf key signs; ``signature`` is raw r||s (48 + 48).
    """

    requester_nonce: bytes
    slot_id: int
    blocks: tuple[MeasurementBlock, ...]
    responder_nonce: bytes
    opaque: OpaqueData
    record: bytes
    signed_bytes: bytes
    signature: bytes

    @property
    def measurements(self) -> Mapping[int, bytes]:
        """Measurement values by block index."""
        return MappingProxyType({b.index: b.value for b in self.blocks})


def parse_report(raw: bytes) -> SpdmReport:
    """Parse request then response; :class:`EvidenceError` on anything unexpected."""
    if not isinstance(raw, bytes):
        raise EvidenceError("an NVIDIA GPU attestation report must be bytes")
    if len(raw) > MAX_REPORT_SIZE:
        raise EvidenceError(f"GPU attestation report larger than {MAX_REPORT_SIZE} bytes")
    if len(raw) < REQUEST_SIZE + _RESPONSE_HEADER:
        raise EvidenceError(f"GPU attestation report truncated: {len(raw)} bytes")
    nonce, slot = _parse_request(raw[:REQUEST_SIZE])
    return _parse_response(raw, REQUEST_SIZE, nonce, slot)


def _parse_request(req: bytes) -> tuple[bytes, int]:
    version, code, param1, param2 = req[0], req[1], req[2], req[3]
    _expect(version, SPDM_VERSION, "request SPDMVersion")
    _expect(code, GET_MEASUREMENTS, "request RequestResponseCode (GET_MEASUREMENTS)")
    _expect(param1, _SIGNATURE_REQUESTED, "request Param1 (signature requested, reserved bits)")
    _expect(param2, _ALL_MEASUREMENTS, "request Param2 (all measurements)")
    slot_param = req[36]
    if slot_param & 0xF0:
        raise EvidenceError(f"request SlotIDParam reserved bits set: {slot_param:#04x}")
    return req[4:36], slot_param & 0x0F


def _parse_response(raw: bytes, start: int, nonce: bytes, slot: int) -> SpdmReport:
    head = raw[start : start + _RESPONSE_HEADER]
    _expect(head[0], SPDM_VERSION, "response SPDMVersion")
    _expect(head[1], MEASUREMENTS, "response RequestResponseCode (MEASUREMENTS)")
    _expect(head[2], 0, "response Param1 (reserved)")
    _expect(head[3], slot, "response Param2 (slot of the request)")
    count = head[4]
    record_len = int.from_bytes(head[5:8], "little")
    pos = start + _RESPONSE_HEADER
    record = _take(raw, pos, record_len, "MeasurementRecord")
    pos += record_len
    responder_nonce = _take(raw, pos, NONCE_SIZE, "response Nonce")
    pos += NONCE_SIZE
    opaque_len = int.from_bytes(_take(raw, pos, 2, "OpaqueLength"), "little")
    if opaque_len > MAX_OPAQUE_SIZE:
        raise EvidenceError(f"OpaqueLength {opaque_len} is over SPDM's {MAX_OPAQUE_SIZE}")
    pos += 2
    opaque = parse_opaque(_take(raw, pos, opaque_len, "OpaqueData"))
    pos += opaque_len
    signature = _take(raw, pos, SIGNATURE_SIZE, "Signature")
    if pos + SIGNATURE_SIZE != len(raw):
        raise EvidenceError(f"{len(raw) - pos - SIGNATURE_SIZE} byte(s) after the signature")
    return SpdmReport(
        requester_nonce=nonce,
        slot_id=slot,
        blocks=_parse_record(record, count),
        responder_nonce=responder_nonce,
        opaque=opaque,
        record=record,
        signed_bytes=raw[:pos],
        signature=signature,
    )


def _parse_record(record: bytes, count: int) -> tuple[MeasurementBlock, ...]:
    if count == 0:
        raise EvidenceError("the MEASUREMENTS response holds no measurement block")
    blocks: list[MeasurementBlock] = []
    pos = 0
    for _ in range(count):
        block, pos = _parse_block(record, pos)
        if blocks and block.index <= blocks[-1].index:
            raise EvidenceError(f"measurement block index {block.index} out of order or repeated")
        blocks.append(block)
    if pos != len(record):
        raise EvidenceError(f"{len(record) - pos} byte(s) after the last measurement block")
    return tuple(blocks)


def _parse_block(record: bytes, pos: int) -> tuple[MeasurementBlock, int]:
    head = _take(record, pos, _BLOCK_HEADER, "measurement block header")
    index, spec = head[0], head[1]
    size = int.from_bytes(head[2:4], "little")
    if not 1 <= index <= 0xFE:
        raise EvidenceError(f"measurement block index {index} is reserved")
    _expect(spec, _DMTF_SPECIFICATION, f"block {index} MeasurementSpecification (DMTF)")
    body = _take(record, pos + _BLOCK_HEADER, size, f"measurement block {index}")
    if size < _DMTF_HEADER:
        raise EvidenceError(f"measurement block {index} too short for a DMTF measurement")
    value_size = int.from_bytes(body[1:3], "little")
    if value_size != size - _DMTF_HEADER:
        raise EvidenceError(
            f"measurement block {index}: value size {value_size} disagrees with block size {size}"
        )
    block = MeasurementBlock(index=index, value_type=body[0], value=body[_DMTF_HEADER:])
    return block, pos + _BLOCK_HEADER + size


def _take(data: bytes, pos: int, size: int, what: str) -> bytes:
    if pos + size > len(data):
        raise EvidenceError(f"GPU attestation report truncated in {what}")
    return data[pos : pos + size]


def _expect(value: int, want: int, what: str) -> None:
    if value != want:
        raise EvidenceError(f"{what} is {value:#04x}, expected {want:#04x}")
