"""TDX policy: expected TD measurements, TDX module, attributes, debug and TCB statuses.

TOML section ``[tdx]``::

    [tdx]
    mr_td = "91eb2b44..."                 # hex (48 bytes), or a list of hex values
    rtmr1 = "0084452c..."                 # rtmr1, rtmr2: required beside mr_td (below)
    rtmr2 = "d833feef..."
    rtmr0 = "44c0197b..."                 # rtmr0, rtmr3: optional
    mr_seam = "5b38e33a..."
    mr_config_id = "a1b2c3..."            # mr_config_id, mr_owner, mr_owner_config: optional
    mr_service_td = "..."                 # quote v5 only; left out: must be zero
    td_attributes = "0x10000000"          # under td_attributes_mask (DEBUG left out)
    xfam = "0x602e7"                      # under xfam_mask
    allow_debug = false
    allowed_tcb_statuses = ["UpToDate"]
    min_tcb_evaluation_data_number = 17   # optional: collateral from this TCB recovery on

MRTD measures the TD firmware only: the kernel, its command line and the initrd are measured
into RTMR1 and RTMR2, so ``mr_td`` without ``rtmr1`` and ``rtmr2`` would accept any OS that
firmware boots. Both are required beside ``mr_td`` unless ``allow_unpinned_rtmrs = true`` says,
explicitly, that the boot chain after the firmware may be anything.

TD attributes and XFAM are little-endian 64-bit integers, as the TDX module defines them.
MRCONFIGID, MROWNER and MROWNERCONFIG are the 48-byte values the host sets when it creates the
TD; Confidential Containers puts the digest of the pod's init-data in MRCONFIGID.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from blindai.attestation._bits import XSAVE_BITS
from blindai.attestation.claims import VerifiedClaims
from blindai.attestation.dcap import fields as f
from blindai.attestation.tdx._claims import TdxClaims
from blindai.errors import ConfigurationError, Violation

__all__ = ["DEBUG", "MIGRATABLE", "SEPT_VE_DISABLE", "TD_ATTRIBUTE_BITS", "TUD", "TdxPolicy"]

_U64 = (1 << 64) - 1
DEBUG = 0x1
TUD = 0xFF
"""Bits 7:0, "TD under debug": DEBUG and the profiling bits; the host may inspect the TD."""
SEPT_VE_DISABLE = 1 << 28
"""Set: no #VE on a secure EPT violation, which a host could use to steer the guest."""
MIGRATABLE = 1 << 29
"""Set: a migration TD may move the TD, with its memory, to another host."""
#: TD attribute bits by position (TDX module ABI; Linux's asm/shared/tdx.h), named in
#: violations: 7:0 "TD under debug", 31:8 security-relevant, 63:32 the TD's own features
TD_ATTRIBUTE_BITS = {
    0: "DEBUG",
    4: "HGS_PLUS_PROF",
    5: "PERF_PROF",
    6: "PMT_PROF",
    16: "ICSSD",
    27: "LASS",
    28: "SEPT_VE_DISABLE",
    29: "MIGRATABLE",
    30: "PKS",
    31: "KL",
    62: "TPA",
    63: "PERFMON",
}
#: what is checked when ``td_attributes`` is left out (DEBUG aside: ``allow_debug``)
_DEFAULT_MASK = (TUD & ~DEBUG) | SEPT_VE_DISABLE | MIGRATABLE
_DEFAULT_EXPECTED = SEPT_VE_DISABLE
_RTMRS = ("rtmr0", "rtmr1", "rtmr2", "rtmr3")
# set by the host at TD creation, measured nowhere else; checked in this order after mr_seam
_HOST_SET = ("mr_config_id", "mr_owner", "mr_owner_config")
_REGISTERS = ("mr_td", *_RTMRS, "mr_seam", *_HOST_SET, "mr_service_td")
_KEYS = frozenset(
    {
        "mr_td",
        *_RTMRS,
        "mr_seam",
        *_HOST_SET,
        "mr_service_td",
        "td_attributes",
        "td_attributes_mask",
        "xfam",
        "xfam_mask",
        "allow_debug",
        "allowed_tcb_statuses",
        "allowed_advisory_ids",
        "min_tcb_evaluation_data_number",
        "allow_any_measurement",
        "allow_unpinned_rtmrs",
    }
)


