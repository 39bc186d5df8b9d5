"""The store's manifest: an older copy of an entry, put back by whoever controls the disk, is
refused (a revoked key, a deleted model, a replaced model); a crash leaves the old or the new."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from blindai.errors import ConfigurationError
from blindai.server.store import SealedStore, StoredKey, _crypto, sealed
from blindai.server.store._manifest import MANIFEST_NAME

from .test_sealed_store import KEY, entry_files, key_record, model


def _saved(store: SealedStore) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in entry_files(store.directory)}


def _put_back(directory: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (directory / name).write_bytes(data)


def _file_of(store: SealedStore, name: str) -> dict[str, bytes]:
    path = store._path(b"k", name)
    return {path.name: path.read_bytes()}


def test_a_revoked_key_put_back_while_stopped_is_removed(tmp_path: Path):
    directory = tmp_path / "store"
    with SealedStore(directory, key_material=KEY) as store:
        store.put_key(key_record("alice"))
        store.put_key(key_record("bob"))
        bob = _file_of(store, "bob")
        store.delete_key("bob")
    _put_back(directory, bob)
    with SealedStore(directory, key_material=KEY) as store:
        assert [k.name for k in store.load_keys()] == ["alice"] and store.refused == []
    assert not any((directory / name).exists() for name in bob)


def test_a_revoked_key_put_back_later_is_refused(tmp_path: Path, caplog):
    directory = tmp_path / "store"
    with SealedStore(directory, key_material=KEY) as store:
        store.put_key(key_record("bob"))
        bob = _saved(store)
        store.delete_key("bob")
    with SealedStore(directory, key_material=KEY) as store:  # a start in between
        assert store.load_keys() == []
    _put_back(directory, bob)
    with SealedStore(directory, key_material=KEY) as store, caplog.at_level(logging.ERROR):
        assert store.load_keys() == []
        assert store.refused == list(bob)
    assert "the manifest does not list this write" in caplog.text


def test_an_older_copy_of_a_model_is_refused(tmp_path: Path):
    directory = tmp_path / "store"
    with SealedStore(directory, key_material=KEY) as store:
        store.put_model(model(b"version one", "id-a", public=True))
        older = _saved(store)
        store.put_model(model(b"version two", "id-a", public=False))
        store.put_model(model(b"other", "id-b"))
    _put_back(directory, older)
    with SealedStore(directory, key_material=KEY) as store:
        assert [m.model_id for m in store.load_models()] == ["id-b"]
        assert store.refused == list(older)


def test_a_replacing_write_that_fails_keeps_whichever_entry_is_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Before the rename (the old entry stays) and after it (the new one is there: its
    directory's fsync failed): either way the entry on disk loads."""
    directory = tmp_path / "store"
    real = sealed.write_atomic
    with SealedStore(directory, key_material=KEY) as store:
        store.put_model(model(b"version one", "id-a"))

        def before_rename(path, chunks):
            if path.name != MANIFEST_NAME:
                raise OSError(28, "No space left on device")
            real(path, chunks)

        monkeypatch.setattr(sealed, "write_atomic", before_rename)
        with pytest.raises(OSError):
            store.put_model(model(b"version two", "id-a"))
    with SealedStore(directory, key_material=KEY) as store:
        assert [m.model for m in store.load_models()] == [b"version one"]

        def after_rename(path, chunks):
            real(path, chunks)
            if path.name != MANIFEST_NAME:
                raise OSError(5, "Input/output error")

        monkeypatch.setattr(sealed, "write_atomic", after_rename)
        with pytest.raises(OSError):
            store.put_model(model(b"version three", "id-a"))
    monkeypatch.setattr(sealed, "write_atomic", real)
    with SealedStore(directory, key_material=KEY) as store:
        assert [m.model for m in store.load_models()] == [b"version three"]
        assert store.refused == []


def test_a_missing_manifest_stops_the_start_until_rebuilt(tmp_path: Path, caplog):
    directory = tmp_path / "store"
    with SealedStore(directory, key_material=KEY) as store:
        store.put_key(key_record())
    (directory / MANIFEST_NAME).unlink()
    with pytest.raises(ConfigurationError, match="manifest is missing"):
        SealedStore(directory, key_material=KEY)
    with caplog.at_level(logging.WARNING):
        with SealedStore(directory, key_material=KEY, rebuild_manifest=True) as store:
            assert store.load_keys() == [key_record()]
    assert "manifest rebuilt" in caplog.text
    with SealedStore(directory, key_material=KEY) as store:  # rebuilt once, for good
        assert store.load_keys() == [key_record()]


