"""Policy readers and checks shared by the SGX and TDX policies: TOML values in, typed values
or :class:`~blindai.errors.Violation` lists out (``ConfigurationError`` on a bad value)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from blindai.attestation._bits import bit_violations
from blindai.attestation.claims import VerifiedClaims
from blindai.attestation.dcap._verify import TCB_STATUSES
from blindai.errors import ConfigurationError, Violation

__all__ = [
    "advisory_ids",
    "boolean",
    "check_advisory_ids",
    "check_flags",
    "check_keys",
    "check_masks",
    "check_typed_masks",
    "check_typed_uints",
    "check_value_sets",
    "common_fields",
    "debug_and_tcb",
    "hex_set",
    "masked",
    "measurement",
    "tcb_statuses",
    "uint",
]


def check_keys(data: Mapping[str, Any], allowed: Collection[str], section: str) -> None:
    """ConfigurationError naming every key of ``data`` not in ``allowed``."""
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ConfigurationError(f"unknown key(s) in [{section}]: {', '.join(unknown)}")


def check_masks(data: Mapping[str, Any], values: Collection[str], section: str) -> None:
    """ConfigurationError for a ``<value>_mask`` given without its ``<value>``: it would check
    nothing, though it reads as if it checked the bits it names."""
    for value in values:
        if f"{value}_mask" in data and value not in data:
            raise ConfigurationError(
                f"[{section}] {value}_mask without {value} checks nothing: give {value} too"
            )


def check_flags(policy: object, names: Collection[str], section: str) -> None:
    """ConfigurationError unless each field of ``policy`` in ``names`` is a bool, as TOML's
    ``true`` or ``false`` (built directly, ``allow_debug="false"`` is truthy)."""
    for name in names:
        if not isinstance(getattr(policy, name), bool):
            raise ConfigurationError(f"[{section}] {name} must be true or false")


def check_typed_masks(policy: object, defaults: Mapping[str, int], section: str) -> None:
    """:func:`check_masks` for a policy built directly (``SgxPolicy(xfrm_mask=...)``): a
    ``<value>_mask`` other than its default in ``defaults``, with ``<value>`` None."""
    for value, default in defaults.items():
        if getattr(policy, value) is None and getattr(policy, f"{value}_mask") != default:
            raise ConfigurationError(
                f"[{section}] {value}_mask without {value} checks nothing: give {value} too"
            )


def check_typed_uints(policy: object, widths: Mapping[str, int], section: str) -> None:
    """What :func:`uint` ensures, for a policy built directly: each field of ``policy`` named
    in ``widths`` None or an unsigned integer of that many bits (not a bool). A hex string
    failed only at verification (TypeError), and a negative or too wide value or mask was
    taken as it was."""
    for name, bits in widths.items():
        value = getattr(policy, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
            raise ConfigurationError(
                f"[{section}] {name} must be an unsigned {bits}-bit integer, "
                f"not {type(value).__name__} {value!r}"
            )


def check_advisory_ids(value: object, section: str) -> None:
    """ConfigurationError unless ``value`` (a policy's ``allowed_advisory_ids``) is None or a
    non-empty set of non-empty strings: given a ``str``, ``advisory in allowed`` would be a
    substring test."""
    if value is None:
        return
    if (
        not isinstance(value, frozenset | set)
        or not value
        or not all(isinstance(v, str) and v for v in value)
    ):
        raise ConfigurationError(
            f"[{section}] allowed_advisory_ids must be a non-empty set of advisory IDs "
            f"(frozenset of str), not {type(value).__name__}"
        )


def check_value_sets(policy: object, sizes: Mapping[str, int], section: str) -> None:
    """ConfigurationError unless each field of ``policy`` named in ``sizes`` is None or a
    non-empty set of byte strings of its size: given ``bytes``, ``actual in allowed`` would be a
    substring test (any window of concatenated values would pass); given ``str``, a crash."""
    for name, size in sizes.items():
        value = getattr(policy, name)
        if value is None:
            continue
        if (
            not isinstance(value, frozenset | set)
            or not value
            or not all(isinstance(v, bytes) and len(v) == size for v in value)
        ):
            raise ConfigurationError(
                f"[{section}] {name} must be a non-empty set of {size}-byte values "
                f"(frozenset of bytes), not {type(value).__name__}"
            )


def hex_set(value: Any, key: str, length: int) -> frozenset[bytes] | None:
    """A hex string, or a list of them, each ``length`` bytes; None when absent."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ConfigurationError(f"{key} must be a hex string or a non-empty list of them")
    out = set()
    for item in items:
        try:
            raw = bytes.fromhex(item)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"{key} must be hex") from exc
        if len(raw) != length:
            raise ConfigurationError(f"{key} must be {length} bytes, got {len(raw)}")
        out.add(raw)
    return frozenset(out)


