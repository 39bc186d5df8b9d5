"""SealedStore: models and API-key records kept encrypted and authenticated in one directory.

One file per entry (format: :mod:`blindai.server.store._crypto`), written atomically
(:mod:`blindai.server.store._files`): once :meth:`SealedStore.put_model` or
:meth:`SealedStore.put_key` returns, the entry survives a crash (kill -9, power loss); once
:meth:`SealedStore.delete_model` or :meth:`SealedStore.delete_key` returns, it stays gone.
A crash in between leaves the old state or the new, never a half-written entry: temporary
files are removed at the next start and never read. What an entry holds:
:mod:`blindai.server.store._records`; how its file is opened:
:mod:`blindai.server.store._entry_files`.

On load, every entry whose authentication holds and that the store's manifest lists
(:mod:`blindai.server.store._manifest`: the last write of each entry) is returned; one that
fails (altered, truncated, moved to another name, sealed with another key, an older copy put
back, a copy from another store) is skipped with one log line naming its file, and listed in
:attr:`SealedStore.refused`. A directory is used by one server at a time (an exclusive
``flock`` on ``DIR/.lock``); should the host remove the lock file and start a second server on
the directory, a write is refused (OSError) when the manifest on disk is not the one this
server read or wrote last, so that neither writes its view over the other's; the check and the
replacement run under a lock on the manifest file itself
(:mod:`blindai.server.store._manifest_file`), so that two writes at once cannot both pass it.

What the store does not prevent: whoever controls the disk can delete entries, or put back the
whole directory as it was earlier (the manifest with its entries, or, with no manifest and no
entry of version 2, entries from before the store kept one); whoever chooses the server's flags
can pass ``rebuild_manifest`` (``--store-rebuild-manifest``), which accepts any entry put back
(the manifest keeps a mark of it for good: :attr:`SealedStore.manifest_rebuilt`): see
docs/access-control.md.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cbor2

from blindai.errors import ConfigurationError
from blindai.server.store._crypto import (
    HEADER_SIZE,
    OVERHEAD,
    TAG_SIZE,
    VERSION,
    EntryKeys,
    Header,
    Unsealer,
    new_nonce,
    seal,
    split_plaintext,
)
from blindai.server.store._entry_files import (
    ENTRY_NAME,
    header_of,
    nonce_of,
    open_regular,
    read_plain,
    shown,
)
from blindai.server.store._files import (
    remove_temporaries,
    unlink_durable,
    write_atomic,
    write_new,
)
from blindai.server.store._manifest import (
    KIND,
    MANIFEST_NAME,
    MAX_ADMINS,
    MAX_ENTRIES,
    MAX_MANIFEST_BYTES,
    REVOKED_KEYS_KEPT,
    Manifest,
    RevokedKey,
)
from blindai.server.store._manifest_file import held
from blindai.server.store._records import (
    EntryRefused,
    StoredKey,
    StoredModel,
    key_meta,
    key_record,
    model_meta,
    model_record,
)

__all__ = ["REVOKED_KEYS_KEPT", "RevokedKey", "SealedStore", "StoredKey", "StoredModel"]

_log = logging.getLogger("blindai.server.store")
_MODEL, _KEY = b"m", b"k"
#: metadata above this size is refused before it is decoded
_MAX_META = 1 << 16
#: the largest manifest file: its sealing, its framing (an empty metadata's length), its CBOR
_MAX_MANIFEST_FILE = OVERHEAD + 4 + MAX_MANIFEST_BYTES


class SealedStore:
    """The sealed directory. Thread-safe: each entry is its own file, written atomically; the
    writes and deletes of one entry run one at a time."""

    def __init__(
        self,
        directory: Path,
        *,
        key_material: bytes,
        max_entry_bytes: int = 1 << 31,
        rebuild_manifest: bool = False,
    ) -> None:
        """Open (or make) the store in ``directory``. ``rebuild_manifest``: list the entries
        found as the current ones, whatever the manifest says (after losing the manifest to a
        disk failure only: it accepts any entry the host put back)."""
        self.directory = directory
        self._keys = EntryKeys.derive(key_material)
        self._max_entry = max_entry_bytes + OVERHEAD + _MAX_META
        self.refused: list[str] = []
        """Files skipped by the loads so far (names only)."""
        self._refused_lock = threading.Lock()
        self._manifest_lock = threading.Lock()
        self._closed = False
        self._manifest_nonce: bytes | None = None
        """The nonce of the manifest this server read or wrote last (None: there was none)."""
        self._busy_lock = threading.Lock()
        self._busy: dict[str, tuple[threading.Lock, int]] = {}
        self._lock_fd = self._take_lock(directory)
        try:
            removed = remove_temporaries(directory)
            if removed:
                _log.info("store: removed %d unfinished write(s)", removed)
            self._manifest = self._open_manifest(rebuild_manifest)
        except BaseException as exc:
            self.close()
            if isinstance(exc, OSError):  # a full disk, or a directory it may not write
                raise _unusable(directory, exc) from exc
            raise

    @staticmethod
    def _take_lock(directory: Path) -> int:
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            # not followed when a link: it could make the server create a file anywhere
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(directory / ".lock", flags, 0o600)
        except OSError as exc:
            reason = "its .lock is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
            raise ConfigurationError(f"cannot use store {directory}: {reason}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise ConfigurationError(
                f"store {directory} is in use by another server process"
            ) from exc
        return fd

    def close(self) -> None:
        """Release the directory, once a manifest write under way has ended; the writes and
        removals asked later are refused (OSError): with the lock released, another server
        may have opened the directory."""
        with self._manifest_lock:
            self._closed = True
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    def __enter__(self) -> SealedStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def manifest_rebuilt(self) -> bool:
        """Whether the manifest was ever rebuilt (``rebuild_manifest``): from then on, older
        copies of single entries the host put back may be current. Kept in the manifest for
        good; the server states it over the attested channel (``store_manifest_rebuilt``).
        Read without the manifest's lock, as :attr:`admin_keys` is."""
        return self._manifest.rebuilt

    @property
    def admin_keys(self) -> tuple[str, ...]:
        """The admin keys' SHA-256 (hex) this store was ever served under, in order (kept in
        the manifest; the server states them over the attested channel, ``store_admin_keys``).

        Read without the manifest's lock: ``GET /info`` reads it on the event loop, and a write
        holds that lock through its ``fsync`` and its wait for the manifest file's lock (up to
        ``LOCK_WAIT_S``, 10 s), which stood the whole server still. The value is an immutable
        tuple a writer replaces whole (:meth:`serve_under`, at start)."""
        return self._manifest.admins

    def serve_under(self, admin_sha256: bytes) -> tuple[str, ...]:
        """Record that the store is served under the admin key of SHA-256 ``admin_sha256``
        (written to the manifest when it is new to the store); the admin keys it was served
        under before, in order."""
        digest = admin_sha256.hex()
        with self._manifest_lock:
            before = self._manifest.admins
            if digest not in before:
                if len(before) >= MAX_ADMINS:
                    raise ConfigurationError(
                        f"store {self.directory} was served under {len(before)} admin keys, "
                        f"the most it remembers ({MAX_ADMINS}): serve it under one of them"
                    )
                self._manifest.admins = (*before, digest)
                try:
                    self._write_manifest()
                except OSError as exc:
                    self._manifest.admins = before
                    raise _unusable(self.directory, exc) from exc
            return before

    @property
    def api_key_secret(self) -> bytes:
        """The per-server secret keying API-key hashes (derived from the store key)."""
        return self._keys.api_keys

    # -- writing

    def put_model(self, entry: StoredModel) -> None:
        """Store a model durably (replacing an entry with the same id)."""
        meta, parts = model_meta(entry)
        self._put(_MODEL, entry.model_id, meta, parts)

    def delete_model(self, model_id: str, *, at_next_write: bool = False) -> bool:
        """Remove a model durably; False when the store did not hold it. OSError when the
        manifest cannot be written: the model stays, unless ``at_next_write`` (a copy that must
        not come back): then its removal goes with the next write of the manifest."""
        return self._delete(self._path(_MODEL, model_id), undo=not at_next_write)

    def put_key(self, record: StoredKey) -> None:
        """Store an API-key record durably, under its name."""
        self._put(_KEY, record.name, key_meta(record), [])

    def delete_key(self, name: str) -> bool:
        """Remove an API-key record durably; False when there was none."""
        return self._delete(self._path(_KEY, name))

    def revoke_key(self, record: StoredKey) -> bool:
        """Remove the API-key record ``record`` durably and remember it as revoked (its keyed
        hash, id and name: :attr:`revoked_keys`), both in one write of the manifest; False when
        the store held no record of it. OSError: neither was done."""
        revoked = RevokedKey(record.key_hash, record.key_id, record.name)
        return self._delete(self._path(_KEY, record.name), revoked=revoked)

    @property
    def revoked_keys(self) -> tuple[RevokedKey, ...]:
        """The API keys revoked last, oldest first (at most :data:`REVOKED_KEYS_KEPT`); read
        without the manifest's lock, as :attr:`admin_keys` is (an immutable tuple)."""
        return self._manifest.revoked

    def _path(self, kind: bytes, ident: str) -> Path:
        return self.directory / self._keys.file_name(kind, ident)

    def _put(self, kind: bytes, ident: str, meta: bytes, payload: Sequence[bytes]) -> None:
        if len(meta) > _MAX_META:  # refused now, rather than acknowledged and refused on load
            raise ValueError(f"entry metadata over {_MAX_META} bytes (a name too long?)")
        path = self._path(kind, ident)
        with self._one_at_a_time(path.name), _failure_logged("writing", path.name):
            self._put_entry(kind, path, meta, payload)

    def _put_entry(self, kind: bytes, path: Path, meta: bytes, payload: Sequence[bytes]) -> None:
        nonce = new_nonce()
        with self._manifest_lock:  # listed first: a crash leaves the old entry or the new
            before = self._manifest.entries.get(path.name, frozenset())
            self._list(path.name, before | {nonce}, undo=True)
        try:
            write_atomic(path, seal(self._keys, kind, path.name, meta, payload, nonce))
        except BaseException:
            with self._manifest_lock, contextlib.suppress(OSError):
                if nonce_of(path) != nonce:  # this write never reached the disk
                    self._list(path.name, self._manifest.entries.get(path.name, before) - {nonce})
            raise
        if before:  # the writes it replaced are no longer current
            with self._manifest_lock:
                self._list(path.name, self._manifest.entries.get(path.name, before) - before)

    def _delete(self, path: Path, *, undo: bool = True, revoked: RevokedKey | None = None) -> bool:
        with self._one_at_a_time(path.name), _failure_logged("removing", path.name):
            with self._manifest_lock:  # marked deleted first: a crash leaves it gone for good
                remembered = self._manifest.revoked
                if revoked is not None:
                    self._manifest.remember_revoked(revoked)
                try:
                    if self._manifest.entries.get(path.name):
                        self._list(path.name, frozenset(), undo=undo)
                    elif revoked is not None:
                        self._write_manifest()
                except BaseException:
                    self._manifest.revoked = remembered
                    raise
            removed = unlink_durable(path)
            with self._manifest_lock:  # gone for good: the next write need not list it
                if self._manifest.entries.get(path.name) == frozenset():
                    del self._manifest.entries[path.name]
            return removed

    @contextlib.contextmanager
    def _one_at_a_time(self, name: str) -> Iterator[None]:
        """Writes and deletes of entry ``name`` one after the other (two puts at once: the one
        renamed last must be the one its manifest write lists)."""
        with self._busy_lock:
            lock, users = self._busy.get(name, (threading.Lock(), 0))
            self._busy[name] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._busy_lock:
                lock, users = self._busy[name]
                if users == 1:
                    del self._busy[name]
                else:
                    self._busy[name] = (lock, users - 1)

    # -- the manifest (under _manifest_lock)

    def _list(self, name: str, nonces: frozenset[bytes], *, undo: bool = False) -> None:
        """List ``nonces`` as the current writes of entry ``name`` (none: deleted, its file
        removed at the next start if it is still there; once :meth:`_delete` has removed it,
        the entry is no longer listed), and write the manifest. ``undo``: not
        written (a full disk), the change is undone, so that the next write does not carry a
        delete its caller was told failed, nor list a write that never began (a clean-up after
        a write is kept: the next write carries it)."""
        entries = self._manifest.entries
        before = entries.get(name)
        if before is None and len(entries) >= MAX_ENTRIES:
            raise OSError(
                errno.ENOSPC,
                f"the store lists its most entries ({MAX_ENTRIES})",
            )
        entries[name] = nonces
        try:
            self._write_manifest()
        except BaseException:
            if not undo:
                raise
            if before is None:
                del entries[name]
            else:
                entries[name] = before
            raise

    def _write_manifest(self) -> None:
        """Replace the manifest on disk with this server's, if the one there is the one it read
        or wrote last (OSError if not: another server process writes the directory, or the host
        replaced or removed the manifest; written over, it would drop the other's writes and
        list again what it deleted)."""
        path = self.directory / MANIFEST_NAME
        if self._closed:
            raise OSError(errno.EBADF, "the store is closed")
        with held(path) as on_disk:  # checked and replaced under the file's lock
            if on_disk.nonce != self._manifest_nonce:
                _log.error(
                    "store: the manifest on disk is not the one this server wrote last: "
                    "another server process is writing %s (its .lock removed), or the host "
                    "replaced or removed the manifest; this write is refused",
                    self.directory,
                )
                raise OSError(errno.ESTALE, "the store's manifest is not the one this server wrote")
            self._manifest.generation += 1
            nonce = new_nonce()
            manifest = [self._manifest.to_bytes()]
            if len(manifest[0]) > MAX_MANIFEST_BYTES:  # the caps above keep it under
                raise OSError(errno.EFBIG, "the store's manifest would be over its size limit")
            sealed = seal(self._keys, KIND, MANIFEST_NAME, b"", manifest, nonce)
            try:
                if on_disk.exists:
                    write_atomic(path, sealed)
                else:
                    self._write_first(path, sealed)
            finally:  # renamed in, even if a later step failed: the manifest there is this one
                if nonce_of(path) == nonce:
                    self._manifest_nonce = nonce

    def _write_first(self, path: Path, sealed: Iterable[bytes]) -> None:
        """Make the manifest where there is none, unless another process made one meanwhile."""
        try:
            write_new(path, sealed)
        except FileExistsError:
            _log.error(
                "store: another server process made a manifest in %s (its .lock removed) as "
                "this one did; this write is refused",
                self.directory,
            )
            raise OSError(errno.ESTALE, "another process made the store's manifest") from None

    def _open_manifest(self, rebuild: bool) -> Manifest:
        """The manifest on disk, or a new one listing the entries present: in a new store, in
        one written before stores kept a manifest (every entry of version 1), or when asked
        (``rebuild``). A manifest missing beside entries written under one, or refused, stops
        the start (ConfigurationError): the host may have removed it to put back old entries."""
        found = self._headers()
        path = self.directory / MANIFEST_NAME
        manifest = None
        problem = None
        self._manifest_nonce = nonce_of(path)  # what a first write replaces, read or not
        if os.path.lexists(path):
            try:
                manifest = self._read_manifest(path)
            except EntryRefused as exc:
                problem = f"its manifest does not open ({exc})"
        elif any(h.version >= VERSION for h in found.values()):
            problem = "its manifest is missing, beside entries written under one"
        if rebuild or manifest is None:
            if problem is not None and not rebuild:
                raise ConfigurationError(
                    f"store {self.directory}: {problem}. Either it is a store sealed with "
                    "another key (another build or platform: give this server a directory of "
                    "its own), or the host removed or replaced the manifest to put back older "
                    "entries; after a disk failure only, start once with "
                    "--store-rebuild-manifest to accept the entries present"
                )
            before = 0 if manifest is None else manifest.generation
            current = {n: frozenset({h.nonce}) for n, h in found.items()}
            was_rebuilt = manifest is not None and manifest.rebuilt
            admins = () if manifest is None else manifest.admins
            revoked = () if manifest is None else manifest.revoked
            self._manifest = Manifest(
                before, current, rebuilt=rebuild or was_rebuilt, admins=admins, revoked=revoked
            )
            self._write_manifest()
            if rebuild:
                _log.warning(
                    "store: manifest rebuilt (--store-rebuild-manifest): the %d entries present "
                    "are accepted as current",
                    len(found),
                )
            elif found:
                _log.info("store: a manifest now lists the %d entries present", len(found))
            return self._manifest
        self._manifest = manifest
        settled = {  # a write that replaced an entry ended: the file present is the current one
            name: frozenset({found[name].nonce})
            for name, nonces in manifest.entries.items()
            if len(nonces) > 1 and name in found and found[name].nonce in nonces
        }
        deleted = [name for name, nonces in manifest.entries.items() if not nonces]
        for name in deleted:  # a delete cut short by a crash, or a deleted entry put back
            if name in found:
                unlink_durable(self.directory / name)
                del found[name]
                _log.info("store: removed an entry deleted before (%s)", name)
            del manifest.entries[name]
        if settled or deleted:
            manifest.entries.update(settled)
            self._write_manifest()
        missing = sum(not os.path.lexists(self.directory / name) for name in manifest.entries)
        if missing:
            _log.warning("store: %d entries the manifest lists are missing from the disk", missing)
        _log.info("store: manifest generation %d lists %d entries", manifest.generation, len(found))
        return manifest

    def _headers(self) -> dict[str, Header]:
        """The header of each entry file whose header reads (the others are refused on load)."""
        found = {}
        for path in self.directory.iterdir():
            if ENTRY_NAME.fullmatch(path.name):
                header = header_of(path)
                if header is not None:
                    found[path.name] = header
        return found

    def _read_manifest(self, path: Path) -> Manifest:
        header, plain = self._decrypt(path, most=_MAX_MANIFEST_FILE)
        if header.kind != KIND:
            raise EntryRefused("not a manifest")
        self._manifest_nonce = header.nonce  # the one read, should it have changed meanwhile
        try:
            return Manifest.from_bytes(bytes(split_plaintext(plain)[1]))
        except ValueError as exc:
            raise EntryRefused(str(exc)) from exc

    # -- loading

    def load_keys(self) -> list[StoredKey]:
        """Every API-key record whose authentication holds."""
        return [r for r in self._load(_KEY) if isinstance(r, StoredKey)]

    def load_models(self) -> Iterator[StoredModel]:
        """Every model whose authentication holds, one at a time (memory: one model)."""
        for record in self._load(_MODEL):
            if isinstance(record, StoredModel):
                yield record

    def _load(self, kind: bytes) -> Iterator[StoredModel | StoredKey]:
        prefix = kind.decode() + "-"
        for path in sorted(self.directory.iterdir()):
            if not path.name.startswith(prefix):
                continue
            try:
                meta, payload = self._open_entry(path, kind)
                yield model_record(meta, payload) if kind == _MODEL else key_record(meta)
            except EntryRefused as exc:
                self._refuse(path, str(exc))

    def _refuse(self, path: Path, reason: str) -> None:
        # the name is the host's: shown escaped, so that it cannot forge log lines
        _log.error("store: refused %s: %s", shown(path.name), reason)
        with self._refused_lock:
            self.refused.append(path.name)

    def _open_entry(self, path: Path, kind: bytes) -> tuple[dict[str, Any], bytes]:
        if not ENTRY_NAME.fullmatch(path.name):
            raise EntryRefused("not an entry name")
        _, plain = self._decrypt(path, listed=True)
        try:
            meta_bytes, payload = split_plaintext(plain)
        except ValueError as exc:
            raise EntryRefused(str(exc)) from exc
        try:
            meta = cbor2.loads(meta_bytes)
        except Exception as exc:  # authenticated, so only a bug gets here
            raise EntryRefused("metadata does not decode") from exc
        if not isinstance(meta, dict):
            raise EntryRefused("metadata is not a map")
        ident = meta.get("id") if kind == _MODEL else meta.get("name")
        if not isinstance(ident, str) or self._keys.file_name(kind, ident) != path.name:
            raise EntryRefused("entry does not belong to this file name")
        return meta, bytes(payload)

    def _decrypt(
        self, path: Path, *, listed: bool = False, most: int | None = None
    ) -> tuple[Header, bytearray]:
        """The authenticated plaintext of ``path``; ``listed``: refused unread unless the
        manifest lists its write; ``most``: refused unread when larger (bytes; by default
        the largest entry)."""
        try:
            with open_regular(path) as f:
                size = os.fstat(f.fileno()).st_size
                if size < OVERHEAD + 4:
                    raise EntryRefused("truncated")
                if size > (self._max_entry if most is None else most):
                    if most is None:
                        raise EntryRefused(f"{size} bytes, over the limit")
                    raise EntryRefused(
                        f"{size} bytes, over the {most} bytes a manifest of at most "
                        f"{MAX_ENTRIES} entries takes: refused unread"
                    )
                header = f.read(HEADER_SIZE)
                f.seek(size - TAG_SIZE)
                tag = f.read(TAG_SIZE)
                f.seek(HEADER_SIZE)
                try:
                    unsealer = Unsealer(self._keys, header, path.name, tag)
                except ValueError as exc:
                    raise EntryRefused(str(exc)) from exc
                if listed:
                    with self._manifest_lock:
                        current = self._manifest.accepts(path.name, unsealer.header.nonce)
                    if not current:
                        raise EntryRefused(
                            "not a current entry of this store (the manifest does not list this "
                            "write: an older copy put back, a copy from another store, or a write "
                            "that never finished)"
                        )
                plain = read_plain(f, unsealer, size - OVERHEAD)
        except OSError as exc:
            raise EntryRefused(f"unreadable ({exc.strerror})") from exc
        return unsealer.header, plain


@contextlib.contextmanager
def _failure_logged(doing: str, name: str) -> Iterator[None]:
    """One log line saying why a write or removal of entry ``name`` failed (a full disk: its
    callers log the exception's type alone); the error goes on up."""
    try:
        yield
    except OSError as exc:
        _log.error("store: %s %s failed: %s", doing, name, exc.strerror or type(exc).__name__)
        raise


def _unusable(directory: Path, exc: OSError) -> ConfigurationError:
    """Why the server cannot start on the store (its manifest not written, its temporary files
    not removed): the error's reason, with the directory."""
    return ConfigurationError(f"cannot use store {directory}: {exc.strerror or exc}")