def test_an_altered_manifest_stops_the_start(tmp_path: Path):
    directory = tmp_path / "store"
    with SealedStore(directory, key_material=KEY) as store:
        store.put_key(key_record())
    path = directory / MANIFEST_NAME
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigurationError, match="does not open"):
        SealedStore(directory, key_material=KEY)


def test_an_older_manifest_put_back_refuses_what_came_after(tmp_path: Path):
    """The manifest and its entries put back together (the whole store as it was) is not
    detected; the manifest alone only loses what came after it."""
    directory = tmp_path / "store"
    with SealedStore(directory, key_material=KEY) as store:
        store.put_key(key_record("alice"))
        older = (directory / MANIFEST_NAME).read_bytes()
        store.put_key(key_record("bob"))
    (directory / MANIFEST_NAME).write_bytes(older)
    with SealedStore(directory, key_material=KEY) as store:
        assert [k.name for k in store.load_keys()] == ["alice"]
        assert store.refused == [store._path(b"k", "bob").name]


def test_a_store_from_before_the_manifest_is_adopted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
):
    directory = tmp_path / "store"
    monkeypatch.setattr(_crypto, "VERSION", 1)  # entries as the store wrote them before
    with SealedStore(directory, key_material=KEY) as store:
        store.put_key(key_record())
        store.put_model(model(b"old", "id-a"))
    (directory / MANIFEST_NAME).unlink()  # it had none
    monkeypatch.setattr(_crypto, "VERSION", 2)
    with caplog.at_level(logging.INFO), SealedStore(directory, key_material=KEY) as store:
        assert store.load_keys() == [key_record()]
        assert [m.model_id for m in store.load_models()] == ["id-a"]
    assert "a manifest now lists the 2 entries present" in caplog.text
    assert (directory / MANIFEST_NAME).exists()


def test_the_manifest_names_no_entry(tmp_path: Path):
    directory = tmp_path / "store"
    with SealedStore(directory, key_material=KEY) as store:
        store.put_key(
            StoredKey(key_id="k-secret-id", name="tenant-secret", key_hash=bytes(32), created_ns=1)
        )
    data = (directory / MANIFEST_NAME).read_bytes()
    assert b"tenant-secret" not in data and b"k-secret-id" not in data


