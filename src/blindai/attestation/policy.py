"""Policies as data: one optional sub-policy per evidence kind, loaded from TOML or a mapping.

A policy file has one section per kind of :data:`~blindai.attestation.kinds.KINDS`:
``[sgx]``, ``[tdx]``, ``[sev_snp]``, ``[nitro]`` and ``[nvidia_gpu]`` (the GPU beside the CPU
TEE: present means required), and optionally ``[server]``: the configuration the server must
state over the attested channel (:mod:`blindai.attestation.server_config`). BlindAI 0.6's
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
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

from blindai._documents import loads_toml
from blindai.attestation.claims import EvidenceKind, VerifiedClaims
from blindai.attestation.kinds import KINDS, SECTIONS, spec_for
from blindai.attestation.server_config import SECTION as SERVER_SECTION
from blindai.attestation.server_config import ServerPolicy
from blindai.errors import ConfigurationError, Violation
from blindai.localfiles import read_small

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["MANIFEST_KEYS", "MAX_POLICY_BYTES", "UNPINNED", "KindPolicy", "Policy"]

MAX_POLICY_BYTES = 1 << 20
"""Largest policy file read: a policy is a few hundred bytes; a FIFO or a device is refused."""

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
#: a section that pins no measurement and keeps every other default
UNPINNED: Mapping[str, Any] = MappingProxyType({"allow_any_measurement": True})


class KindPolicy(Protocol):
    """What every per-kind policy provides."""

    @classmethod
    def from_mapping(cls: type[_P], data: Mapping[str, Any]) -> _P:
        """Build the policy from a TOML section; unknown keys raise ConfigurationError.

        :data:`UNPINNED` (``allow_any_measurement = true`` alone) must give the kind's
        defaults with the measurement left unpinned (:meth:`Policy.defaults_only`).
        """
        ...

    def check(self, claims: VerifiedClaims) -> list[Violation]:
        """Every way in which ``claims`` fail this policy (empty when accepted)."""
        ...


class Policy:
    """Per-kind sub-policies, one per section of :data:`~blindai.attestation.kinds.KINDS`; a
    kind without one cannot be accepted. Immutable. ``Policy(sgx=SgxPolicy(...))``; each
    section is also an attribute (``policy.sgx``, None when absent). ``server``: what the
    server must state of its configuration (``policy.server``), checked on each connection.
    """

    __slots__ = ("_parts", "_server")
    _parts: Mapping[str, KindPolicy]
    _server: ServerPolicy | None

    def __init__(
        self, *, server: ServerPolicy | None = None, **sections: KindPolicy | None
    ) -> None:
        unknown = sorted(set(sections) - set(SECTIONS))
        if unknown:
            raise ConfigurationError(f"unknown policy section(s): {', '.join(unknown)}")
        parts = {name: sub for name, sub in sections.items() if sub is not None}
        if not parts and server is None:
            raise ConfigurationError("an empty policy accepts nothing: give at least one section")
        object.__setattr__(self, "_parts", MappingProxyType(parts))
        object.__setattr__(self, "_server", server)

    @property
    def server(self) -> ServerPolicy | None:
        """The ``[server]`` section: the configuration the server must state (None: any)."""
        return self._server

    def __getattr__(self, name: str) -> KindPolicy | None:
        if name in SECTIONS:
            return self._parts.get(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Policy)
            and dict(self._parts) == dict(other._parts)
            and self._server == other._server
        )

    def __hash__(self) -> int:
        return hash((tuple(sorted(self._parts.items(), key=lambda item: item[0])), self._server))

    def __repr__(self) -> str:
        shown = [f"{name}={sub!r}" for name, sub in self._parts.items()]
        shown += [] if self._server is None else [f"server={self._server!r}"]
        return f"Policy({', '.join(shown)})"

    @property
    def sections(self) -> Mapping[str, KindPolicy]:
        """The sub-policies given, by section name."""
        return self._parts

    @classmethod
    def defaults_only(cls, kind: EvidenceKind, *more: EvidenceKind) -> Policy:
        """Every default of each kind's policy, with the measurement left unpinned. DANGEROUS.

        What this accepts: any code at all running in a genuine, non-debug TEE of the kinds
        named (at least one: a section may mean "required", so none is added unasked), SGX and
        TDX up to date, SEV-SNP at any firmware TCB. Authenticity and every default still apply
        (TCB status UpToDate only for SGX and TDX, debug refused, SEV-SNP's VMPL 0, Nitro's
        freshness; the table's ``defaults`` text says which), but nothing ties the evidence to
        *your* code: use it to read the measurements of a deployment you control, then pin
        them in a real policy. ``blindai attest verify`` uses it when given no ``--policy``.
        """
        specs = [spec_for(k) for k in (kind, *more)]
        return cls(
            server=None, **{s.section: s.policy_class().from_mapping(UNPINNED) for s in specs}
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Policy:
        """Build from parsed TOML: sections by kind, or a BlindAI 0.6 manifest."""
        manifest = {k: v for k, v in data.items() if k in MANIFEST_KEYS}
        unknown = sorted(set(data) - MANIFEST_KEYS - set(SECTIONS) - {SERVER_SECTION})
        if unknown:
            raise ConfigurationError(f"unknown policy key(s): {', '.join(unknown)}")
        parts: dict[str, KindPolicy] = {}
        for spec in KINDS:
            if spec.section in data:
                if not isinstance(data[spec.section], Mapping):
                    raise ConfigurationError(f"[{spec.section}] must be a table")
                parts[spec.section] = spec.policy_class().from_mapping(data[spec.section])
        if manifest:
            sgx = spec_for(EvidenceKind.SGX)
            if sgx.section in parts:
                raise ConfigurationError("give the SGX policy either as [sgx] or as manifest keys")
            parts[sgx.section] = sgx.policy_class().from_mapping(manifest)
        server = None
        if SERVER_SECTION in data:
            if not isinstance(data[SERVER_SECTION], Mapping):
                raise ConfigurationError(f"[{SERVER_SECTION}] must be a table")
            server = ServerPolicy.from_mapping(data[SERVER_SECTION])
        return cls(server=server, **parts)

    @classmethod
    def from_toml(cls, text: str) -> Policy:
        """Parse a TOML policy document."""
        try:
            data = loads_toml(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"policy is not valid TOML: {exc}") from exc
        return cls.from_mapping(data)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Policy:
        """Read a TOML policy file (a regular file of at most :data:`MAX_POLICY_BYTES`)."""
        data = read_small(path, "policy file", limit=MAX_POLICY_BYTES)
        try:
            text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
        except UnicodeDecodeError as exc:
            raise ConfigurationError(
                f"policy file {path} is not UTF-8 text (TOML is): byte {exc.start} is "
                f"{exc.object[exc.start : exc.start + 1]!r}"
            ) from exc
        return cls.from_toml(text)

    def for_kind(self, kind: EvidenceKind) -> KindPolicy:
        """The sub-policy for ``kind``; ConfigurationError when the policy has none."""
        section = spec_for(kind).section
        sub = self._parts.get(section)
        if sub is None:
            raise ConfigurationError(f"the policy has no [{section}] section")
        return sub
