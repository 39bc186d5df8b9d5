"""What a Nitro attestation document must say to be accepted: the ``[nitro]`` policy section.

Example (TOML)::

    [nitro]
    pcr0 = "f4d48b81...150142d8b"   # 96 hex digits: the enclave image measurement
    pcr8 = "8790eb3c...210201cb"    # optional: the signing certificate of the image
    max_age_seconds = 600

``pcr0`` is required unless ``allow_any_measurement = true`` is given explicitly. Debug-mode
enclaves (PCR0 all zero) are refused unless ``allow_debug = true``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from blindai.attestation.claims import VerifiedClaims
from blindai.attestation.nitro._claims import NitroClaims
from blindai.errors import ConfigurationError, Violation

__all__ = [
    "DEFAULT_CLOCK_SKEW_SECONDS",
    "DEFAULT_MAX_AGE_SECONDS",
    "PCR_COUNT",
    "PCR_SIZE",
    "NitroPolicy",
]

PCR_SIZE = 48
PCR_COUNT = 32
DEFAULT_MAX_AGE_SECONDS = 600.0
DEFAULT_CLOCK_SKEW_SECONDS = 60.0
_KEYS = frozenset(
    {
        "allow_any_measurement",
        "allow_debug",
        "max_age_seconds",
        "max_clock_skew_seconds",
        "module_id_prefix",
    }
)


@dataclass(frozen=True)
class NitroPolicy:
    """Expected PCRs, debug mode, freshness and (optionally) the module id of a Nitro enclave.

    ``pcrs`` maps PCR index (0..31) to its expected 48-byte SHA-384 value. The document's
    ``timestamp`` may be at most ``max_age_seconds`` older and ``max_clock_skew_seconds``
    newer than the verification time.
    """

    pcrs: Mapping[int, bytes] = field(default_factory=dict)
    allow_any_measurement: bool = False
    allow_debug: bool = False
    max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS
    max_clock_skew_seconds: float = DEFAULT_CLOCK_SKEW_SECONDS
    module_id_prefix: str | None = None

    def __post_init__(self) -> None:
        pcrs = dict(self.pcrs)
        for index, value in pcrs.items():
            if type(index) is not int or not 0 <= index < PCR_COUNT:
                raise ConfigurationError(f"[nitro] PCR index must be 0..{PCR_COUNT - 1}")
            if not isinstance(value, bytes) or len(value) != PCR_SIZE:
                raise ConfigurationError(f"[nitro] pcr{index} must be {PCR_SIZE} bytes")
        if 0 not in pcrs and not self.allow_any_measurement:
            raise ConfigurationError(
                "[nitro] give pcr0 (the enclave measurement), or allow_any_measurement = true"
            )
        if 0 in pcrs and self.allow_any_measurement:
            raise ConfigurationError("[nitro] pcr0 and allow_any_measurement = true contradict")
        if 0 in pcrs and not any(pcrs[0]) and not self.allow_debug:
            raise ConfigurationError("[nitro] an all-zero pcr0 is a debug enclave: allow_debug")
        for name in ("max_age_seconds", "max_clock_skew_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ConfigurationError(f"[nitro] {name} must be a non-negative number")
        object.__setattr__(self, "pcrs", MappingProxyType(pcrs))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> NitroPolicy:
        """Build from the ``[nitro]`` TOML section; unknown keys raise ConfigurationError."""
        pcr_keys = {f"pcr{i}": i for i in range(PCR_COUNT)}
        unknown = sorted(set(data) - _KEYS - set(pcr_keys))
        if unknown:
            raise ConfigurationError(f"[nitro] unknown key(s): {', '.join(unknown)}")
        for flag in ("allow_any_measurement", "allow_debug"):
            if not isinstance(data.get(flag, False), bool):
                raise ConfigurationError(f"[nitro] {flag} must be true or false")
        prefix = data.get("module_id_prefix")
        if prefix is not None and (not isinstance(prefix, str) or not prefix):
            raise ConfigurationError("[nitro] module_id_prefix must be a non-empty string")
        return cls(
            pcrs={i: _hex(data[k], k) for k, i in pcr_keys.items() if k in data},
            allow_any_measurement=data.get("allow_any_measurement", False),
            allow_debug=data.get("allow_debug", False),
            max_age_seconds=data.get("max_age_seconds", DEFAULT_MAX_AGE_SECONDS),
            max_clock_skew_seconds=data.get("max_clock_skew_seconds", DEFAULT_CLOCK_SKEW_SECONDS),
            module_id_prefix=prefix,
        )

    def check(self, claims: VerifiedClaims) -> list[Violation]:
        """Every way in which ``claims`` fail this policy (empty when accepted)."""
        if not isinstance(claims, NitroClaims):
            return [Violation("kind", "nitro", claims.kind.value)]
        violations: list[Violation] = []
        if claims.debug and not self.allow_debug:
            violations.append(Violation("debug", "false (production enclave)", "true (PCR0 zero)"))
        for index, expected in sorted(self.pcrs.items()):
            actual = claims.pcrs.get(index)
            if actual != expected:
                shown = actual.hex() if actual is not None else "absent"
                violations.append(Violation(f"pcr{index}", expected.hex(), shown))
        violations.extend(self._freshness(claims))
        prefix = self.module_id_prefix
        if prefix is not None and not claims.module_id.startswith(prefix):
            violations.append(Violation("module_id", f"starting with {prefix}", claims.module_id))
        return violations

    def _freshness(self, claims: NitroClaims) -> list[Violation]:
        age = (claims.verified_at - claims.timestamp).total_seconds()
        if age > self.max_age_seconds:
            expected = f"at most {self.max_age_seconds:g} s old"
            return [Violation("timestamp", expected, f"{age:.3f} s old")]
        if -age > self.max_clock_skew_seconds:
            expected = f"at most {self.max_clock_skew_seconds:g} s ahead of the verification time"
            return [Violation("timestamp", expected, f"{-age:.3f} s ahead")]
        return []


def _hex(value: Any, key: str) -> bytes:
    if not isinstance(value, str):
        raise ConfigurationError(f"[nitro] {key} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError as exc:
        raise ConfigurationError(f"[nitro] {key} is not valid hex") from exc
    if len(raw) != PCR_SIZE:
        raise ConfigurationError(f"[nitro] {key} must be {PCR_SIZE} bytes ({2 * PCR_SIZE} hex)")
    return raw
