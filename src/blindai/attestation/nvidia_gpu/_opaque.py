"""The OpaqueData of an NVIDIA MEASUREMENTS response: typed fields, strictly. No cryptography.

NVIDIA fills SPDM's free-form OpaqueData with items ``DataType (u16 LE) | DataSize (u16 LE) |
Data``. The type numbers and names are NVIDIA's (``OPAQUE_FIELD_ID_*`` in NVIDIA/nvtrust's
local GPU verifier; the same names in confidential-containers/trustee). An unknown or repeated
type, a truncated item, or a report without both ``driver_version`` and ``vbios_version``
raises :class:`EvidenceError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from blindai.errors import EvidenceError

__all__ = ["FIELD_NAMES", "TEXT_FIELDS", "OpaqueData", "parse_opaque", "vbios_version"]

#: OpaqueData type number -> field name
FIELD_NAMES: Mapping[int, str] = MappingProxyType(
    {
        1: "cert_issuer_name",
        2: "cert_authority_key_identifier",
        3: "driver_version",
        4: "gpu_info",
        5: "id_sku",
        6: "vbios_version",
        7: "manufacturer_id",
        8: "tamper_detection",
        9: "smc",
        10: "vpr",
        11: "nvdec0_status",
        12: "measurement_count",
        13: "cpr_info",
        14: "board_id",
        15: "chip_sku",
        16: "chip_sku_mod",
        17: "project",
        18: "project_sku",
        19: "project_sku_mod",
        20: "fwid",
        21: "protected_pcie_status",
        22: "switch_pdi",
        23: "floorswept_ports",
        24: "position_id",
        25: "lock_switch_status",
        32: "gpu_link_conn",
        33: "sys_enable_status",
        34: "opaque_data_version",
        35: "chip_info",
        36: "feature_flag",
    }
)
#: fields holding NUL-padded ASCII text
TEXT_FIELDS = frozenset(
    {"driver_version", "chip_sku", "chip_sku_mod", "project", "project_sku", "chip_info"}
)
_NVDEC = {0xAA: "enabled", 0x55: "disabled"}
_VBIOS_SIZE = 8
_FWID_SIZE = 48
_COUNT_SIZE = 4


@dataclass(frozen=True)
class OpaqueData:
    """The OpaqueData items: raw bytes by name, and the decoded fields verifiers rely on.

    ``vbios_version`` is NVIDIA's spelling (``96.00.9f.00.01``); ``measurement_count`` maps a
    block index (1-based) to the count NVIDIA reports for it; ``nvdec0_status`` is
    ``"enabled"``, ``"disabled"`` or None when absent.
    """

    raw: Mapping[str, bytes]
    driver_version: str
    vbios_version: str
    fwid: bytes | None
    nvdec0_status: str | None
    measurement_count: Mapping[int, int]

    def text(self, name: str) -> str | None:
        """A text field (``project``, ``chip_sku``, ...) without its NUL padding, or None."""
        value = self.raw.get(name)
        return None if value is None else _text(value, name)


def parse_opaque(data: bytes) -> OpaqueData:
    """Parse every item; check the ones whose format is known."""
    raw: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        if len(data) - pos < 4:
            raise EvidenceError(f"OpaqueData item header truncated: {len(data) - pos} byte(s)")
        kind = int.from_bytes(data[pos : pos + 2], "little")
        size = int.from_bytes(data[pos + 2 : pos + 4], "little")
        name = FIELD_NAMES.get(kind)
        if name is None:
            raise EvidenceError(f"unknown OpaqueData type {kind}")
        if name in raw:
            raise EvidenceError(f"OpaqueData type {name} appears twice")
        if pos + 4 + size > len(data):
            raise EvidenceError(f"OpaqueData item {name} truncated")
        raw[name] = data[pos + 4 : pos + 4 + size]
        pos += 4 + size
    for name in TEXT_FIELDS & set(raw):
        _text(raw[name], name)
    return _decoded(raw)


def _decoded(raw: dict[str, bytes]) -> OpaqueData:
    missing = [n for n in ("driver_version", "vbios_version") if n not in raw]
    if missing:
        raise EvidenceError(f"OpaqueData lacks {' and '.join(missing)}")
    fwid = raw.get("fwid")
    if fwid is not None and len(fwid) != _FWID_SIZE:
        raise EvidenceError(f"OpaqueData fwid must be {_FWID_SIZE} bytes, got {len(fwid)}")
    return OpaqueData(
        raw=MappingProxyType(raw),
        driver_version=_text(raw["driver_version"], "driver_version"),
        vbios_version=vbios_version(raw["vbios_version"]),
        fwid=fwid,
        nvdec0_status=_nvdec(raw.get("nvdec0_status")),
        measurement_count=MappingProxyType(_counts(raw.get("measurement_count", b""))),
    )


def _text(value: bytes, name: str) -> str:
    text = value.rstrip(b"\0")
    if not text or not all(0x20 < c < 0x7F for c in text):
        raise EvidenceError(f"OpaqueData {name} is not printable ASCII text")
    return text.decode("ascii")


def vbios_version(value: bytes) -> str:
    """NVIDIA's VBIOS version string: bytes 3..0 then byte 4, two hex digits each."""
    if len(value) != _VBIOS_SIZE:
        raise EvidenceError(f"OpaqueData vbios_version must be {_VBIOS_SIZE} bytes")
    half = _VBIOS_SIZE // 2
    return ".".join(f"{b:02x}" for b in (*reversed(value[:half]), value[half]))


def _nvdec(value: bytes | None) -> str | None:
    if value is None:
        return None
    if len(value) != 1 or value[0] not in _NVDEC:
        raise EvidenceError(f"OpaqueData nvdec0_status {value.hex()} is neither 0xaa nor 0x55")
    return _NVDEC[value[0]]


def _counts(value: bytes) -> dict[int, int]:
    if len(value) % _COUNT_SIZE:
        raise EvidenceError("OpaqueData measurement_count is not a list of u32")
    return {
        i // _COUNT_SIZE + 1: int.from_bytes(value[i : i + _COUNT_SIZE], "little")
        for i in range(0, len(value), _COUNT_SIZE)
    }
