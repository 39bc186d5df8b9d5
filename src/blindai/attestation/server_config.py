"""What a policy requires of the server's configuration: its ``[server]`` section.

The evidence proves which code runs in the TEE, not how its operator started it: with or
without access control, with which admin key (the operator configures the admin key's
SHA-256, so an operator who configures the hash of a key of their own is the admin), with
model export on or off, with its store's manifest ever rebuilt or not. The server states these
in the ``info`` of its ``GET /attestation`` reply; read on the attested port, over the very
TLS connection whose certificate the evidence binds, that statement comes from the attested
code, so a client may hold it to a policy before it sends anything (``blindai.connect``; the
unattested port's ``/info`` is not used for it).

Example (``policy.toml``)::

    [server]
    admin_key_sha256 = "4c1e5a..."   # access control on, with this admin key
    allow_model_export = false
    store_manifest_rebuilt = false   # no start with --store-rebuild-manifest, ever
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from blindai.errors import ConfigurationError, Violation
from blindai.escape import brief

__all__ = ["SECTION", "ServerPolicy"]

SECTION = "server"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FIELDS = (
    "access_control",
    "admin_key_sha256",
    "allow_model_export",
    "store_manifest_rebuilt",
    "previous_admin_keys",
)
_FLAGS = ("access_control", "allow_model_export", "store_manifest_rebuilt")


@dataclass(frozen=True)
class ServerPolicy:
    """The configuration a server must state in its attested reply; None: not checked."""

    access_control: bool | None = None
    """Whether API keys are required (implied by ``admin_key_sha256``)."""
    admin_key_sha256: str | None = None
    """The admin key's SHA-256, 64 lowercase hex digits (``blindai keys generate-admin``)."""
    allow_model_export: bool | None = None
    """Whether a model's owner may download it (replication, ``--allow-model-export``)."""
    store_manifest_rebuilt: bool | None = None
    """Whether the sealed store's manifest was ever rebuilt (``--store-rebuild-manifest``: from
    then on, an older copy of a single entry put back by the operator, such as a revoked key's
    record, may be current); ``false`` refuses such a server."""
    previous_admin_keys: tuple[str, ...] = ()
    """Other admin keys' SHA-256 the store may have been served under (a rotation the admin made).
    With ``admin_key_sha256`` pinned, a server whose store was ever served under an admin key
    outside these two is refused: an operator who started it once with a key of their own was
    its admin then (created keys that still work, revoked or deleted others'), and the store
    keeps every admin key's hash (``store_admin_keys``)."""

    def __post_init__(self) -> None:
        if self.admin_key_sha256 is not None and self.access_control is False:
            raise ConfigurationError(
                "[server]: admin_key_sha256 means access control, not access_control = false"
            )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ServerPolicy:
        """Build from the ``[server]`` table; ConfigurationError when it is malformed."""
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise ConfigurationError(f"[server]: unknown key(s): {', '.join(unknown)}")
        for name in _FLAGS:
            if name in data and not isinstance(data[name], bool):
                raise ConfigurationError(f"[server]: {name} must be true or false")
        digest = data.get("admin_key_sha256")
        if digest is not None:
            if not isinstance(digest, str) or not _HEX64.fullmatch(digest.strip().lower()):
                raise ConfigurationError("[server]: admin_key_sha256 must be 64 hex digits")
            digest = digest.strip().lower()
        previous = data.get("previous_admin_keys", [])
        if not isinstance(previous, list) or not all(
            isinstance(p, str) and _HEX64.fullmatch(p.strip().lower()) for p in previous
        ):
            raise ConfigurationError(
                "[server]: previous_admin_keys must be a list of 64 hex digits"
            )
        if previous and digest is None:
            raise ConfigurationError("[server]: previous_admin_keys needs admin_key_sha256")
        if not data:
            raise ConfigurationError("[server]: an empty section checks nothing")
        return cls(
            access_control=data.get("access_control"),
            admin_key_sha256=digest,
            allow_model_export=data.get("allow_model_export"),
            store_manifest_rebuilt=data.get("store_manifest_rebuilt"),
            previous_admin_keys=tuple(p.strip().lower() for p in previous),
        )

    def check(self, info: Mapping[str, Any]) -> list[Violation]:
        """Every way ``info`` (the server's attested statement of its configuration) fails."""
        wanted: dict[str, object] = {
            "access_control": True if self.admin_key_sha256 is not None else self.access_control,
            "admin_key_sha256": self.admin_key_sha256,
            "allow_model_export": self.allow_model_export,
            "store_manifest_rebuilt": self.store_manifest_rebuilt,
        }
        found = []
        for name, expected in wanted.items():
            if expected is None:
                continue
            actual = info.get(name)
            if actual != expected:
                shown = "not stated (an older server)" if name not in info else _shown(actual)
                found.append(Violation(f"server.{name}", _shown(expected), shown))
        served = info.get("store_admin_keys")
        if self.admin_key_sha256 is not None and isinstance(served, list):
            allowed = {self.admin_key_sha256, *self.previous_admin_keys}
            others = [k for k in served if k not in allowed]
            if others:
                found.append(
                    Violation(
                        "server.store_admin_keys",
                        "only admin_key_sha256 and previous_admin_keys",
                        f"the store was also served under {_listed(others)}",
                    )
                )
        return found


def _listed(keys: list[object]) -> str:
    """The admin keys' hashes, as the server stated them (bounded: any value may be there)."""
    return ", ".join(k if isinstance(k, str) else brief(k) for k in keys)[:200]


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    return brief(value, 80)