def test_two_puts_of_one_entry_at_once_leave_the_one_on_disk_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A's write renamed last, after B had listed and written its own: the manifest must list
    A's (before, B's last manifest write listed its own nonce alone, and the entry that both
    puts acknowledged was refused at the next start)."""
    directory = tmp_path / "store"
    real = sealed.write_atomic
    a_writing, b_written = threading.Event(), threading.Event()

    def ordered(path: Path, chunks) -> None:
        entry = path.name != MANIFEST_NAME
        if entry and threading.current_thread().name == "A":
            a_writing.set()
            b_written.wait(0.5)  # B's whole put, when nothing holds it back
        real(path, chunks)
        if entry and threading.current_thread().name == "B":
            b_written.set()

    with SealedStore(directory, key_material=KEY) as store:
        store.put_model(model(b"version one", "id-a"))
        monkeypatch.setattr(sealed, "write_atomic", ordered)
        a = threading.Thread(target=store.put_model, args=(model(b"version A", "id-a"),), name="A")
        b = threading.Thread(target=store.put_model, args=(model(b"version B", "id-a"),), name="B")
        a.start()
        assert a_writing.wait(5)
        b.start()
        a.join(10)
        b.join(10)
    monkeypatch.setattr(sealed, "write_atomic", real)
    with SealedStore(directory, key_material=KEY) as store:
        assert [m.model for m in store.load_models()] in ([b"version A"], [b"version B"])
        assert store.refused == []


def test_a_rebuild_is_marked_for_good(tmp_path: Path):
    """The operator chooses the flags: a start with --store-rebuild-manifest (which accepts a
    revoked key put back) leaves a mark that later starts keep and the server states."""
    directory = tmp_path / "store"
    with SealedStore(directory, key_material=KEY) as store:
        store.put_key(key_record("bob"))
        bob = _file_of(store, "bob")
        store.delete_key("bob")
        assert not store.manifest_rebuilt
    _put_back(directory, bob)
    with SealedStore(directory, key_material=KEY, rebuild_manifest=True) as store:
        assert [k.name for k in store.load_keys()] == ["bob"]
        assert store.manifest_rebuilt
    with SealedStore(directory, key_material=KEY) as store:
        store.put_key(key_record("carol"))
        assert store.manifest_rebuilt
    with SealedStore(directory, key_material=KEY, rebuild_manifest=True) as store:
        assert store.manifest_rebuilt
    with SealedStore(directory, key_material=KEY) as store:
        assert store.manifest_rebuilt


def test_the_admin_keys_a_store_was_served_under_are_kept(tmp_path: Path):
    directory = tmp_path / "store"
    with SealedStore(directory, key_material=KEY) as store:
        assert store.serve_under(b"\x01" * 32) == ()
        assert store.serve_under(b"\x01" * 32) == ("01" * 32,)  # the same: nothing new
        assert store.serve_under(b"\x02" * 32) == ("01" * 32,)
    with SealedStore(directory, key_material=KEY) as store:
        assert store.admin_keys == ("01" * 32, "02" * 32)
    with SealedStore(directory, key_material=KEY, rebuild_manifest=True) as store:
        assert store.admin_keys == ("01" * 32, "02" * 32) and store.manifest_rebuilt


def test_a_second_server_whose_lock_was_removed_cannot_undo_a_revocation(tmp_path: Path):
    """The host removes ``.lock`` while a server runs and starts a second on the directory (the
    lock then guards nothing). The second wrote its own manifest, from before the revocation:
    the revoked key's file put back loaded again, beside models written after the revocation."""
    directory = tmp_path / "store"
    first = SealedStore(directory, key_material=KEY)
    first.put_key(key_record("bob"))
    bob = _file_of(first, "bob")
    (directory / ".lock").unlink()
    second = SealedStore(directory, key_material=KEY)  # the lock was not there to refuse it
    first.delete_key("bob")
    with pytest.raises(OSError, match="not the one this server"):
        second.put_model(model(b"later", "id-later"))
    first.close()
    second.close()
    _put_back(directory, bob)
    with SealedStore(directory, key_material=KEY) as store:
        assert store.load_keys() == [] and list(store.load_models()) == []
    assert not any((directory / name).exists() for name in bob)  # removed as deleted


def test_a_second_server_whose_lock_was_removed_cannot_drop_an_acknowledged_write(
    tmp_path: Path, caplog
):
    """Both servers wrote the manifest from their own view: the second's last write dropped a
    model the first had stored (and acknowledged), refused at the next start."""
    directory = tmp_path / "store"
    first = SealedStore(directory, key_material=KEY)
    (directory / ".lock").unlink()
    second = SealedStore(directory, key_material=KEY)
    first.put_model(model(b"acknowledged", "id-first"))
    with caplog.at_level(logging.ERROR), pytest.raises(OSError):
        second.put_key(key_record("carol"))
    assert "another server process" in caplog.text
    first.put_key(key_record("alice"))  # the first server still writes: the manifest is its own
    first.close()
    second.close()
    with SealedStore(directory, key_material=KEY) as store:
        assert [m.model for m in store.load_models()] == [b"acknowledged"]
        assert [k.name for k in store.load_keys()] == ["alice"] and store.refused == []


