"""What an SEV-SNP report must show to be accepted: section ``[sev_snp]`` of a policy file.

Example::

    [sev_snp]
    measurement = "b07af962...2b01"          # 96 hex digits; required
    min_tcb = { bootloader = 3, tee = 0, snp = 8, microcode = 115 }   # required
    max_vmpl = 0                             # default 0: only reports requested from VMPL 0
    allowed_signing_keys = ["vcek"]          # default both "vcek" and "vlek"

Keys: ``measurement`` (required unless ``allow_any_measurement = true`` is given explicitly),
``host_data`` (32 bytes hex), ``id_key_digest`` and ``author_key_digest`` (48 bytes hex),
``allow_debug`` (default false: guest policy bit 19 DEBUG is a violation),
``allow_migration_agent`` (default false: guest policy bit 18 MIGRATE_MA, which lets the host
associate a migration agent able to export the guest's memory, is a violation),
``allowed_policy_bits`` (the other permission bits the guest policy may set, by name: ``SMT``,
the default, and ``CXL_ALLOW``), ``required_policy_bits`` (restriction bits it must set:
``SINGLE_SOCKET``, ``MEM_AES_256_XTS``, ``RAPL_DIS``, ``CIPHERTEXT_HIDING_DRAM``,
``PAGE_SWAP_DISABLE``; none by default), ``min_policy_abi`` (``"MAJOR.MINOR"``: the guest
policy must demand at least this firmware ABI, which the firmware enforced at launch),
``min_tcb`` (a table
``{bootloader, tee, snp, microcode}``, or the 8 TCB_VERSION bytes as 16 hex digits in report
order, e.g. ``"0300000000000873"``), ``max_vmpl`` (highest VMPL accepted, 0..3, default 0:
the most privileged level), ``allowed_signing_keys`` and ``products`` (e.g. ``["Milan"]``).
``min_tcb`` applies to REPORTED_TCB (the TCB the VCEK/VLEK certifies), COMMITTED_TCB (the
firmware may be rolled back to it, live), LAUNCH_TCB and CURRENT_TCB alike; it is required beside
``measurement`` unless ``allow_any_tcb = true`` accepts any firmware and microcode, explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from blindai.attestation._bits import bit_violations, check_names
from blindai.attestation.claims import VerifiedClaims
from blindai.attestation.snp._layout import (
    POLICY_BITS,
    TcbVersion,
)
from blindai.attestation.snp.claims import SnpClaims
from blindai.errors import ConfigurationError, EvidenceError, Violation

__all__ = ["SnpPolicy"]

_SIGNING_KEYS = frozenset({"vcek", "vlek"})
#: the TCB versions min_tcb bounds: the one the VCEK certifies, the floor the firmware may be
#: rolled back to while the guest runs, the one it was launched under, the one running now
_TCBS = ("reported_tcb", "committed_tcb", "launch_tcb", "current_tcb")
_FLAGS = ("allow_any_measurement", "allow_debug", "allow_migration_agent", "allow_any_tcb")
_SIZES = {"measurement": 48, "host_data": 32, "id_key_digest": 48, "author_key_digest": 48}
_BIT = {name: bit for bit, name in POLICY_BITS.items()}
#: guest policy bits that grant the host something: set, each must be allowed by name (DEBUG and
#: MIGRATE_MA have their own flags, allow_debug and allow_migration_agent)
_PERMISSIONS = frozenset({"SMT", "CXL_ALLOW"})
#: guest policy bits that restrict the platform: a policy may require them set
_RESTRICTIONS = frozenset(
    {"SINGLE_SOCKET", "MEM_AES_256_XTS", "RAPL_DIS", "CIPHERTEXT_HIDING_DRAM", "PAGE_SWAP_DISABLE"}
)


@dataclass(frozen=True, kw_only=True)
class SnpPolicy:
    """Expected values for a verified SEV-SNP report; never silently permissive."""

    measurement: bytes | None = None
    allow_any_measurement: bool = False
    host_data: bytes | None = None
    id_key_digest: bytes | None = None
    author_key_digest: bytes | None = None
    allow_debug: bool = False
    allow_migration_agent: bool = False
    min_tcb: TcbVersion | None = None
    allow_any_tcb: bool = False
    max_vmpl: int = 0
    allowed_signing_keys: frozenset[str] = field(default=_SIGNING_KEYS)
    products: frozenset[str] | None = None
    allowed_policy_bits: frozenset[str] = frozenset({"SMT"})
    """Permission bits of the guest policy that may be set: ``SMT`` (simultaneous
    multithreading, set in every real report: the default) and ``CXL_ALLOW`` (CXL devices or
    memory may back the guest). Any other set is a violation; an empty set refuses both."""
    required_policy_bits: frozenset[str] = frozenset()
    """Restriction bits the guest policy must set: ``SINGLE_SOCKET``, ``MEM_AES_256_XTS``,
    ``RAPL_DIS``, ``CIPHERTEXT_HIDING_DRAM``, ``PAGE_SWAP_DISABLE``; none by default."""
    min_policy_abi: tuple[int, int] | None = None
    """(ABI_MAJOR, ABI_MINOR): the guest policy's own minimum firmware ABI, which the firmware
    enforced when it launched the guest, must be at least this. None: any."""

    def __post_init__(self) -> None:
        self._check_types()
        self._check_policy_bits()
        if self.measurement is None and self.allow_any_measurement is not True:
            raise ConfigurationError(
                "[sev_snp] needs a measurement (or allow_any_measurement = true, explicitly)"
            )
        if self.measurement is not None and self.allow_any_measurement:
            raise ConfigurationError(
                "[sev_snp] give measurement or allow_any_measurement, not both"
            )
        for name, size in _SIZES.items():
            value = getattr(self, name)
            if value is not None and (not isinstance(value, bytes) or len(value) != size):
                raise ConfigurationError(f"[sev_snp] {name} must be {size} bytes")
        if isinstance(self.max_vmpl, bool) or self.max_vmpl not in range(4):
            raise ConfigurationError("[sev_snp] max_vmpl must be an integer 0..3")
        if not self.allowed_signing_keys or not self.allowed_signing_keys <= _SIGNING_KEYS:
            raise ConfigurationError('[sev_snp] allowed_signing_keys: "vcek" and/or "vlek"')
        if self.products is not None and not self.products:
            raise ConfigurationError("[sev_snp] products must not be empty")
        if self.min_tcb is None and not (self.allow_any_tcb or self.allow_any_measurement):
            raise ConfigurationError(
                "[sev_snp] give min_tcb, the oldest firmware and microcode accepted (without it "
                "any TCB passes, however vulnerable), or allow_any_tcb = true"
            )
        if self.min_tcb is not None and self.allow_any_tcb:
            raise ConfigurationError("[sev_snp] give min_tcb or allow_any_tcb, not both")

    def _check_types(self) -> None:
        """What from_mapping's conversions ensure, for a policy built directly: each flag a
        bool (``allow_any_tcb="false"`` is truthy), min_tcb a TcbVersion, the names sets of
        strings (``product in "Milan"`` would be a substring test)."""
        for name in _FLAGS:
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(f"[sev_snp] {name} must be true or false")
        if self.min_tcb is not None and not isinstance(self.min_tcb, TcbVersion):
            raise ConfigurationError("[sev_snp] min_tcb must be a TcbVersion")
        for name in ("allowed_signing_keys", "products"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, frozenset | set) or not all(isinstance(v, str) for v in value)
            ):
                raise ConfigurationError(
                    f"[sev_snp] {name} must be a set of names (frozenset of str), "
                    f"not {type(value).__name__}"
                )

    def _check_policy_bits(self) -> None:
        """Each name a bit of the guest policy, in the set for its kind (a permission allowed, a
        restriction required); DEBUG and MIGRATE_MA left to their flags; the ABI two bytes."""
        check_names(
            self.allowed_policy_bits, "allowed_policy_bits", _PERMISSIONS, "sev_snp", _hint()
        )
        check_names(
            self.required_policy_bits, "required_policy_bits", _RESTRICTIONS, "sev_snp", _hint()
        )
        abi = self.min_policy_abi
        if abi is not None and (
            not isinstance(abi, tuple)
            or len(abi) != 2
            or not all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in abi
            )
        ):
            raise ConfigurationError(
                '[sev_snp] min_policy_abi is "MAJOR.MINOR" (two integers 0..255), e.g. "1.51"'
            )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SnpPolicy:
        """Build from a ``[sev_snp]`` TOML section; ConfigurationError on unknown or bad keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigurationError(f"[sev_snp] unknown key(s): {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            kwargs[name] = _convert(name, value)
        return cls(**kwargs)

    def check(self, claims: VerifiedClaims) -> list[Violation]:
        """Every way in which ``claims`` fail this policy (empty when accepted)."""
        if not isinstance(claims, SnpClaims):
            return [Violation("kind", "sev-snp", str(claims.kind.value))]
        out: list[Violation] = []
        for name in _SIZES:
            expected = getattr(self, name)
            if expected is not None and getattr(claims, name) != expected:
                out.append(Violation(name, expected.hex(), getattr(claims, name).hex()))
        out += self._guest_policy(claims)
        if self.min_tcb is not None:
            for name in _TCBS:
                tcb = getattr(claims, name)
                if not tcb.meets(self.min_tcb):
                    out.append(Violation(name, f">= {self.min_tcb}", str(tcb)))
        if claims.vmpl > self.max_vmpl:
            out.append(Violation("vmpl", f"<= {self.max_vmpl}", str(claims.vmpl)))
        if claims.signing_key not in self.allowed_signing_keys:
            allowed = " or ".join(sorted(self.allowed_signing_keys))
            out.append(Violation("signing_key", allowed, claims.signing_key))
        if self.products is not None and claims.product not in self.products:
            out.append(Violation("product", " or ".join(sorted(self.products)), claims.product))
        return out

    def _guest_policy(self, claims: SnpClaims) -> list[Violation]:
        """DEBUG (reported on ``debug``), then the other flag bits and the ABI minimum (on
        ``guest_policy``), each bit named; the raw policy rides along as the value."""
        policy = claims.guest_policy
        out = []
        if claims.debug and not self.allow_debug:
            out.append(Violation("debug", "DEBUG clear", "DEBUG set", value=policy))
        refused = {name for name in _PERMISSIONS if name not in self.allowed_policy_bits}
        if not self.allow_migration_agent:
            refused.add("MIGRATE_MA")
        required = _mask(self.required_policy_bits)
        mask = _mask(refused) | required
        out += bit_violations("guest_policy", required, mask, policy, POLICY_BITS)
        abi = (policy >> 8 & 0xFF, policy & 0xFF)
        if self.min_policy_abi is not None and abi < self.min_policy_abi:
            want = ".".join(map(str, self.min_policy_abi))
            out.append(
                Violation("guest_policy", f"ABI >= {want}", f"ABI {abi[0]}.{abi[1]}", value=policy)
            )
        return out


def _mask(names: frozenset[str] | set[str]) -> int:
    out = 0
    for name in names:
        out |= 1 << _BIT[name]
    return out


def _hint() -> str:
    return (
        f"allowed_policy_bits takes the permissions {', '.join(sorted(_PERMISSIONS))}; "
        f"required_policy_bits the restrictions {', '.join(sorted(_RESTRICTIONS))}; "
        "DEBUG is allow_debug's, MIGRATE_MA allow_migration_agent's"
    )


def _convert(name: str, value: Any) -> Any:
    if name in _SIZES:
        return _hex(name, value)
    if name in _FLAGS:
        if not isinstance(value, bool):
            raise ConfigurationError(f"[sev_snp] {name} must be true or false")
        return value
    if name == "max_vmpl":
        return value  # checked in __post_init__
    if name == "min_tcb":
        return _tcb(value)
    if name == "min_policy_abi":
        return _abi(value)
    return _names(name, value)


def _abi(value: Any) -> tuple[int, int]:
    """``"1.51"``: ABI_MAJOR 1, ABI_MINOR 51 (each a decimal byte, as AMD writes versions)."""
    parts = value.split(".") if isinstance(value, str) else []
    if len(parts) != 2 or not all(p.isdigit() and p.isascii() for p in parts):
        raise ConfigurationError(
            '[sev_snp] min_policy_abi is "MAJOR.MINOR" (two integers 0..255), e.g. "1.51"'
        )
    return int(parts[0]), int(parts[1])


def _hex(name: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise ConfigurationError(f"[sev_snp] {name} must be a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError as exc:
        raise ConfigurationError(f"[sev_snp] {name} is not valid hex") from exc


def _tcb(value: Any) -> TcbVersion:
    if isinstance(value, str):
        raw = _hex("min_tcb", value)
        if len(raw) != 8:
            raise ConfigurationError("[sev_snp] min_tcb as hex is 16 digits (8 bytes)")
        try:
            return TcbVersion.from_bytes(raw)
        except EvidenceError as exc:
            raise ConfigurationError(f"[sev_snp] min_tcb: {exc}") from exc
    if not isinstance(value, Mapping) or set(value) != {"bootloader", "tee", "snp", "microcode"}:
        raise ConfigurationError(
            "[sev_snp] min_tcb is a table {bootloader, tee, snp, microcode} or 16 hex digits"
        )
    try:
        return TcbVersion(**value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"[sev_snp] min_tcb: {exc}") from exc


def _names(name: str, value: Any) -> frozenset[str]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigurationError(f"[sev_snp] {name} must be a list of strings")
    return frozenset(value)