def uint(value: Any, key: str, bits: int) -> int | None:
    """An unsigned integer of at most ``bits`` bits: a TOML integer or a hex string."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigurationError(f"{key} must be an integer or a hex string")
    try:
        number = int(value, 16) if isinstance(value, str) else value
    except ValueError as exc:
        raise ConfigurationError(f"{key} must be a hex string such as '0x4'") from exc
    if not 0 <= number < 1 << bits:
        raise ConfigurationError(f"{key} must be an unsigned {bits}-bit value")
    return number


def _number(value: Any, key: str) -> int | None:
    """A TOML integer of 32 bits (not a string: Intel writes these numbers in decimal)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 32:
        raise ConfigurationError(f"{key} must be an integer from 0 to 2**32 - 1")
    return value


def boolean(value: Any, key: str, default: bool) -> bool:
    """A TOML boolean, ``default`` when absent."""
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigurationError(f"{key} must be true or false")
    return value


def tcb_statuses(value: Any, key: str = "allowed_tcb_statuses") -> frozenset[str]:
    """Accepted TCB statuses; UpToDate alone by default; Revoked is never acceptable."""
    if value is None:
        return frozenset({"UpToDate"})
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigurationError(f"{key} must be a list of strings")
    unknown = sorted(set(value) - TCB_STATUSES)
    if unknown:
        known = ", ".join(sorted(TCB_STATUSES))
        raise ConfigurationError(f"{key}: unknown or unacceptable {unknown}; known: {known}")
    if not value:
        raise ConfigurationError(f"{key} must not be empty")
    return frozenset(value)


def advisory_ids(value: Any, key: str = "allowed_advisory_ids") -> frozenset[str] | None:
    """Intel advisory IDs (``INTEL-SA-00615``) an accepted TCB status may carry; None: any."""
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ConfigurationError(f"{key} must be a non-empty list of advisory IDs")
    return frozenset(value)


def measurement(field: str, allowed: frozenset[bytes] | None, actual: bytes) -> list[Violation]:
    """A violation when ``actual`` is not one of ``allowed`` (nothing when unconstrained)."""
    if allowed is None or actual in allowed:
        return []
    expected = " or ".join(sorted(v.hex() for v in allowed))
    return [Violation(field, expected, actual.hex())]


def masked(
    field: str, expected: int | None, mask: int, actual: int, names: Mapping[int, str]
) -> list[Violation]:
    """A violation for each bit where ``actual & mask != expected & mask``, naming the bit from
    ``names`` (``"SEPT_VE_DISABLE set"`` expected, ``"SEPT_VE_DISABLE clear"`` got); each
    carries the raw ``actual`` as its ``value``."""
    if expected is None:
        return []
    return bit_violations(field, expected, mask, actual, names)


def common_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """``allow_debug``, ``allowed_tcb_statuses``, ``allowed_advisory_ids``,
    ``min_tcb_evaluation_data_number`` and ``allow_any_measurement`` from a table."""
    return {
        "allow_debug": boolean(data.get("allow_debug"), "allow_debug", False),
        "allowed_tcb_statuses": tcb_statuses(data.get("allowed_tcb_statuses")),
        "allowed_advisory_ids": advisory_ids(data.get("allowed_advisory_ids")),
        "min_tcb_evaluation_data_number": _number(
            data.get("min_tcb_evaluation_data_number"), "min_tcb_evaluation_data_number"
        ),
        "allow_any_measurement": boolean(
            data.get("allow_any_measurement"), "allow_any_measurement", False
        ),
    }


def debug_and_tcb(
    claims: VerifiedClaims,
    allow_debug: bool,
    allowed_tcb_statuses: frozenset[str],
    min_evaluation_data_number: int | None = None,
    allowed_advisory_ids: frozenset[str] | None = None,
) -> list[Violation]:
    """Debug refused unless allowed; the TCB status one of those accepted, judged on collateral
    of at least ``min_evaluation_data_number`` (unset: any), carrying no advisory outside
    ``allowed_advisory_ids`` (unset: any)."""
    out = []
    if claims.debug and not allow_debug:
        out.append(Violation("debug", "False", "True"))
    if claims.tcb_status not in allowed_tcb_statuses:
        allowed = " or ".join(sorted(allowed_tcb_statuses))
        out.append(Violation("tcb_status", allowed, str(claims.tcb_status)))
    if allowed_advisory_ids is not None:
        advisories = getattr(claims, "advisory_ids", ())
        unassessed = [a for a in advisories if a not in allowed_advisory_ids]
        if unassessed:
            expected = "only " + ", ".join(sorted(allowed_advisory_ids))
            out.append(Violation("advisory_ids", expected, ", ".join(unassessed)))
    if min_evaluation_data_number is not None:
        number = getattr(claims, "tcb_evaluation_data_number", None)
        if number is None or number < min_evaluation_data_number:
            out.append(
                Violation(
                    "tcb_evaluation_data_number", f">= {min_evaluation_data_number}", str(number)
                )
            )
    return out
