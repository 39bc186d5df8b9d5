"""SealedStore on a real directory: round trips, nothing in clear, tampering, crashes mid-write."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest

from blindai.errors import ConfigurationError
from blindai.server.store import SealedStore, StoredKey, StoredModel
from blindai.server.store._crypto import CHUNK, HEADER_SIZE
from blindai.server.store._files import TEMP_PREFIX, write_atomic
from blindai.server.store._manifest import MANIFEST_NAME

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
NAME = "quarterly-fraud-model"
KEY_NAME = "tenant-alice"


def model(payload: bytes, model_id: str, **kw) -> StoredModel:
    fields = dict(
        model_id=model_id,
        name=NAME,
        owner="k0123",
        public=False,
        hash=hashlib.sha256(payload).digest(),
        uploaded_ns=1_700_000_000_000_000_000,
        optimize=True,
        model=payload,
    )
    fields.update(kw)
    return StoredModel(**fields)


def key_record(name: str = KEY_NAME) -> StoredKey:
    return StoredKey(key_id="k0123", name=name, key_hash=bytes(32), created_ns=7)


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(directory: Path):
    s = SealedStore(directory, key_material=KEY)
    yield s
    s.close()


def reopen(store: SealedStore, key: bytes = KEY) -> SealedStore:
    store.close()
    return SealedStore(store.directory, key_material=key)


def entry_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.endswith(".sealed"))


def test_models_and_keys_survive_a_reopen(store: SealedStore):
    big = os.urandom(3 * CHUNK + 17)  # streamed over several chunks
    a, b = model(b"model a bytes", "id-a"), model(big, "id-b", name=None, owner=None, public=True)
    store.put_model(a)
    store.put_model(b)
    store.put_key(key_record())
    again = reopen(store)
    try:
        assert sorted(again.load_models(), key=lambda m: m.model_id) == [a, b]
        assert next(m for m in again.load_models() if m.model_id == "id-b").model == big
        assert again.load_keys() == [key_record()]
        assert again.refused == []
    finally:
        again.close()


def test_nothing_is_on_disk_in_clear(store: SealedStore, directory: Path):
    payload = b"SECRET-WEIGHTS-" * 1000
    store.put_model(model(payload, "model-id-42"))
    store.put_key(key_record())
    for path in directory.iterdir():
        data = path.read_bytes()
        for clear in (b"SECRET-WEIGHTS", NAME.encode(), b"model-id-42", KEY_NAME.encode()):
            assert clear not in data, (path.name, clear)
            assert clear.decode() not in path.name
        assert path.stat().st_mode & 0o077 == 0, path.name
    assert directory.stat().st_mode & 0o077 == 0


def test_deletes_are_durable_and_idempotent(store: SealedStore):
    store.put_model(model(b"a", "id-a"))
    store.put_model(model(b"b", "id-b"))
    store.put_key(key_record("one"))
    store.put_key(key_record("two"))
    assert store.delete_model("id-a") is True
    assert store.delete_model("id-a") is False
    assert store.delete_key("one") is True
    assert store.delete_key("nobody") is False
    again = reopen(store)
    try:
        assert [m.model_id for m in again.load_models()] == ["id-b"]
        assert [k.name for k in again.load_keys()] == ["two"]
    finally:
        again.close()


@pytest.mark.parametrize("where", ["magic", "version", "kind", "nonce", "ciphertext", "tag"])
def test_a_flipped_byte_refuses_that_entry_only(
    store: SealedStore, directory: Path, where: str, caplog: pytest.LogCaptureFixture
):
    for i in range(3):
        store.put_model(model(f"model {i}".encode(), f"id-{i}"))
    victim = entry_files(directory)[1]
    data = bytearray(victim.read_bytes())
    offset = {"magic": 0, "version": 4, "kind": 5, "nonce": 6, "ciphertext": HEADER_SIZE + 3}
    data[offset.get(where, len(data) - 1)] ^= 0x01
    victim.write_bytes(bytes(data))
    again = reopen(store)
    try:
        with caplog.at_level(logging.ERROR, logger="blindai.server.store"):
            loaded = list(again.load_models())
        assert len(loaded) == 2
        assert again.refused == [victim.name]
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and victim.name in lines[0]
    finally:
        again.close()


def test_an_entry_copied_to_another_name_is_refused(store: SealedStore, directory: Path):
    store.put_model(model(b"a", "id-a"))
    store.put_model(model(b"b", "id-b"))
    first, second = entry_files(directory)
    second.write_bytes(first.read_bytes())  # the operator swaps in another entry
    again = reopen(store)
    try:
        loaded = list(again.load_models())
        assert len(loaded) == 1
        assert again.refused == [second.name]
    finally:
        again.close()


def test_a_key_record_renamed_as_a_model_is_refused(store: SealedStore, directory: Path):
    store.put_key(key_record())
    (record,) = entry_files(directory)
    record.rename(directory / ("m" + record.name[1:]))
    again = reopen(store)
    try:
        assert list(again.load_models()) == []
        assert again.load_keys() == []
        assert again.refused == ["m" + record.name[1:]]
    finally:
        again.close()


def test_another_key_opens_nothing(store: SealedStore, directory: Path):
    """A store sealed with another key (another build, another platform) does not open: its
    manifest does not authenticate. The directory is released, and its own key opens it."""
    store.put_model(model(b"a", "id-a"))
    store.put_key(key_record())
    store.close()
    with pytest.raises(ConfigurationError, match="sealed with another key"):
        SealedStore(directory, key_material=OTHER_KEY)
    with SealedStore(directory, key_material=KEY) as again:
        assert [m.model_id for m in again.load_models()] == ["id-a"]
        assert again.load_keys() == [key_record()] and again.refused == []
    # its entries alone, in a directory of their own: refused one by one
    (directory / MANIFEST_NAME).unlink()
    for path in entry_files(directory):
        path.rename(directory.parent / path.name)
    with SealedStore(directory, key_material=OTHER_KEY) as other:
        for path in entry_files(directory.parent):
            path.rename(directory / path.name)
        assert list(other.load_models()) == [] and other.load_keys() == []
        assert len(other.refused) == 2


def assert_only_refused(store: SealedStore, name: str) -> None:
    """Opened again, ``store`` loads no model and refuses exactly the entry ``name``."""
    again = reopen(store)
    try:
        assert list(again.load_models()) == []
        assert again.refused == [name]
    finally:
        again.close()


@pytest.mark.parametrize("keep", [0, 5, HEADER_SIZE + 4, -1])
def test_truncated_entries_are_refused(store: SealedStore, directory: Path, keep: int):
    store.put_model(model(b"model bytes " * 10, "id-a"))
    (path,) = entry_files(directory)
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    assert_only_refused(store, path.name)


def test_an_entry_over_the_size_limit_is_refused_unread(directory: Path):
    with SealedStore(directory, key_material=KEY) as big:
        big.put_model(model(bytes(100_000), "id-big"))
        big.put_model(model(bytes(10), "id-small"))
    with SealedStore(directory, key_material=KEY, max_entry_bytes=1000) as small:
        assert [m.model_id for m in small.load_models()] == ["id-small"]
        assert len(small.refused) == 1


def test_files_that_are_not_entries_are_left_alone(store: SealedStore, directory: Path):
    (directory / "notes.txt").write_text("operator notes")
    store.put_model(model(b"a", "id-a"))
    again = reopen(store)
    try:
        assert [m.model_id for m in again.load_models()] == ["id-a"]
        assert again.refused == []
    finally:
        again.close()


def test_a_write_that_fails_midway_leaves_the_old_entry(store: SealedStore, directory: Path):
    store.put_model(model(b"version one", "id-a"))
    (path,) = entry_files(directory)
    before = path.read_bytes()

    def failing():
        yield b"partial"
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_atomic(path, failing())
    assert path.read_bytes() == before
    assert not any(p.name.startswith(TEMP_PREFIX) for p in directory.iterdir())


def test_leftovers_of_a_crashed_write_are_removed_and_never_loaded(directory: Path):
    with SealedStore(directory, key_material=KEY) as store:
        store.put_model(model(b"a", "id-a"))
        (path,) = entry_files(directory)
    # a crash after the temporary file was written, before the rename
    (directory / f"{TEMP_PREFIX}deadbeef").write_bytes(path.read_bytes())
    with SealedStore(directory, key_material=KEY) as store:
        assert not any(p.name.startswith(TEMP_PREFIX) for p in directory.iterdir())
        assert [m.model_id for m in store.load_models()] == ["id-a"]


def test_one_server_per_directory(store: SealedStore, directory: Path):
    with pytest.raises(ConfigurationError, match="in use by another server"):
        SealedStore(directory, key_material=KEY)
    store.close()
    SealedStore(directory, key_material=KEY).close()  # released with the first


def test_an_unusable_directory_is_a_configuration_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigurationError, match="cannot use store"):
        SealedStore(blocker / "store", key_material=KEY)


def test_short_key_material_is_refused(directory: Path):
    with pytest.raises(ValueError, match="at least 16 bytes"):
        SealedStore(directory, key_material=bytes(15))


def test_api_key_secret_depends_on_the_key_only(directory: Path, tmp_path: Path):
    with SealedStore(directory, key_material=KEY) as a:
        secret = a.api_key_secret
    with SealedStore(tmp_path / "elsewhere", key_material=KEY) as b:
        assert b.api_key_secret == secret
    with SealedStore(tmp_path / "third", key_material=OTHER_KEY) as c:
        assert c.api_key_secret != secret
    assert len(secret) == 32 and secret not in (KEY, OTHER_KEY)


def test_metadata_too_large_to_load_is_refused_before_writing(store: SealedStore):
    with pytest.raises(ValueError, match="metadata over"):
        store.put_model(model(b"a", "id-a", name="n" * 70_000))
    assert entry_files(store.directory) == []


@pytest.mark.parametrize("pipeline", [None, b"", b"\xa1dspec\xa0" * 1000])
def test_a_pipeline_travels_after_the_model(store: SealedStore, pipeline: bytes | None):
    entry = model(os.urandom(CHUNK + 5), "id-p", pipeline=pipeline)
    store.put_model(entry)
    again = reopen(store)
    try:
        (loaded,) = again.load_models()
        assert loaded == entry and loaded.pipeline == pipeline
    finally:
        again.close()


def test_a_store_copied_whole_opens_where_the_key_is(store: SealedStore, tmp_path: Path):
    """Replicas with one --store-key-file: a copy of a stopped replica's whole directory opens
    in another; entry files copied alone into another store are refused there (its manifest
    does not list them: as an older copy put back would be)."""
    entry = model(b"shared bytes", "id-shared")
    store.put_model(entry)
    store.put_key(key_record())
    store.close()
    copy = tmp_path / "replica"
    copy.mkdir()
    for path in [*entry_files(store.directory), store.directory / MANIFEST_NAME]:
        (copy / path.name).write_bytes(path.read_bytes())
    with SealedStore(copy, key_material=KEY) as replica:
        assert list(replica.load_models()) == [entry]
        assert replica.load_keys() == [key_record()]
    with SealedStore(tmp_path / "other", key_material=KEY) as other:
        for path in entry_files(store.directory):
            (other.directory / path.name).write_bytes(path.read_bytes())
        assert list(other.load_models()) == [] and other.load_keys() == []
        assert len(other.refused) == 2


# -- what the host puts in the directory is not followed, waited for, or echoed


def entry_name(digit: str) -> str:
    return f"m-{digit * 32}.sealed"


def test_a_symbolic_link_is_refused_unfollowed(store: SealedStore, directory: Path, tmp_path):
    """An entry name linked to a file elsewhere (here: a valid entry of another store, which
    would authenticate) is refused: the server opens no path outside its directory."""
    store.put_model(model(b"a", "id-a"))
    (real,) = entry_files(directory)
    outside = tmp_path / "outside"
    outside.mkdir()
    moved = outside / real.name
    real.rename(moved)
    real.symlink_to(moved)  # the very entry, through a link
    assert_only_refused(store, real.name)


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_what_is_not_a_regular_file_is_refused_unread(
    store: SealedStore, directory: Path, kind: str, caplog: pytest.LogCaptureFixture
):
    """A FIFO without a writer would block the start for ever; a directory is not an entry."""
    store.put_model(model(b"a", "id-a"))
    odd = directory / entry_name("1")
    os.mkfifo(odd) if kind == "fifo" else odd.mkdir()
    again = reopen(store)
    try:
        with caplog.at_level(logging.ERROR, logger="blindai.server.store"):
            assert [m.model_id for m in again.load_models()] == ["id-a"]
        assert again.refused == [odd.name]
        assert "not a regular file" in caplog.records[0].getMessage()
    finally:
        again.close()


def test_a_file_name_cannot_forge_log_lines(
    store: SealedStore, directory: Path, caplog: pytest.LogCaptureFixture
):
    forged = "m-\nERROR store: every entry refused\x1b[2J"
    (directory / forged).write_bytes(b"x")
    again = reopen(store)
    try:
        with caplog.at_level(logging.ERROR, logger="blindai.server.store"):
            assert list(again.load_models()) == []
        (line,) = [r.getMessage() for r in caplog.records]
        assert "\n" not in line and "\x1b" not in line
        assert ascii(forged) in line
    finally:
        again.close()


def test_a_lock_file_that_is_a_link_is_not_followed(directory: Path, tmp_path: Path):
    directory.mkdir()
    target = tmp_path / "created-elsewhere"
    (directory / ".lock").symlink_to(target)
    with pytest.raises(ConfigurationError, match=r"\.lock is a symbolic link"):
        SealedStore(directory, key_material=KEY)
    assert not target.exists()
