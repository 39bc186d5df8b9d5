"""The store's manifest: which write of each entry is the current one.

An entry file authenticates itself (``_crypto``), but not its freshness: whoever controls the
disk could put back an older copy of an entry, a revoked API key or a deleted model, and it
would load. Each write of an entry has a fresh random nonce, authenticated with the entry; the
manifest, sealed like an entry (kind ``n``, file :data:`MANIFEST_NAME`), lists each entry's
file name with the nonce of the write the server made last. An entry file the manifest does
not list, or with another nonce, is refused on load. The manifest is written before the entry
(listing the new write beside the old while the entry is written, so that a crash leaves the
old or the new) and before an entry is removed (marked deleted: a file left by a crash, or put
back, is removed at the next start).

What it does not stop: putting back the whole directory as it was at an earlier moment (the
manifest with its entries), since nothing outside the operator's reach counts the manifest's
writes; a start with ``--store-rebuild-manifest``, which the operator chooses, and which
lists whatever entries are present (it sets ``rebuilt``, kept for good and stated to clients).
Its ``generation`` (one more each write) is logged at each start.

Its size is bounded (:data:`MAX_MANIFEST_BYTES`, from :data:`MAX_ENTRIES` entries, the revoked
keys kept and :data:`MAX_ADMINS` admin keys): a write past it is refused, and a manifest file
over it is refused at start unread (the host could make it gigabytes long).

It also remembers the API keys revoked last (:data:`REVOKED_KEYS_KEPT` of them, the oldest
forgotten first): each one's keyed hash, id and name, never the key, so that a revoked key
still in use is named in the audit log after a restart too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cbor2

from blindai.server.store._crypto import NONCE_SIZE

__all__ = [
    "KIND",
    "MANIFEST_NAME",
    "MAX_ADMINS",
    "MAX_ENTRIES",
    "MAX_MANIFEST_BYTES",
    "REVOKED_KEYS_KEPT",
    "Manifest",
    "RevokedKey",
]

MANIFEST_NAME = "manifest"
KIND = b"n"
REVOKED_KEYS_KEPT = 256
"""How many revoked API keys the manifest remembers (the oldest forgotten first): about 130
bytes each in a manifest written at every write of an entry."""
_HASH_SIZE = 32
MAX_ENTRIES = 1 << 17
"""Entries a manifest lists at most: models and API-key records, and those marked deleted
whose file's removal did not finish (a crash, an unlink that failed: listed until the next
start, which removes the file). An entry whose file was removed is no longer listed (a copy
put back is then refused at start as not current), so uploads and deletes in turn never fill
the manifest."""
MAX_ADMINS = 1024
"""Admin keys a store remembers being served under at most."""
_ENTRY_BYTES = 2 + 41 + 1 + 2 * (1 + NONCE_SIZE)
"""An entry as CBOR: its file name (``k-`` or ``m-``, 32 hex digits, ``.sealed``), and up to
two nonces."""
_REVOKED_BYTES = 1 + (2 + _HASH_SIZE) + (1 + 18) + (2 + 64)
"""A revoked key as CBOR: its keyed hash, id (``k_`` and 16 hex digits) and name (64 at most)."""
_ADMIN_BYTES = 2 + 64
_FRAME_BYTES = 256
"""The map's keys, the generation, the mark and the arrays' headers."""
MAX_MANIFEST_BYTES = (
    MAX_ENTRIES * _ENTRY_BYTES
    + REVOKED_KEYS_KEPT * _REVOKED_BYTES
    + MAX_ADMINS * _ADMIN_BYTES
    + _FRAME_BYTES
)
"""The largest manifest (its CBOR) this store writes or reads: about 9.3 MB."""


@dataclass(frozen=True)
class RevokedKey:
    """A revoked API key as remembered: its keyed hash (``HMAC-SHA256``), id and name."""

    key_hash: bytes = field(repr=False)
    key_id: str
    name: str


@dataclass
class Manifest:
    """Each entry's file name and the nonces of its writes that may be on disk (one, or two
    while a write replaces it; none: deleted since the store was opened, its file to be removed
    if it is there at the next start); ``generation``: how many times it was written;
    ``rebuilt``: whether it was ever rebuilt from the entries present
    (``--store-rebuild-manifest``, which accepts any entry put back), kept for good;
    ``admins``: the admin keys' SHA-256 (hex) the store was ever served under, in order;
    ``revoked``: the API keys revoked last, oldest first (at most :data:`REVOKED_KEYS_KEPT`)."""

    generation: int = 0
    entries: dict[str, frozenset[bytes]] = field(default_factory=dict)
    rebuilt: bool = False
    admins: tuple[str, ...] = ()
    revoked: tuple[RevokedKey, ...] = ()

    def remember_revoked(self, key: RevokedKey) -> None:
        """Add ``key`` to the revoked keys, forgetting the oldest beyond the cap."""
        self.revoked = (*self.revoked, key)[-REVOKED_KEYS_KEPT:]

    def accepts(self, name: str, nonce: bytes) -> bool:
        """Whether the entry file ``name`` written with ``nonce`` is a current one."""
        return nonce in self.entries.get(name, ())

    def to_bytes(self) -> bytes:
        """Its CBOR (sealed by the store)."""
        listed = {name: sorted(nonces) for name, nonces in sorted(self.entries.items())}
        doc = {
            "generation": self.generation,
            "entries": listed,
            "rebuilt": self.rebuilt,
            "admins": list(self.admins),
            "revoked": [[k.key_hash, k.key_id, k.name] for k in self.revoked],
        }
        return bytes(cbor2.dumps(doc))

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """A manifest from its (authenticated) CBOR; ValueError when it is not one."""
        try:
            doc: Any = cbor2.loads(data)
        except Exception as exc:  # authenticated: only a bug of a writer gets here
            raise ValueError("the manifest does not decode") from exc
        generation = doc.get("generation") if isinstance(doc, dict) else None
        listed = doc.get("entries") if isinstance(doc, dict) else None
        rebuilt = doc.get("rebuilt", False) if isinstance(doc, dict) else None
        admins = doc.get("admins", []) if isinstance(doc, dict) else None
        revoked = doc.get("revoked", []) if isinstance(doc, dict) else None
        if type(generation) is not int or not isinstance(listed, Mapping):
            raise ValueError("the manifest is not a map of a generation and entries")
        if not isinstance(rebuilt, bool):
            raise ValueError("the manifest's rebuilt mark is mistyped")
        if not isinstance(admins, list) or not all(
            isinstance(a, str) and len(a) == 64 for a in admins
        ):
            raise ValueError("the manifest's admin keys are mistyped")
        if not isinstance(revoked, list) or not all(_is_revoked(k) for k in revoked):
            raise ValueError("the manifest's revoked keys are mistyped")
        entries: dict[str, frozenset[bytes]] = {}
        for name, nonces in listed.items():
            if not isinstance(name, str) or not isinstance(nonces, list):
                raise ValueError("a manifest entry is mistyped")
            if not all(isinstance(n, bytes) and len(n) == NONCE_SIZE for n in nonces):
                raise ValueError("a manifest entry's nonce is mistyped")
            entries[name] = frozenset(nonces)
        kept = tuple(RevokedKey(*k) for k in revoked)[-REVOKED_KEYS_KEPT:]
        return cls(generation, entries, rebuilt, tuple(admins), kept)


def _is_revoked(item: Any) -> bool:
    return (
        isinstance(item, list)
        and len(item) == 3
        and isinstance(item[0], bytes)
        and len(item[0]) == _HASH_SIZE
        and isinstance(item[1], str)
        and isinstance(item[2], str)
    )
