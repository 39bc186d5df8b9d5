"""SGX policy: expected enclave identity, attributes, debug and accepted TCB statuses.

TOML section ``[sgx]``::

    [sgx]
    mr_enclave = "33d8736d..."            # hex, or a list of hex values
    mr_signer = "815f42f1..."             # without mr_enclave: isv_prod_id, min_isv_svn needed
    isv_prod_id = 0
    min_isv_svn = 0
    attributes = "0x5"                    # ATTRIBUTES.FLAGS (INIT, MODE64BIT) under attributes_mask
    xfrm = "0x3"                          # ATTRIBUTES.XFRM under xfrm_mask (X87, SSE set;
    xfrm_mask = "0xffffffffffffff1b"      # AVX, AVX-512 free: their bits 2, 5-7 left out)
    misc_select = "0x0"                   # under misc_select_mask
    allow_debug = false
    allowed_tcb_statuses = ["UpToDate", "SWHardeningNeeded"]
    allowed_advisory_ids = ["INTEL-SA-00615"]   # optional: any other advisory is refused
    min_tcb_evaluation_data_number = 17   # optional: collateral from this TCB recovery on

BlindAI 0.6's ``manifest.toml`` keys are accepted as they are: ``attributes_flags_hex``,
``attributes_mask_flags_hex``, ``attributes_xfrm_hex``, ``attributes_mask_xfrm_hex``,
``misc_select_hex``, ``misc_mask_hex`` (hex of little-endian integers, as BlindAI 0.6 read
them; the expected flags gain the INIT bit, as BlindAI 0.6 required).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from blindai.attestation._bits import XSAVE_BITS
from blindai.attestation.claims import VerifiedClaims
from blindai.attestation.dcap import fields as f
from blindai.attestation.sgx._claims import SgxClaims
from blindai.errors import ConfigurationError, Violation

__all__ = ["ATTRIBUTE_BITS", "MISC_SELECT_BITS", "SgxPolicy"]

_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1
INIT, DEBUG, MODE64BIT, PROVISIONKEY, EINITTOKEN_KEY, KSS = 0x1, 0x2, 0x4, 0x10, 0x20, 0x80
#: what is checked when ``attributes`` is left out (DEBUG aside: ``allow_debug``): a 64-bit
#: enclave, with no provisioning or launch key and no host-chosen CONFIGID
_UNPINNED_ATTRIBUTES = INIT | MODE64BIT
_UNPINNED_MASK = INIT | MODE64BIT | PROVISIONKEY | EINITTOKEN_KEY | KSS
#: ATTRIBUTES.FLAGS bits by position (Intel SDM vol. 3D, SECS), named in violations
ATTRIBUTE_BITS = {
    0: "INIT",
    1: "DEBUG",
    2: "MODE64BIT",
    4: "PROVISIONKEY",
    5: "EINITTOKEN_KEY",
    6: "CET",
    7: "KSS",
    10: "AEXNOTIFY",
}
#: MISCSELECT bits: what the SSA frame saves on an asynchronous exit
MISC_SELECT_BITS = {0: "EXINFO", 1: "CPINFO"}
#: each value's default mask (a mask given otherwise needs its value)
_DEFAULT_MASKS = {"attributes": _U64 & ~DEBUG, "xfrm": _U64, "misc_select": _U32}
#: each number's width: the bit fields, values and masks alike, and the others
_WIDTHS = {
    name: width
    for value, width in (("attributes", 64), ("xfrm", 64), ("misc_select", 32))
    for name in (value, f"{value}_mask")
} | {"isv_prod_id": 16, "min_isv_svn": 16, "min_tcb_evaluation_data_number": 32}
#: BlindAI 0.6 manifest key -> our key
_MANIFEST_ALIASES = {
    "attributes_flags_hex": "attributes",
    "attributes_mask_flags_hex": "attributes_mask",
    "attributes_xfrm_hex": "xfrm",
    "attributes_mask_xfrm_hex": "xfrm_mask",
    "misc_select_hex": "misc_select",
    "misc_mask_hex": "misc_select_mask",
}
_KEYS = frozenset(
    {
        "mr_enclave",
        "mr_signer",
        "isv_prod_id",
        "min_isv_svn",
        "attributes",
        "attributes_mask",
        "xfrm",
        "xfrm_mask",
        "misc_select",
        "misc_select_mask",
        "allow_debug",
        "allowed_tcb_statuses",
        "allowed_advisory_ids",
        "min_tcb_evaluation_data_number",
        "allow_any_measurement",
    }
)


@dataclass(frozen=True, kw_only=True)
class SgxPolicy:
    """What an SGX enclave must be; unset fields are not constrained.

    ``mr_enclave`` or ``mr_signer`` is required unless ``allow_any_measurement``; ``mr_signer``
    without ``mr_enclave`` needs ``isv_prod_id`` and ``min_isv_svn`` too (the signer's key signs
    every product and version it ever released). The DEBUG attribute is judged by
    ``allow_debug`` alone, so the default ``attributes_mask`` leaves it out. ``attributes``
    left out still requires MODE64BIT set (a 32-bit enclave runs the measured code in another
    mode) and refuses PROVISIONKEY and EINITTOKEN_KEY (keys for Intel's provisioning and
    launch enclaves only) and KSS (bit 7: the enclave's creator chooses its CONFIGID); given,
    it and its mask alone decide.
    """

    mr_enclave: frozenset[bytes] | None = None
    mr_signer: frozenset[bytes] | None = None
    isv_prod_id: int | None = None
    min_isv_svn: int | None = None
    attributes: int | None = None
    attributes_mask: int = _U64 & ~DEBUG
    xfrm: int | None = None
    xfrm_mask: int = _U64
    misc_select: int | None = None
    misc_select_mask: int = _U32
    allow_debug: bool = False
    allowed_tcb_statuses: frozenset[str] = field(default=frozenset({"UpToDate"}))
    allowed_advisory_ids: frozenset[str] | None = None
    """Intel advisories (``INTEL-SA-00615``) an accepted TCB status may carry; None: any."""
    min_tcb_evaluation_data_number: int | None = None
    """The oldest TCB recovery event (Intel's ``tcbEvaluationDataNumber``) whose collateral may
    judge the TCB status: a server serving collateral from before a recovery that made its
    platform out of date, still inside that collateral's validity window, is refused."""
    allow_any_measurement: bool = False

    def __post_init__(self) -> None:
        f.check_flags(self, ("allow_debug", "allow_any_measurement"), "sgx")
        if not self.allow_any_measurement and self.mr_enclave is None and self.mr_signer is None:
            raise ConfigurationError(
                "[sgx] needs mr_enclave or mr_signer (or allow_any_measurement = true)"
            )
        if self.allow_any_measurement and not (self.mr_enclave is None and self.mr_signer is None):
            raise ConfigurationError(
                "[sgx] mr_enclave/mr_signer and allow_any_measurement = true contradict"
            )
        signer_only = self.mr_signer is not None and self.mr_enclave is None
        if (
            signer_only
            and not self.allow_any_measurement
            and None in (self.isv_prod_id, self.min_isv_svn)
        ):
            raise ConfigurationError(
                "[sgx] mr_signer without mr_enclave accepts every enclave that key signed: "
                "give isv_prod_id and min_isv_svn too (min_isv_svn = 0 accepts any version)"
            )
        f.tcb_statuses(sorted(self.allowed_tcb_statuses))
        f.check_value_sets(self, {"mr_enclave": 32, "mr_signer": 32}, "sgx")
        f.check_typed_uints(self, _WIDTHS, "sgx")
        f.check_typed_masks(self, _DEFAULT_MASKS, "sgx")
        f.check_advisory_ids(self.allowed_advisory_ids, "sgx")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SgxPolicy:
        """Build from a TOML ``[sgx]`` table or BlindAI 0.6 manifest keys."""
        values = _unalias(data)
        f.check_keys(values, _KEYS, "sgx")
        f.check_masks(values, ("attributes", "xfrm", "misc_select"), "sgx")
        attributes = f.uint(values.get("attributes"), "attributes", 64)
        if attributes is not None and "attributes_flags_hex" in data:
            attributes |= INIT
        return cls(
            mr_enclave=f.hex_set(values.get("mr_enclave"), "mr_enclave", 32),
            mr_signer=f.hex_set(values.get("mr_signer"), "mr_signer", 32),
            isv_prod_id=f.uint(values.get("isv_prod_id"), "isv_prod_id", 16),
            min_isv_svn=f.uint(values.get("min_isv_svn"), "min_isv_svn", 16),
            attributes=attributes,
            attributes_mask=_or(
                f.uint(values.get("attributes_mask"), "attributes_mask", 64), _U64 & ~DEBUG
            ),
            xfrm=f.uint(values.get("xfrm"), "xfrm", 64),
            xfrm_mask=_or(f.uint(values.get("xfrm_mask"), "xfrm_mask", 64), _U64),
            misc_select=f.uint(values.get("misc_select"), "misc_select", 32),
            misc_select_mask=_or(
                f.uint(values.get("misc_select_mask"), "misc_select_mask", 32), _U32
            ),
            **f.common_fields(values),
        )

    def check(self, claims: VerifiedClaims) -> list[Violation]:
        """Every way in which ``claims`` fail this policy (empty when accepted)."""
        if not isinstance(claims, SgxClaims):
            return [Violation("kind", "sgx", str(claims.kind.value))]
        out = f.measurement("mr_enclave", self.mr_enclave, claims.mr_enclave)
        out += f.measurement("mr_signer", self.mr_signer, claims.mr_signer)
        if self.isv_prod_id is not None and claims.isv_prod_id != self.isv_prod_id:
            out.append(Violation("isv_prod_id", str(self.isv_prod_id), str(claims.isv_prod_id)))
        if self.min_isv_svn is not None and claims.isv_svn < self.min_isv_svn:
            out.append(Violation("isv_svn", f">= {self.min_isv_svn}", str(claims.isv_svn)))
        if self.attributes is None:  # the default: an ordinary 64-bit application enclave
            expected, mask = _UNPINNED_ATTRIBUTES, _UNPINNED_MASK
        else:
            expected, mask = self.attributes, self.attributes_mask
        out += f.masked("attributes", expected, mask, claims.attributes, ATTRIBUTE_BITS)
        out += f.masked("xfrm", self.xfrm, self.xfrm_mask, claims.xfrm, XSAVE_BITS)
        out += f.masked(
            "misc_select",
            self.misc_select,
            self.misc_select_mask,
            claims.misc_select,
            MISC_SELECT_BITS,
        )
        return out + f.debug_and_tcb(
            claims,
            self.allow_debug,
            self.allowed_tcb_statuses,
            self.min_tcb_evaluation_data_number,
            self.allowed_advisory_ids,
        )


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def _unalias(data: Mapping[str, Any]) -> dict[str, Any]:
    """Rename BlindAI 0.6 manifest keys; a field given under both names is an error."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = _MANIFEST_ALIASES.get(key, key)
        if name in out:
            raise ConfigurationError(f"[sgx] gives {name} twice (as {key} and {name})")
        out[name] = value
    return out
