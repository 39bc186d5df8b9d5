"""KeyRing: the admin key by its digest, tenant keys by keyed hash, persistence in the store."""

from __future__ import annotations

import errno
import hashlib
import re
from pathlib import Path

import pytest

from blindai.errors import (
    AlreadyExists,
    AuthenticationError,
    ConfigurationError,
    InvalidInput,
    KeyNotFound,
    ServerError,
)
from blindai.server.access import (
    ADMIN,
    ANONYMOUS,
    KEY_PREFIX,
    KeyRing,
    Principal,
    generate_key,
    parse_admin_key_sha256,
)
from blindai.server.store import REVOKED_KEYS_KEPT, SealedStore, StoredKey

ADMIN_KEY = "the admin key chosen by its holder"
ADMIN_SHA = hashlib.sha256(ADMIN_KEY.encode()).digest()
SECRET = bytes(range(32))


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing(admin_key_sha256=ADMIN_SHA, secret=SECRET)


def test_generated_keys():
    keys = {generate_key() for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert re.fullmatch(KEY_PREFIX + r"[A-Za-z0-9_-]{43}", key)


def test_admin_digest_parsing():
    assert parse_admin_key_sha256(ADMIN_SHA.hex().upper() + "\n") == ADMIN_SHA
    for bad in ("", "abc", ADMIN_SHA.hex()[:-1], ADMIN_SHA.hex() + "0", "g" * 64):
        with pytest.raises(ConfigurationError, match="64 hex digits"):
            parse_admin_key_sha256(bad)


def test_open_server_everyone_is_anonymous():
    ring = KeyRing(admin_key_sha256=None, secret=SECRET)
    assert not ring.enabled
    for header in (None, "", "Bearer whatever", f"Bearer {ADMIN_KEY}"):
        assert ring.authenticate(header) is ANONYMOUS


def test_admin_key(ring: KeyRing):
    assert ring.enabled
    token = ADMIN_KEY.replace(" ", "-")
    ring = KeyRing(admin_key_sha256=hashlib.sha256(token.encode()).digest(), secret=SECRET)
    assert ring.authenticate(f"Bearer {token}") == ADMIN
    assert ring.authenticate(f"bearer   {token} ") == ADMIN
    with pytest.raises(AuthenticationError, match="invalid API key"):
        ring.authenticate(f"Bearer {token}x")


@pytest.mark.parametrize("header", [None, ""])
def test_no_key_is_401(ring: KeyRing, header: str | None):
    with pytest.raises(AuthenticationError, match="requires an API key") as info:
        ring.authenticate(header)
    assert info.value.status_code == 401


@pytest.mark.parametrize(
    "header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Bearer a b", "Bearer \x00", "Bearer é"]
)
def test_malformed_header_is_401(ring: KeyRing, header: str):
    with pytest.raises(AuthenticationError, match="must be 'Bearer KEY'"):
        ring.authenticate(header)


def test_oversized_token_is_401_without_hashing(ring: KeyRing):
    with pytest.raises(AuthenticationError, match="must be 'Bearer KEY'"):
        ring.authenticate("Bearer " + "a" * 100_000)


def test_tenant_keys_create_authenticate_revoke(ring: KeyRing):
    alice_info, alice_key = ring.create("alice")
    bob_info, bob_key = ring.create("bob")
    alice = ring.authenticate(f"Bearer {alice_key}")
    bob = ring.authenticate(f"Bearer {bob_key}")
    assert (alice.kind, alice.name, alice.key_id) == ("tenant", "alice", alice_info.key_id)
    assert bob.key_id == bob_info.key_id != alice.key_id
    assert alice.key_id.startswith("k_")
    assert [k.name for k in ring.list()] == ["alice", "bob"]
    assert ring.name_of(alice.key_id) == "alice" and ring.name_of(ADMIN.key_id) == "admin"
    assert ring.revoke("alice") == alice_info
    with pytest.raises(AuthenticationError, match="invalid API key"):
        ring.authenticate(f"Bearer {alice_key}")
    assert ring.authenticate(f"Bearer {bob_key}") == bob
    assert ring.name_of(alice.key_id) is None
    with pytest.raises(KeyNotFound, match="no key named 'alice'"):
        ring.revoke("alice")