@dataclass(frozen=True, kw_only=True)
class TdxPolicy:
    """What a TD must be; unset fields are not constrained.

    ``mr_td`` is required unless ``allow_any_measurement``, and with it ``rtmr1`` and ``rtmr2``
    (kernel, command line, initrd) unless ``allow_unpinned_rtmrs``. The DEBUG attribute is
    judged by ``allow_debug`` alone, so the default ``td_attributes_mask`` leaves it out.
    ``td_attributes`` left out still requires SEPT_VE_DISABLE set and MIGRATABLE and the other
    TUD bits clear; given, it and its mask alone decide. ``xfam`` left out is not checked: the
    XSAVE features it lists are the TD's own, their state kept from the host by the TDX module.
    """

    mr_td: frozenset[bytes] | None = None
    rtmr0: frozenset[bytes] | None = None
    rtmr1: frozenset[bytes] | None = None
    rtmr2: frozenset[bytes] | None = None
    rtmr3: frozenset[bytes] | None = None
    mr_seam: frozenset[bytes] | None = None
    mr_config_id: frozenset[bytes] | None = None
    mr_owner: frozenset[bytes] | None = None
    mr_owner_config: frozenset[bytes] | None = None
    mr_service_td: frozenset[bytes] | None = None
    """TD report 1.5 (quote v5): the service TDs bound to the TD, which may access its state.
    Left out, it must be zero (none bound); pinned, a v4 quote (no such field) is refused."""
    td_attributes: int | None = None
    td_attributes_mask: int = _U64 & ~DEBUG
    xfam: int | None = None
    xfam_mask: int = _U64
    allow_debug: bool = False
    allowed_tcb_statuses: frozenset[str] = field(default=frozenset({"UpToDate"}))
    allowed_advisory_ids: frozenset[str] | None = None
    """Intel advisories (``INTEL-SA-00615``) an accepted TCB status may carry; None: any."""
    min_tcb_evaluation_data_number: int | None = None
    """The oldest TCB recovery event (Intel's ``tcbEvaluationDataNumber``) whose collateral may
    judge the TCB status: a server serving collateral from before a recovery that made its
    platform out of date, still inside that collateral's validity window, is refused."""
    allow_any_measurement: bool = False
    allow_unpinned_rtmrs: bool = False
    """Accept ``mr_td`` without ``rtmr1`` and ``rtmr2``: any kernel, command line and initrd
    the pinned firmware boots. An explicit opt-in, as ``allow_any_measurement`` is."""

    def __post_init__(self) -> None:
        f.check_flags(self, ("allow_debug", "allow_any_measurement", "allow_unpinned_rtmrs"), "tdx")
        f.check_value_sets(self, dict.fromkeys(_REGISTERS, 48), "tdx")
        if not self.allow_any_measurement and self.mr_td is None:
            raise ConfigurationError("[tdx] needs mr_td (or allow_any_measurement = true)")
        if self.allow_any_measurement and self.mr_td is not None:
            raise ConfigurationError("[tdx] mr_td and allow_any_measurement = true contradict")
        if not (self.allow_any_measurement or self.allow_unpinned_rtmrs) and None in (
            self.rtmr1,
            self.rtmr2,
        ):
            raise ConfigurationError(
                "[tdx] mr_td pins the TD firmware only: pin rtmr1 and rtmr2 too (kernel, "
                "command line, initrd), or say allow_unpinned_rtmrs = true to accept any OS "
                "that firmware boots"
            )
        f.tcb_statuses(sorted(self.allowed_tcb_statuses))
        f.check_typed_uints(
            self,
            dict.fromkeys(("td_attributes", "td_attributes_mask", "xfam", "xfam_mask"), 64)
            | {"min_tcb_evaluation_data_number": 32},
            "tdx",
        )
        f.check_typed_masks(self, {"td_attributes": _U64 & ~DEBUG, "xfam": _U64}, "tdx")
        f.check_advisory_ids(self.allowed_advisory_ids, "tdx")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> TdxPolicy:
        """Build from a TOML ``[tdx]`` table."""
        f.check_keys(data, _KEYS, "tdx")
        f.check_masks(data, ("td_attributes", "xfam"), "tdx")
        td_mask = f.uint(data.get("td_attributes_mask"), "td_attributes_mask", 64)
        xfam_mask = f.uint(data.get("xfam_mask"), "xfam_mask", 64)
        return cls(
            mr_td=f.hex_set(data.get("mr_td"), "mr_td", 48),
            rtmr0=f.hex_set(data.get("rtmr0"), "rtmr0", 48),
            rtmr1=f.hex_set(data.get("rtmr1"), "rtmr1", 48),
            rtmr2=f.hex_set(data.get("rtmr2"), "rtmr2", 48),
            rtmr3=f.hex_set(data.get("rtmr3"), "rtmr3", 48),
            mr_seam=f.hex_set(data.get("mr_seam"), "mr_seam", 48),
            mr_config_id=f.hex_set(data.get("mr_config_id"), "mr_config_id", 48),
            mr_owner=f.hex_set(data.get("mr_owner"), "mr_owner", 48),
            mr_owner_config=f.hex_set(data.get("mr_owner_config"), "mr_owner_config", 48),
            mr_service_td=f.hex_set(data.get("mr_service_td"), "mr_service_td", 48),
            td_attributes=f.uint(data.get("td_attributes"), "td_attributes", 64),
            td_attributes_mask=_U64 & ~DEBUG if td_mask is None else td_mask,
            xfam=f.uint(data.get("xfam"), "xfam", 64),
            xfam_mask=_U64 if xfam_mask is None else xfam_mask,
            allow_unpinned_rtmrs=f.boolean(
                data.get("allow_unpinned_rtmrs"), "allow_unpinned_rtmrs", False
            ),
            **f.common_fields(data),
        )

    def check(self, claims: VerifiedClaims) -> list[Violation]:
        """Every way in which ``claims`` fail this policy (empty when accepted)."""
        if not isinstance(claims, TdxClaims):
            return [Violation("kind", "tdx", str(claims.kind.value))]
        out = f.measurement("mr_td", self.mr_td, claims.mr_td)
        for name in _RTMRS:
            out += f.measurement(name, getattr(self, name), getattr(claims, name))
        out += f.measurement("mr_seam", self.mr_seam, claims.mr_seam)
        for name in _HOST_SET:
            out += f.measurement(name, getattr(self, name), getattr(claims, name))
        out += self._service_td(claims)
        if self.td_attributes is None:  # the default: nothing that weakens the TD's isolation
            expected, mask = _DEFAULT_EXPECTED, _DEFAULT_MASK
        else:
            expected, mask = self.td_attributes, self.td_attributes_mask
        out += f.masked("td_attributes", expected, mask, claims.td_attributes, TD_ATTRIBUTE_BITS)
        out += f.masked("xfam", self.xfam, self.xfam_mask, claims.xfam, XSAVE_BITS)
        return out + f.debug_and_tcb(
            claims,
            self.allow_debug,
            self.allowed_tcb_statuses,
            self.min_tcb_evaluation_data_number,
            self.allowed_advisory_ids,
        )

    def _service_td(self, claims: TdxClaims) -> list[Violation]:
        if claims.mr_service_td is None:  # TD report 1.0: no service TD can be named
            if self.mr_service_td is None:
                return []
            expected = " or ".join(sorted(v.hex() for v in self.mr_service_td))
            return [Violation("mr_service_td", expected, "absent (TD report 1.0)")]
        allowed = self.mr_service_td or frozenset({bytes(48)})
        return f.measurement("mr_service_td", allowed, claims.mr_service_td)