def test_a_manifest_write_that_fails_after_its_rename_is_still_the_servers_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The manifest renamed in, then the directory's fsync failed: the file on disk is the one
    this server wrote, and the next write goes ahead."""
    directory = tmp_path / "store"
    real = sealed.write_atomic

    def after_rename(path, chunks):
        real(path, chunks)
        if path.name == MANIFEST_NAME:
            raise OSError(5, "Input/output error")

    with SealedStore(directory, key_material=KEY) as store:
        monkeypatch.setattr(sealed, "write_atomic", after_rename)
        with pytest.raises(OSError, match="Input/output"):
            store.put_key(key_record("alice"))
        monkeypatch.setattr(sealed, "write_atomic", real)
        store.put_key(key_record("bob"))
    with SealedStore(directory, key_material=KEY) as store:
        assert [k.name for k in store.load_keys()] == ["bob"]


@contextlib.contextmanager
def _files_limited_to(size: int) -> Iterator[None]:
    """This process may write no file beyond ``size`` bytes (EFBIG: the disk as good as full;
    Python ignores SIGXFSZ)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_delete_that_failed_is_not_done_by_a_later_write(tmp_path: Path):
    """The manifest could not be written (disk full): the delete failed, and the caller was told
    so. Before, the deletion stayed marked in memory, the next write put it on disk, and the
    model the server went on serving was removed at the next start."""
    directory = tmp_path / "store"
    with SealedStore(directory, key_material=KEY) as store:
        store.put_model(model(b"kept", "id-a"))
        with _files_limited_to(16), pytest.raises(OSError, match="too large"):
            store.delete_model("id-a")
        store.put_model(model(b"later", "id-b"))
    with SealedStore(directory, key_material=KEY) as store:
        assert sorted(m.model_id for m in store.load_models()) == ["id-a", "id-b"]


def test_an_upload_that_failed_leaves_no_entry_listed(tmp_path: Path, caplog):
    """Before, the new entry's write stayed listed in memory though the manifest listing it was
    never written: the next write put it on disk, and every start then warned of an entry
    missing from the disk (as if the host had removed it)."""
    directory = tmp_path / "store"
    with SealedStore(directory, key_material=KEY) as store:
        with _files_limited_to(16), pytest.raises(OSError, match="too large"):
            store.put_model(model(b"not stored", "id-a"))
        store.put_model(model(b"later", "id-b"))
    with caplog.at_level(logging.INFO), SealedStore(directory, key_material=KEY) as store:
        assert [m.model_id for m in store.load_models()] == ["id-b"]
    assert "missing" not in caplog.text and "lists 1 entries" in caplog.text


def test_a_store_whose_manifest_cannot_be_written_at_start_says_so(tmp_path: Path):
    """Before, the start ended with "error: File too large" alone (an OSError), naming neither
    the store nor what was being written."""
    directory = tmp_path / "store"
    with (
        _files_limited_to(16),
        pytest.raises(ConfigurationError, match=r"cannot use store .*: File too large"),
    ):
        SealedStore(directory, key_material=KEY)
    with SealedStore(directory, key_material=KEY) as store:  # its lock was released
        with _files_limited_to(16), pytest.raises(ConfigurationError, match="File too large"):
            store.serve_under(b"\x01" * 32)


@pytest.mark.parametrize("replaced", ["removed", "older", "fifo"])
def test_a_manifest_the_host_replaced_while_serving_is_not_written_over(
    tmp_path: Path, replaced: str
):
    """Removed, an older copy put back, or a FIFO in its place (not waited on): the server's
    writes are refused until it is its own again, and the start then says what it finds."""
    directory = tmp_path / "store"
    path = directory / MANIFEST_NAME
    with SealedStore(directory, key_material=KEY) as store:
        store.put_key(key_record("alice"))
        older = path.read_bytes()
        store.put_key(key_record("bob"))
        ours = path.read_bytes()
        path.unlink()
        if replaced == "older":
            path.write_bytes(older)
        elif replaced == "fifo":
            os.mkfifo(path)
        with pytest.raises(OSError, match="not the one this server wrote"):
            store.put_key(key_record("carol"))
        with pytest.raises(OSError, match="not the one this server wrote"):
            store.delete_key("alice")
        path.unlink(missing_ok=True)
        path.write_bytes(ours)  # its own again
        store.put_key(key_record("dave"))
    with SealedStore(directory, key_material=KEY) as store:
        assert sorted(k.name for k in store.load_keys()) == ["alice", "bob", "dave"]


