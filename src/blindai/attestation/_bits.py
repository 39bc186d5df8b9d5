"""Registers of named bits (SGX ATTRIBUTES, TDX TD attributes and XFAM, the SEV-SNP guest
policy): violations that name each offending bit, and policy sets of bit names."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from blindai.errors import ConfigurationError, Violation

__all__ = ["XSAVE_BITS", "bit_name", "bit_violations", "check_names"]

#: XSAVE feature bits (XCR0 and IA32_XSS), as SGX's XFRM and TDX's XFAM use them
XSAVE_BITS: Mapping[int, str] = {
    0: "X87",
    1: "SSE",
    2: "AVX",
    3: "MPX_BNDREGS",
    4: "MPX_BNDCSR",
    5: "AVX512_OPMASK",
    6: "AVX512_ZMM_HI256",
    7: "AVX512_HI16_ZMM",
    8: "PT",
    9: "PKRU",
    10: "PASID",
    11: "CET_U",
    12: "CET_S",
    13: "HDC",
    14: "ULI",
    15: "LBR",
    16: "HWP",
    17: "AMX_XTILECFG",
    18: "AMX_XTILEDATA",
}


def bit_name(bit: int, names: Mapping[int, str]) -> str:
    """The name of ``bit`` in ``names``, or ``"bit N"`` for one the table does not name."""
    return names.get(bit, f"bit {bit}")


def bit_violations(
    field: str, expected: int, mask: int, actual: int, names: Mapping[int, str]
) -> list[Violation]:
    """A violation when ``actual`` differs from ``expected`` on a bit of ``mask``, naming each
    such bit in order: expected ``"SEPT_VE_DISABLE set and MIGRATABLE clear"``, got
    ``"SEPT_VE_DISABLE clear and MIGRATABLE set"``; the raw ``actual`` rides along as
    :attr:`~blindai.errors.Violation.value`."""
    differ = (actual ^ expected) & mask
    wanted, found = [], []
    for bit in range(differ.bit_length()):
        if differ >> bit & 1:
            name = bit_name(bit, names)
            is_set = bool(expected >> bit & 1)
            wanted.append(f"{name} {'set' if is_set else 'clear'}")
            found.append(f"{name} {'clear' if is_set else 'set'}")
    if not wanted:
        return []
    return [Violation(field, " and ".join(wanted), " and ".join(found), value=actual)]


def check_names(
    value: object, key: str, allowed: Collection[str], section: str, hint: str = ""
) -> None:
    """ConfigurationError unless ``value`` is a set of strings, each one of ``allowed`` (a list
    of names in a policy; a plain string would be a substring test); ``hint`` replaces the list
    of known names in the message."""
    if not isinstance(value, frozenset | set) or not all(isinstance(v, str) for v in value):
        raise ConfigurationError(
            f"[{section}] {key} must be a set of bit names (frozenset of str), "
            f"not {type(value).__name__}"
        )
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ConfigurationError(
            f"[{section}] {key}: unknown or misplaced bit(s) {', '.join(unknown)}; "
            + (hint or f"known: {', '.join(sorted(allowed))}")
        )
