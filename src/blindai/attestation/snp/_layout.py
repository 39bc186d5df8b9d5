"""SEV-SNP attestation report: 1184 bytes -> untrusted typed structure. No cryptography here.

Layout from the SEV-SNP firmware ABI specification (AMD 56860), table "ATTESTATION_REPORT
structure". Parsing is strict: the length is exact, the version known (2 to 5), every reserved
byte zero, the signature algorithm ECDSA P-384 with SHA-384. Anything else raises
:class:`~blindai.errors.EvidenceError`. A parsed :class:`SnpReport` is *not* verified.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from blindai.errors import EvidenceError

__all__ = [
    "POLICY_BITS",
    "POLICY_DEBUG_BIT",
    "POLICY_MIGRATE_MA_BIT",
    "REPORT_SIZE",
    "SIGNED_SIZE",
    "SUPPORTED_VERSIONS",
    "SnpReport",
    "TcbVersion",
    "parse_report",
]

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0  # the signature covers bytes 0x000..0x29F
SUPPORTED_VERSIONS = frozenset({2, 3, 4, 5})
SIGNATURE_ALGO_ECDSA_P384_SHA384 = 1
POLICY_DEBUG_BIT = 19
POLICY_MIGRATE_MA_BIT = 18
#: the guest policy's flag bits by position (SEV-SNP firmware ABI, "Guest Policy" table; bits
#: 7:0 are ABI_MINOR, 15:8 ABI_MAJOR, 17 is reserved and must be one, 63:26 must be zero)
POLICY_BITS = {
    16: "SMT",
    POLICY_MIGRATE_MA_BIT: "MIGRATE_MA",
    POLICY_DEBUG_BIT: "DEBUG",
    20: "SINGLE_SOCKET",
    21: "CXL_ALLOW",
    22: "MEM_AES_256_XTS",
    23: "RAPL_DIS",
    24: "CIPHERTEXT_HIDING_DRAM",
    25: "PAGE_SWAP_DISABLE",
}
_POLICY_RESERVED_ONE_BIT = 17
_POLICY_MBZ_FROM_BIT = 26
_KEY_INFO_MBZ_FROM_BIT = 5
_SIGNING_KEYS = {0: "vcek", 1: "vlek"}  # 7 means unsigned: rejected
_COMPONENT_SIZE = 72  # R and S, little-endian, zero-padded to 72 bytes
_ZEN3_ZEN4_FAMILY = 0x19


@dataclass(frozen=True, order=False)
class TcbVersion:
    """A TCB_VERSION (Milan and Genoa layout): security patch levels of the firmware parts.

    Bytes in report order: bootloader, tee, four reserved (zero), snp, microcode.
    """

    bootloader: int
    tee: int
    snp: int
    microcode: int

    def __post_init__(self) -> None:
        for name in ("bootloader", "tee", "snp", "microcode"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
                raise ValueError(f"TCB component {name} must be an integer in 0..255")

    @classmethod
    def from_bytes(cls, raw: bytes) -> TcbVersion:
        """Decode the 8 bytes of a TCB_VERSION; reserved bytes must be zero."""
        if len(raw) != 8:
            raise EvidenceError(f"TCB_VERSION is 8 bytes, got {len(raw)}")
        if any(raw[2:6]):
            raise EvidenceError(f"TCB_VERSION reserved bytes are not zero: {raw.hex()}")
        return cls(bootloader=raw[0], tee=raw[1], snp=raw[6], microcode=raw[7])

    def to_bytes(self) -> bytes:
        """The 8-byte report encoding."""
        return bytes([self.bootloader, self.tee, 0, 0, 0, 0, self.snp, self.microcode])

    def meets(self, minimum: TcbVersion) -> bool:
        """True when every component is at least the corresponding one of ``minimum``."""
        return (
            self.bootloader >= minimum.bootloader
            and self.tee >= minimum.tee
            and self.snp >= minimum.snp
            and self.microcode >= minimum.microcode
        )

    def to_dict(self) -> dict[str, int]:
        """The components by name."""
        return {
            "bootloader": self.bootloader,
            "tee": self.tee,
            "snp": self.snp,
            "microcode": self.microcode,
        }

    def __str__(self) -> str:
        return f"bl={self.bootloader} tee={self.tee} snp={self.snp} ucode={self.microcode}"


@dataclass(frozen=True)
class SnpReport:
    """An SEV-SNP attestation report as parsed, before any verification."""

    raw: bytes
    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: TcbVersion
    platform_info: int
    author_key_en: bool
    mask_chip_id: bool
    signing_key: str
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: TcbVersion
    cpuid: tuple[int, int, int] | None
    chip_id: bytes
    committed_tcb: TcbVersion
    current_version: tuple[int, int, int]
    committed_version: tuple[int, int, int]
    launch_tcb: TcbVersion
    launch_mit_vector: int | None
    current_mit_vector: int | None
    signature_r: int
    signature_s: int

    @property
    def signed_bytes(self) -> bytes:
        """The bytes covered by the signature (0x000..0x29F)."""
        return self.raw[:SIGNED_SIZE]

    @property
    def debug(self) -> bool:
        """Guest policy bit 19: the hypervisor may debug (decrypt) the guest."""
        return bool(self.policy >> POLICY_DEBUG_BIT & 1)


def _mbz(raw: bytes, lo: int, hi: int) -> None:
    if any(raw[lo:hi]):
        raise EvidenceError(f"reserved bytes 0x{lo:03x}..0x{hi - 1:03x} of the report are not zero")


def _u32(raw: bytes, off: int) -> int:
    return int(struct.unpack_from("<I", raw, off)[0])


def _u64(raw: bytes, off: int) -> int:
    return int(struct.unpack_from("<Q", raw, off)[0])


def _check_header(raw: bytes) -> int:
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise EvidenceError("an SEV-SNP report must be bytes")
    if len(raw) != REPORT_SIZE:
        raise EvidenceError(f"an SEV-SNP report is {REPORT_SIZE} bytes, got {len(raw)}")
    version = _u32(raw, 0x00)
    if version not in SUPPORTED_VERSIONS:
        raise EvidenceError(f"unsupported SEV-SNP report version {version}")
    algo = _u32(raw, 0x34)
    if algo != SIGNATURE_ALGO_ECDSA_P384_SHA384:
        raise EvidenceError(f"unsupported report signature algorithm {algo}")
    return version


def _check_policy(policy: int) -> None:
    if not policy >> _POLICY_RESERVED_ONE_BIT & 1:
        raise EvidenceError("guest policy bit 17 is reserved and must be one")
    if policy >> _POLICY_MBZ_FROM_BIT:
        raise EvidenceError(f"guest policy has reserved bits set: 0x{policy:x}")


def _key_info(raw: bytes) -> tuple[bool, bool, str]:
    info = _u32(raw, 0x48)
    if info >> _KEY_INFO_MBZ_FROM_BIT:
        raise EvidenceError(f"key information field has reserved bits set: 0x{info:x}")
    signing_key = _SIGNING_KEYS.get(info >> 2 & 7)
    if signing_key is None:
        raise EvidenceError(f"SIGNING_KEY {info >> 2 & 7} is neither VCEK (0) nor VLEK (1)")
    return bool(info & 1), bool(info & 2), signing_key


def _cpuid(raw: bytes, version: int) -> tuple[int, int, int] | None:
    if version < 3:
        _mbz(raw, 0x188, 0x1A0)
        return None
    _mbz(raw, 0x18B, 0x1A0)
    family, model, stepping = raw[0x188], raw[0x189], raw[0x18A]
    if family != _ZEN3_ZEN4_FAMILY:
        # Turin (family 0x1A) and later encode TCB_VERSION differently
        raise EvidenceError(f"unsupported CPU family 0x{family:02x} (Milan and Genoa are 0x19)")
    return family, model, stepping


def _mit_vectors(raw: bytes, version: int) -> tuple[int | None, int | None]:
    if version < 5:
        _mbz(raw, 0x1F8, SIGNED_SIZE)
        return None, None
    _mbz(raw, 0x208, SIGNED_SIZE)
    return _u64(raw, 0x1F8), _u64(raw, 0x200)


def _signature(raw: bytes) -> tuple[int, int]:
    sig = raw[SIGNED_SIZE:]
    _mbz(raw, SIGNED_SIZE + 2 * _COMPONENT_SIZE, REPORT_SIZE)
    r = int.from_bytes(sig[:_COMPONENT_SIZE], "little")
    s = int.from_bytes(sig[_COMPONENT_SIZE : 2 * _COMPONENT_SIZE], "little")
    return r, s


def parse_report(data: bytes) -> SnpReport:
    """Parse an SEV-SNP attestation report strictly; EvidenceError when malformed."""
    version = _check_header(data)
    raw = bytes(data)
    policy = _u64(raw, 0x08)
    _check_policy(policy)
    author_key_en, mask_chip_id, signing_key = _key_info(raw)
    _mbz(raw, 0x4C, 0x50)
    _mbz(raw, 0x1EB, 0x1EC)
    _mbz(raw, 0x1EF, 0x1F0)
    cpuid = _cpuid(raw, version)
    launch_mit, current_mit = _mit_vectors(raw, version)
    r, s = _signature(raw)
    return SnpReport(
        raw=raw,
        version=version,
        guest_svn=_u32(raw, 0x04),
        policy=policy,
        family_id=raw[0x10:0x20],
        image_id=raw[0x20:0x30],
        vmpl=_u32(raw, 0x30),
        signature_algo=_u32(raw, 0x34),
        current_tcb=TcbVersion.from_bytes(raw[0x38:0x40]),
        platform_info=_u64(raw, 0x40),
        author_key_en=author_key_en,
        mask_chip_id=mask_chip_id,
        signing_key=signing_key,
        report_data=raw[0x50:0x90],
        measurement=raw[0x90:0xC0],
        host_data=raw[0xC0:0xE0],
        id_key_digest=raw[0xE0:0x110],
        author_key_digest=raw[0x110:0x140],
        report_id=raw[0x140:0x160],
        report_id_ma=raw[0x160:0x180],
        reported_tcb=TcbVersion.from_bytes(raw[0x180:0x188]),
        cpuid=cpuid,
        chip_id=raw[0x1A0:0x1E0],
        committed_tcb=TcbVersion.from_bytes(raw[0x1E0:0x1E8]),
        current_version=(raw[0x1EA], raw[0x1E9], raw[0x1E8]),
        committed_version=(raw[0x1EE], raw[0x1ED], raw[0x1EC]),
        launch_tcb=TcbVersion.from_bytes(raw[0x1F0:0x1F8]),
        launch_mit_vector=launch_mit,
        current_mit_vector=current_mit,
        signature_r=r,
        signature_s=s,
    )