def test_a_closed_store_writes_nothing(tmp_path: Path):
    """The server closes its store at shutdown while a worker may still be writing (the pool
    does not wait for it), and the lock is released: a server started meanwhile on the
    directory then found the manifest rewritten behind it and refused every write."""
    directory = tmp_path / "store"
    first = SealedStore(directory, key_material=KEY)
    first.put_key(key_record("alice"))
    first.close()
    second = SealedStore(directory, key_material=KEY)  # the lock is free
    with pytest.raises(OSError, match="closed"):
        first.put_key(key_record("bob"))
    with pytest.raises(OSError, match="closed"):
        first.delete_key("alice")
    second.put_key(key_record("carol"))
    second.close()
    with SealedStore(directory, key_material=KEY) as store:
        assert sorted(k.name for k in store.load_keys()) == ["alice", "carol"]


def test_a_manifest_from_before_revoked_keys_were_kept_reads_and_a_mistyped_list_does_not():
    import cbor2

    from blindai.server.store._manifest import Manifest, RevokedKey

    older = {"generation": 3, "entries": {}, "rebuilt": False, "admins": []}
    assert Manifest.from_bytes(cbor2.dumps(older)).revoked == ()
    kept = Manifest(revoked=(RevokedKey(bytes(32), "k_0123456789abcdef", "bob"),))
    assert Manifest.from_bytes(kept.to_bytes()).revoked == kept.revoked
    for wrong in ([[bytes(31), "k_0123456789abcdef", "bob"]], [[bytes(32), 1, "bob"]], {}):
        with pytest.raises(ValueError, match="revoked keys are mistyped"):
            Manifest.from_bytes(cbor2.dumps({**older, "revoked": wrong}))


def _bytes_read() -> int:
    """What this process has read through read calls so far (/proc/self/io's rchar)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_a_manifest_over_its_size_bound_is_refused_unread(tmp_path: Path):
    """The host makes the manifest 64 MiB long behind a real header: the start read and
    decrypted all of it (up to the largest entry, 2 GiB) before refusing it as altered. Its
    size is now bounded by what a manifest of at most MAX_ENTRIES entries takes, and one over
    it is refused unread, naming the store."""
    from blindai.server.store._manifest import MAX_MANIFEST_BYTES

    directory = tmp_path / "store"
    with SealedStore(directory, key_material=KEY) as store:
        store.put_key(key_record())
    path = directory / MANIFEST_NAME
    with path.open("r+b") as f:
        f.truncate(64 << 20)  # sparse: the header stays, the rest reads as zeros
    assert MAX_MANIFEST_BYTES < 64 << 20
    before = _bytes_read()
    with pytest.raises(ConfigurationError, match=f"store {directory}: its manifest") as refused:
        SealedStore(directory, key_material=KEY)
    assert _bytes_read() - before < 1 << 20
    assert "refused unread" in str(refused.value) and str(64 << 20) in str(refused.value)


def test_writes_past_the_entry_cap_are_refused_and_undone(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(sealed, "MAX_ENTRIES", 2)
    with SealedStore(tmp_path / "store", key_material=KEY) as store:
        store.put_key(key_record("alice"))
        store.put_key(key_record("bob"))
        with pytest.raises(OSError, match="the store lists its most entries"):
            store.put_key(key_record("carol"))
        store.put_key(key_record("alice"))  # a listed entry is still written
        assert sorted(k.name for k in store.load_keys()) == ["alice", "bob"]


def test_uploads_and_deletes_in_turn_never_fill_the_manifest(tmp_path: Path, monkeypatch):
    """An entry whose file was removed is no longer listed: before, each deleted entry stayed
    listed until the next start, so that a tenant uploading and deleting in turn filled the
    manifest's MAX_ENTRIES and every upload and key creation failed until a restart. A copy of
    a deleted entry put back is still refused at the next start."""
    monkeypatch.setattr(sealed, "MAX_ENTRIES", 2)
    directory = tmp_path / "store"
    with SealedStore(directory, key_material=KEY) as store:
        store.put_key(key_record("alice"))
        for turn in range(5):
            store.put_key(key_record(f"tenant-{turn}"))
            deleted = _file_of(store, f"tenant-{turn}")
            assert store.delete_key(f"tenant-{turn}")
        store.put_key(key_record("bob"))  # the last delete's removal is in this write
    _put_back(directory, deleted)
    with SealedStore(directory, key_material=KEY) as store:
        assert sorted(k.name for k in store.load_keys()) == ["alice", "bob"]
        assert store.refused == list(deleted)
