"""Policies as data: one optional sub-policy per evidence kind, loaded from TOML or a mapping.

A policy file has sections ``[sgx]``, ``[tdx]``, ``[sev_snp]``, ``[nitro]`` and
``[nvidia_gpu]`` (the GPU beside the CPU TEE: present means required). BlindAI 0.6's
``manifest.toml`` (top-level ``mr_enclave``, ``allow_debug``, ``attributes_*_hex``,
``misc_*_hex``) is accepted as it is, as the SGX policy. An empty policy is an error.

Example::

    policy = Policy.from_file("policy.toml")
    sgx_policy = policy.for_kind(EvidenceKind.SGX)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from blindai.attestation.claims import EvidenceKind, VerifiedClaims
from blindai.errors import ConfigurationError, Violation

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["MANIFEST_KEYS", "KindPolicy", "Policy"]

_P = TypeVar("_P", bound="KindPolicy")

#: top-level keys of BlindAI 0.6's manifest.toml, read as the SGX policy
MANIFEST_KEYS = frozenset(
    {
        "mr_enclave",
        "allow_debug",
        "attributes_flags_hex",
        "attributes_mask_flags_hex",
        "attributes_xfrm_hex",
        "attributes_mask_xfrm_hex",
        "misc_select_hex",
        "misc_mask_hex",
        # ours, allowed beside the manifest keys: BlindAI 0.6.3 itself accepted SWHardeningNeeded
        "allowed_tcb_statuses",
    }
)
_SECTIONS = {
    "sgx": EvidenceKind.SGX,
    "tdx": EvidenceKind.TDX,
    "sev_snp": EvidenceKind.SEV_SNP,
    "nitro": EvidenceKind.NITRO,
    "nvidia_gpu": EvidenceKind.NVIDIA_GPU,
}


class KindPolicy(Protocol):
    """What every per-kind policy provides."""

    @classmethod
    def from_mapping(cls: type[_P], data: Mapping[str, Any]) -> _P:
        """Build the policy from a TOML section; unknown keys raise ConfigurationError."""
        ...

    def check(self, claims: VerifiedClaims) -> list[Violation]:
        """Every way in which ``claims`` fail this policy (empty when accepted)."""
        ...


def _policy_class(kind: EvidenceKind) -> type[KindPolicy]:
    # imported lazily: each kind's package imports this module
    if kind is EvidenceKind.SGX:
        from blindai.attestation.sgx import SgxPolicy

        return SgxPolicy
    if kind is EvidenceKind.TDX:
        from blindai.attestation.tdx import TdxPolicy

        return TdxPolicy
    if kind is EvidenceKind.SEV_SNP:
        from blindai.attestation.snp import SnpPolicy

        return SnpPolicy
    if kind is EvidenceKind.NITRO:
        from blindai.attestation.nitro import NitroPolicy

        return NitroPolicy
    if kind is EvidenceKind.NVIDIA_GPU:
        from blindai.attestation.nvidia_gpu import NvidiaGpuPolicy

        return NvidiaGpuPolicy
    raise ConfigurationError(f"no policy exists for {kind.value} evidence")


@dataclass(frozen=True)
class Policy:
    """Per-kind sub-policies; a kind without one cannot be accepted."""

    sgx: KindPolicy | None = None
    tdx: KindPolicy | None = None
    sev_snp: KindPolicy | None = None
    nitro: KindPolicy | None = None
    nvidia_gpu: KindPolicy | None = None

    def __post_init__(self) -> None:
        if not any((self.sgx, self.tdx, self.sev_snp, self.nitro, self.nvidia_gpu)):
            raise ConfigurationError("an empty policy accepts nothing: give at least one section")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Policy:
        """Build from parsed TOML: sections by kind, or a BlindAI 0.6 manifest."""
        manifest = {k: v for k, v in data.items() if k in MANIFEST_KEYS}
        unknown = sorted(set(data) - MANIFEST_KEYS - set(_SECTIONS))
        if unknown:
            raise ConfigurationError(f"unknown policy key(s): {', '.join(unknown)}")
        parts: dict[str, KindPolicy] = {}
        for section, kind in _SECTIONS.items():
            if section in data:
                if not isinstance(data[section], Mapping):
                    raise ConfigurationError(f"[{section}] must be a table")
                parts[section] = _policy_class(kind).from_mapping(data[section])
        if manifest:
            if "sgx" in parts:
                raise ConfigurationError("give the SGX policy either as [sgx] or as manifest keys")
            parts["sgx"] = _policy_class(EvidenceKind.SGX).from_mapping(manifest)
        return cls(**parts)

    @classmethod
    def from_toml(cls, text: str) -> Policy:
        """Parse a TOML policy document."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"policy is not valid TOML: {exc}") from exc
        return cls.from_mapping(data)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Policy:
        """Read a TOML policy file."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot read policy file {path}: {exc.strerror}") from exc
        return cls.from_toml(text)

    def for_kind(self, kind: EvidenceKind) -> KindPolicy:
        """The sub-policy for ``kind``; ConfigurationError when the policy has none."""
        section = {v: k for k, v in _SECTIONS.items()}.get(kind)
        sub = getattr(self, section) if section else None
        if sub is None:
            raise ConfigurationError(f"the policy has no [{section or kind.value}] section")
        return sub  # type: ignore[no-any-return]
