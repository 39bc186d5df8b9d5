"""Access control: API keys, who may do what with a model, and the audit log.

Access control is on when the server is given the SHA-256 of an admin key
(``--admin-key-sha256``); the admin key creates, lists and revokes tenant keys, and every
request on the attested ports names its key as ``Authorization: Bearer KEY``.

Example::

    >>> import hashlib
    >>> from blindai.server.access import KeyRing, generate_key
    >>> admin_key = generate_key()
    >>> ring = KeyRing(admin_key_sha256=hashlib.sha256(admin_key.encode()).digest(),
    ...     secret=bytes(32))
    >>> ring.authenticate(f"Bearer {admin_key}").is_admin
    True
    >>> info, alice_key = ring.create("alice")
    >>> alice = ring.authenticate(f"Bearer {alice_key}")
    >>> alice.name, alice.may_run(owner="k_someone_else", public=False)
    ('alice', False)
"""

from __future__ import annotations

from blindai.server.access.audit import AuditAction, AuditLog
from blindai.server.access.control import AccessControl
from blindai.server.access.keys import (
    KEY_PREFIX,
    KeyInfo,
    KeyRing,
    generate_key,
    parse_admin_key_sha256,
)
from blindai.server.access.principal import ADMIN, ADMIN_ID, ANONYMOUS, Principal

__all__ = [
    "ADMIN",
    "ADMIN_ID",
    "ANONYMOUS",
    "KEY_PREFIX",
    "AccessControl",
    "AuditAction",
    "AuditLog",
    "KeyInfo",
    "KeyRing",
    "Principal",
    "generate_key",
    "parse_admin_key_sha256",
]