def test_a_recreated_name_is_a_new_key(ring: KeyRing):
    first, old_key = ring.create("alice")
    ring.revoke("alice")
    second, new_key = ring.create("alice")
    assert second.key_id != first.key_id and new_key != old_key
    with pytest.raises(AuthenticationError):
        ring.authenticate(f"Bearer {old_key}")


def test_a_revoked_key_is_recognised_for_the_audit_log_only(ring: KeyRing):
    """A revoked key's requests were written ``key: null``, as anyone's garbage: the ring
    now knows a key it revoked by its keyed hash (its name and id, for the audit line of the
    401), and still refuses it."""
    first, old_key = ring.create("alice")
    assert ring.revoked(f"Bearer {old_key}") is None  # valid: not a revoked key
    ring.revoke("alice")
    _, new_key = ring.create("alice")
    with pytest.raises(AuthenticationError, match="invalid API key"):
        ring.authenticate(f"Bearer {old_key}")
    assert ring.revoked(f"Bearer {old_key}") == Principal("tenant", first.key_id, "alice")
    assert ring.revoked(f"Bearer {new_key}") is None
    assert ring.revoked(f"Bearer {generate_key()}") is None
    assert ring.revoked(None) is None and ring.revoked("Basic x") is None
    assert ring.revoked(f"Bearer {ADMIN_KEY}") is None
    open_ring = KeyRing(admin_key_sha256=None, secret=SECRET)
    assert open_ring.revoked(f"Bearer {old_key}") is None


def test_duplicate_names_are_409(ring: KeyRing):
    ring.create("alice")
    with pytest.raises(AlreadyExists) as info:
        ring.create("alice")
    assert info.value.status_code == 409


@pytest.mark.parametrize("name", ["", "-lead", "a b", "a/b", "x" * 65, "é", "admin\n"])
def test_key_names_are_restricted(ring: KeyRing, name: str):
    with pytest.raises(InvalidInput, match="key name"):
        ring.create(name)


def test_no_key_is_named_as_a_key_id(ring: KeyRing):
    """Listings show a revoked key's models with its key id as their owner: a key named like a
    key id (k_ and 16 hex digits) listed its models as a revoked key's."""
    info, _ = ring.create("alice")
    with pytest.raises(InvalidInput, match="key id"):
        ring.create(info.key_id)
    with pytest.raises(InvalidInput, match="key id"):
        ring.create("k_0123456789abcdef")
    assert [k.name for k in ring.list()] == ["alice"]
    ring.create("k_build")  # other names starting k_ are fine


@pytest.mark.parametrize("name", ["admin", "Admin", "ADMIN"])
def test_no_tenant_key_is_named_as_the_admin_key(ring: KeyRing, name: str):
    """The audit log and the listings name the admin key "admin": a tenant key of that name
    wrote audit lines indistinguishable from the admin key's, and owned models listed with the
    admin's name."""
    with pytest.raises(InvalidInput, match="reserved for the admin key"):
        ring.create(name)
    assert ring.list() == []


def test_listings_hold_no_key_material(ring: KeyRing):
    info, key = ring.create("alice")
    text = repr(ring.list()) + repr(info)
    assert key not in text and key[len(KEY_PREFIX) :] not in text


def test_keys_survive_through_the_store(tmp_path: Path):
    with SealedStore(tmp_path / "s", key_material=SECRET) as store:
        ring = KeyRing(admin_key_sha256=ADMIN_SHA, secret=store.api_key_secret, store=store)
        _, alice_key = ring.create("alice")
        _, bob_key = ring.create("bob")
        ring.revoke("bob")
    with SealedStore(tmp_path / "s", key_material=SECRET) as store:
        again = KeyRing(
            admin_key_sha256=ADMIN_SHA, secret=store.api_key_secret, records=store.load_keys()
        )
        assert again.authenticate(f"Bearer {alice_key}").name == "alice"
        with pytest.raises(AuthenticationError):
            again.authenticate(f"Bearer {bob_key}")
        assert [k.name for k in again.list()] == ["alice"]


def test_stored_hashes_are_keyed(ring: KeyRing, tmp_path: Path):
    """A record is the HMAC of the key: neither the key nor its plain SHA-256."""
    with SealedStore(tmp_path / "s", key_material=SECRET) as store:
        keyed = KeyRing(admin_key_sha256=ADMIN_SHA, secret=SECRET, store=store)
        _, key = keyed.create("alice")
        (record,) = store.load_keys()
    assert record.key_hash not in (key.encode(), hashlib.sha256(key.encode()).digest())
    other = KeyRing(admin_key_sha256=ADMIN_SHA, secret=bytes(32), records=[record])
    with pytest.raises(AuthenticationError):
        other.authenticate(f"Bearer {key}")


