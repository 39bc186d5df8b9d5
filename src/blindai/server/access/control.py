"""AccessControl: one server's key ring and audit log, and who may manage keys (the admin)."""

from __future__ import annotations

from dataclasses import dataclass

from blindai.errors import PermissionDenied
from blindai.server.access.audit import AuditLog
from blindai.server.access.keys import KeyInfo, KeyRing
from blindai.server.access.principal import Principal

__all__ = ["AccessControl"]


@dataclass(frozen=True)
class AccessControl:
    """The key ring (off when no admin key digest was given) and the audit log."""

    keyring: KeyRing
    audit: AuditLog

    @property
    def enabled(self) -> bool:
        """Whether requests need an API key."""
        return self.keyring.enabled

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller named by an ``Authorization`` header (anonymous on an open server)."""
        return self.keyring.authenticate(authorization)

    def refused_caller(self, authorization: str | None) -> Principal | None:
        """Who a request refused with 401 presented itself as, for its audit line: a key
        revoked lately (its name and id; kept in the store across restarts), else None."""
        return self.keyring.revoked(authorization)

    def _admin_only(self, caller: Principal) -> None:
        if not self.enabled:
            raise PermissionDenied(
                "access control is off on this server (started without --admin-key-sha256): "
                "there are no API keys to manage"
            )
        if not caller.is_admin:
            raise PermissionDenied("only the admin key may manage API keys")

    def create_key(self, name: str, *, caller: Principal) -> tuple[KeyInfo, str]:
        """A new tenant key (admin only); the key is returned once."""
        self._admin_only(caller)
        return self.keyring.create(name)

    def list_keys(self, *, caller: Principal) -> list[KeyInfo]:
        """The tenant keys (admin only)."""
        self._admin_only(caller)
        return self.keyring.list()

    def revoke_key(self, name: str, *, caller: Principal) -> KeyInfo:
        """Revoke a tenant key (admin only)."""
        self._admin_only(caller)
        return self.keyring.revoke(name)

    def owner_name(self, owner: str | None) -> str | None:
        """How a model's owner is shown: its key's name, the key id once revoked, or None."""
        if owner is None:
            return None
        return self.keyring.name_of(owner) or owner
