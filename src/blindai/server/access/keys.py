"""API keys: made here, kept only as keyed hashes, checked on every request.

* A tenant key is ``bai_`` followed by ``secrets.token_urlsafe(32)`` (256 random bits); it is
  shown once, when created, and the server keeps only ``HMAC-SHA256(secret, key)``, where the
  secret is derived from the sealed store's key (a random one per process without a store).
* The admin key is never given to the server: ``--admin-key-sha256`` is its SHA-256, public
  configuration; a request's key is hashed and compared in constant time.
* Why a keyed hash and not a slow one (scrypt, argon2): every request checks its key, and a
  slow hash would cost milliseconds per request (or a cache of keys in clear). A slow hash
  protects low-entropy passwords from a stolen hash list; these keys have 256 random bits, so
  no list of hashes can be searched anyway, and the hashes themselves live only in TEE memory
  and in the sealed store. The HMAC costs about a microsecond.
* A revoked key's keyed hash, id and name are remembered (in the store's manifest, when there is
  a store, so across restarts; the last :data:`~blindai.server.store.REVOKED_KEYS_KEPT` keys,
  the oldest forgotten first), for the audit line of its refused requests only.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from blindai.errors import (
    AlreadyExists,
    AuthenticationError,
    ConfigurationError,
    InvalidInput,
    KeyNotFound,
    ServerError,
)
from blindai.protocol.apikeys import API_KEY, KEY_PREFIX, generate_key
from blindai.server.access.principal import ADMIN, ANONYMOUS, Principal
from blindai.server.store.sealed import REVOKED_KEYS_KEPT, RevokedKey, SealedStore, StoredKey

__all__ = ["KEY_PREFIX", "KeyInfo", "KeyRing", "generate_key", "parse_admin_key_sha256"]

_log = logging.getLogger("blindai.server")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_KEY_ID = re.compile(r"k_[0-9a-f]{16}")
"""A tenant key's id: ``k_`` and 16 hex digits (listings show it for a revoked key's models)."""


def parse_admin_key_sha256(text: str) -> bytes:
    """The 32-byte digest from ``--admin-key-sha256`` (64 hex digits)."""
    value = text.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ConfigurationError(
            "--admin-key-sha256 takes the SHA-256 of the admin key as 64 hex digits"
        )
    return bytes.fromhex(value)


@dataclass(frozen=True)
class KeyInfo:
    """What a key listing shows: never the key, never its hash."""

    name: str
    key_id: str
    created_ns: int


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationError("this server requires an API key (Authorization: Bearer KEY)")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not API_KEY.fullmatch(token):
        raise AuthenticationError("the Authorization header must be 'Bearer KEY'")
    return token


class KeyRing:
    """The admin key's digest and the tenant keys' records; thread-safe.

    With ``admin_key_sha256=None`` access control is off: every request is anonymous.
    Records are written to ``store`` (when given) before they take effect in memory;
    ``revoked``: the keys revoked before (the store's :attr:`SealedStore.revoked_keys`), known
    for the audit log only.
    """

    def __init__(
        self,
        *,
        admin_key_sha256: bytes | None,
        secret: bytes,
        store: SealedStore | None = None,
        records: Iterable[StoredKey] = (),
        revoked: Iterable[RevokedKey] = (),
    ) -> None:
        self._admin = admin_key_sha256
        self._secret = secret
        self._store = store
        self._lock = threading.Lock()
        """Guards the maps below, for moments only: authenticating every request takes it on
        the event loop."""
        self._changing = threading.Lock()
        """Creations and revocations one at a time, held through the store's write (an fsync,
        and up to ``LOCK_WAIT_S`` for the manifest file's lock), which ``_lock`` is not."""
        self._by_name: dict[str, StoredKey] = {}
        self._by_hash: dict[bytes, StoredKey] = {}
        self._revoked: dict[bytes, Principal] = {}
        """The keys revoked last (the store's, then this ring's; at most REVOKED_KEYS_KEPT,
        oldest first), by keyed hash: for the audit log only."""
        for record in records:
            self._index(record)
        for key in revoked:
            self._remember(key)

    def _remember(self, key: RevokedKey) -> None:
        self._revoked.pop(key.key_hash, None)
        self._revoked[key.key_hash] = Principal("tenant", key.key_id, key.name)
        while len(self._revoked) > REVOKED_KEYS_KEPT:
            del self._revoked[next(iter(self._revoked))]

    @property
    def enabled(self) -> bool:
        """Whether access control is on (an admin key digest was given)."""
        return self._admin is not None

    def _index(self, record: StoredKey) -> None:
        self._by_name[record.name] = record
        self._by_hash[record.key_hash] = record

    def _hash(self, key: str) -> bytes:
        return hmac.new(self._secret, key.encode(), hashlib.sha256).digest()

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller named by an ``Authorization`` header; AuthenticationError (401)."""
        if self._admin is None:
            return ANONYMOUS
        token = _bearer(authorization)
        if hmac.compare_digest(hashlib.sha256(token.encode()).digest(), self._admin):
            return ADMIN
        digest = self._hash(token)
        with self._lock:
            record = self._by_hash.get(digest)
        if record is not None and hmac.compare_digest(record.key_hash, digest):
            return Principal("tenant", record.key_id, record.name)
        raise AuthenticationError("invalid API key")

    def revoked(self, authorization: str | None) -> Principal | None:
        """The key an ``Authorization`` header presents when that key is among those revoked
        last (kept in the store across restarts), for the audit line of its refusal: it is
        recognised by its keyed hash, as a valid key is; None for any other header."""
        if self._admin is None:
            return None
        try:
            token = _bearer(authorization)
        except AuthenticationError:
            return None
        digest = self._hash(token)
        with self._lock:
            return self._revoked.get(digest)

    def create(self, name: str) -> tuple[KeyInfo, str]:
        """A new tenant key named ``name``: its listing entry, and the key (shown once)."""
        if not _NAME.fullmatch(name):
            raise InvalidInput(
                "a key name is 1 to 64 letters, digits, '.', '_' or '-', starting with a "
                "letter or digit"
            )
        if _KEY_ID.fullmatch(name):
            raise InvalidInput(
                "a key name may not look like a key id (k_ and 16 hex digits): listings show "
                "a revoked key's models with its key id as their owner"
            )
        if name.lower() == ADMIN.name:
            raise InvalidInput(
                f"the key name {ADMIN.name!r} is reserved for the admin key (the audit log "
                "and listings name it so)"
            )
        key = generate_key()
        record = StoredKey(
            key_id="k_" + secrets.token_hex(8),  # _KEY_ID
            name=name,
            key_hash=self._hash(key),
            created_ns=time.time_ns(),
        )
        with self._changing:
            with self._lock:
                if name in self._by_name:
                    raise AlreadyExists(f"a key named {name!r} exists already")
            if self._store is not None:
                try:
                    self._store.put_key(record)
                except OSError as exc:  # the host's disk: full, or an entry made unwritable
                    _log.error("store: a key record could not be written: %s", type(exc).__name__)
                    raise ServerError("the key could not be stored; it was not created") from exc
            with self._lock:
                self._index(record)
        return _info(record), key

    def revoke(self, name: str) -> KeyInfo:
        """Revoke a tenant key: requests with it fail from now on; its models stay."""
        with self._changing:
            with self._lock:
                record = self._by_name.get(name)
                if record is None:
                    raise KeyNotFound(f"no key named {name!r}")
                del self._by_name[name]  # revoked now, whatever the store does
                del self._by_hash[record.key_hash]
                self._remember(RevokedKey(record.key_hash, record.key_id, record.name))
            if self._store is not None:
                try:
                    self._store.revoke_key(record)
                except OSError as exc:
                    _log.error("store: a key record could not be removed: %s", type(exc).__name__)
                    raise ServerError(
                        f"key {name!r} is revoked until the server restarts, but its record "
                        "could not be removed from the store: revoke it again after a restart"
                    ) from exc
        return _info(record)

    def list(self) -> list[KeyInfo]:
        """Every tenant key, oldest first."""
        with self._lock:
            records = sorted(self._by_name.values(), key=lambda r: (r.created_ns, r.name))
        return [_info(r) for r in records]

    def name_of(self, key_id: str | None) -> str | None:
        """The name of the key with id ``key_id`` (None for revoked keys and no owner)."""
        if key_id == ADMIN.key_id:
            return ADMIN.name
        with self._lock:
            return next((r.name for r in self._by_name.values() if r.key_id == key_id), None)


def _info(record: StoredKey) -> KeyInfo:
    return KeyInfo(record.name, record.key_id, record.created_ns)