class FullStore(SealedStore):
    """A real store whose disk is full."""

    def put_key(self, record: StoredKey) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_key_that_cannot_be_stored_does_not_exist(tmp_path: Path):
    with FullStore(tmp_path / "s", key_material=SECRET) as store:
        ring = KeyRing(admin_key_sha256=ADMIN_SHA, secret=SECRET, store=store)
        with pytest.raises(ServerError, match="could not be stored; it was not created"):
            ring.create("alice")
        assert ring.list() == []


def test_a_key_record_the_host_made_unremovable_is_still_revoked(tmp_path: Path, caplog):
    """The host turned the key's entry into a directory: revocation answered an anonymous 500
    and the key stayed valid; now it stops working at once and the error says why."""
    with SealedStore(tmp_path / "s", key_material=SECRET) as store:
        ring = KeyRing(admin_key_sha256=ADMIN_SHA, secret=store.api_key_secret, store=store)
        _, key = ring.create("alice")
        (entry,) = (p for p in store.directory.iterdir() if p.name.startswith("k-"))
        entry.unlink()
        entry.mkdir()
        with pytest.raises(ServerError, match="'alice' is revoked until the server restarts"):
            ring.revoke("alice")
        with pytest.raises(AuthenticationError):
            ring.authenticate(f"Bearer {key}")
        assert ring.list() == []
        assert "a key record could not be removed: IsADirectoryError" in caplog.text
        assert key not in caplog.text


def test_a_key_record_the_host_made_unwritable_is_not_created(tmp_path: Path):
    with SealedStore(tmp_path / "s", key_material=SECRET) as store:
        ring = KeyRing(admin_key_sha256=ADMIN_SHA, secret=store.api_key_secret, store=store)
        ring.create("alice")
        (entry,) = (p for p in store.directory.iterdir() if p.name.startswith("k-"))
        ring.revoke("alice")
        entry.mkdir()  # the name the host saw, made a directory before the name is reused
        with pytest.raises(ServerError, match="it was not created"):
            ring.create("alice")
        assert ring.list() == []


def test_a_revoked_key_is_still_named_after_a_restart(tmp_path: Path):
    """The ring knew a revoked key's keyed hash in memory only: after a restart its 401s were
    audited with no name or id. The store's manifest now keeps the hash, id and name."""
    with SealedStore(tmp_path / "s", key_material=SECRET) as store:
        ring = KeyRing(admin_key_sha256=ADMIN_SHA, secret=store.api_key_secret, store=store)
        bob, bob_key = ring.create("bob")
        ring.revoke("bob")
    with SealedStore(tmp_path / "s", key_material=SECRET) as store:
        again = KeyRing(
            admin_key_sha256=ADMIN_SHA,
            secret=store.api_key_secret,
            store=store,
            records=store.load_keys(),
            revoked=store.revoked_keys,
        )
        assert again.revoked(f"Bearer {bob_key}") == Principal("tenant", bob.key_id, "bob")
        with pytest.raises(AuthenticationError):
            again.authenticate(f"Bearer {bob_key}")
        assert store.load_keys() == []
    raw = b"".join(p.read_bytes() for p in (tmp_path / "s").iterdir() if p.is_file())
    assert bob_key.encode() not in raw and b"bob" not in raw  # sealed: neither key nor name


def test_the_revoked_keys_remembered_are_capped_oldest_forgotten_first(tmp_path: Path):
    with SealedStore(tmp_path / "s", key_material=SECRET) as store:
        ring = KeyRing(admin_key_sha256=ADMIN_SHA, secret=store.api_key_secret, store=store)
        keys = []
        for i in range(REVOKED_KEYS_KEPT + 2):
            keys.append(ring.create(f"k{i}")[1])
            ring.revoke(f"k{i}")
        assert ring.revoked(f"Bearer {keys[1]}") is None  # forgotten in memory too
        assert ring.revoked(f"Bearer {keys[2]}").name == "k2"
    with SealedStore(tmp_path / "s", key_material=SECRET) as store:
        kept = store.revoked_keys
        assert len(kept) == REVOKED_KEYS_KEPT
        assert [k.name for k in kept[:2]] == ["k2", "k3"] and kept[-1].name == f"k{len(keys) - 1}"
