"""The sealed store behind a real server: restarts keep everything, tampering is refused, and
kill -9 at random moments under a stream of uploads, deletes and key creations loses nothing
acknowledged.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import resource
import stat
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import blindai
from blindai.errors import AuthenticationError, ServerError
from blindai.protocol.apikeys import generate_key
from tests._server import ServerProcess, start_server
from tests.models import add_constant, matmul
from tests.stored import store_colour_classifier

ADMIN_KEY = generate_key()
ADMIN_SHA = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
X = np.array([[1.0, 2.0]], np.float32)


def serve(tmp: Path, store: Path) -> ServerProcess:
    return start_server(tmp, "--admin-key-sha256", ADMIN_SHA, "--store", str(store))


def connect(server: ServerProcess, key: str = ADMIN_KEY) -> blindai.Connection:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", blindai.SimulationModeWarning)
        return blindai.connect(server.host, simulation_mode=True, api_key=key, **server.ports)


def answer(conn: blindai.Connection, model_id: str) -> float:
    out = conn.run_model(model_id, input_tensors={"x": X}).output[0].as_numpy()
    return float(out[0, 0] - X[0, 0])


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def running(tmp_path: Path, store: Path) -> Iterator[list[ServerProcess]]:
    servers: list[ServerProcess] = []
    yield servers
    for s in servers:
        s.stop()


def snapshot(conn: blindai.Connection) -> dict[str, tuple[Any, ...]]:
    return {
        m.model_id: (m.name, m.hash, m.owner, m.public, m.size, m.uploaded)
        for m in conn.list_models()
    }


def test_models_and_keys_survive_a_restart(tmp_path: Path, store: Path, running):
    running.append(serve(tmp_path, store))
    with connect(running[-1]) as admin:
        alice_key = admin.create_key("alice").key
        with connect(running[-1], alice_key) as alice:
            kept = alice.upload_model(add_constant(1), model_name="fraud").model_id
            shared = alice.upload_model(add_constant(2), public=True).model_id
            gone = alice.upload_model(add_constant(3)).model_id
            alice.delete_model(gone)
        own = admin.upload_model(add_constant(4)).model_id
        before = snapshot(admin)
    running[-1].stop()
    assert stat.S_IMODE((store / "simulation-store.key").stat().st_mode) == 0o600
    assert "the store protects nothing" in running[-1].log()

    running.append(serve(tmp_path, store))
    assert "store: 3 models restored" in running[-1].log()
    with connect(running[-1]) as admin:
        assert snapshot(admin) == before
        assert set(before) == {kept, shared, own}
        assert [k.name for k in admin.list_keys()] == ["alice"]
        with connect(running[-1], alice_key) as alice:
            assert answer(alice, kept) == 1 and answer(alice, "fraud") == 1
            assert answer(alice, shared) == 2
            assert own not in {m.model_id for m in alice.list_models()}
        assert answer(admin, own) == 4


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def test_a_tampered_entry_is_refused_and_reported_the_others_load(
    tmp_path: Path, store: Path, running
):
    running.append(serve(tmp_path, store))
    with connect(running[-1]) as admin:
        alice_key = admin.create_key("alice").key
        bob_key = admin.create_key("bob").key
        ids = [admin.upload_model(add_constant(i)).model_id for i in range(3)]
    running[-1].stop()
    before = {p.name for p in store.glob("m-*.sealed")}
    # one model file and one key file, each with a byte flipped
    model_files = sorted(store.glob("m-*.sealed"))
    key_files = sorted(store.glob("k-*.sealed"))
    flip(model_files[1], 40)
    flip(key_files[0], -3)

    running.append(serve(tmp_path, store))
    log = running[-1].log()
    refused = re.findall(r"store: refused (\S+): ", log)
    assert sorted(refused) == sorted([model_files[1].name, key_files[0].name])
    assert "store: 2 models restored, 2 entries refused" in log
    with connect(running[-1]) as admin:
        served = {m.model_id for m in admin.list_models()}
        assert len(served) == 2 and served < set(ids)
        for model_id in served:
            assert answer(admin, model_id) == ids.index(model_id)
        working = 0
        for key in (alice_key, bob_key):
            try:
                with connect(running[-1], key) as tenant:
                    tenant.list_models()
                working += 1
            except AuthenticationError:
                pass
        assert working == 1
    assert before == {p.name for p in store.glob("m-*.sealed")}  # refused, never deleted


def test_a_revoked_key_or_deleted_model_put_back_stays_revoked_and_deleted(
    tmp_path: Path, store: Path, running
):
    """The host keeps copies of a key record and a model, and puts them back after the key was
    revoked and the model deleted. Before the store's manifest, both loaded again after the
    restart: the revoked key worked, the deleted model ran."""
    running.append(serve(tmp_path, store))
    with connect(running[-1]) as admin:
        bob_key = admin.create_key("bob").key
        model_id = admin.upload_model(add_constant(7)).model_id
        kept = {p.name: p.read_bytes() for p in store.glob("*.sealed")}
        admin.revoke_key("bob")
        admin.delete_model(model_id)
    running[-1].stop()
    for name, data in kept.items():  # put back while the server is stopped
        (store / name).write_bytes(data)
    running.append(serve(tmp_path, store))
    assert "store: 0 models restored" in running[-1].log()
    with pytest.raises(AuthenticationError):
        with connect(running[-1], bob_key) as bob:
            bob.list_models()
    running[-1].stop()
    for name, data in kept.items():  # and again, after a start in between
        (store / name).write_bytes(data)
    running.append(serve(tmp_path, store))
    log = running[-1].log()
    assert "store: 0 models restored, 2 entries refused" in log
    assert log.count("the manifest does not list this write") == 2
    with pytest.raises(AuthenticationError):
        with connect(running[-1], bob_key) as bob:
            bob.list_models()
    with connect(running[-1]) as admin:
        assert admin.list_models() == []


def test_a_revoked_key_still_in_use_is_named_in_the_audit_log_after_a_restart(
    tmp_path: Path, store: Path, running
):
    """A revoked key's 401s named it (name and id) only until the server restarted: the ring
    kept its keyed hash in memory, and after a restart its 401s were written ``key: null``.
    The store's manifest now remembers it."""
    audit = tmp_path / "audit.jsonl"
    logged = ("--audit-log", str(audit))
    running.append(
        start_server(tmp_path, "--admin-key-sha256", ADMIN_SHA, "--store", str(store), *logged)
    )
    with connect(running[-1]) as admin:
        bob = admin.create_key("bob")
        admin.revoke_key("bob")
    running[-1].stop()
    running.append(
        start_server(tmp_path, "--admin-key-sha256", ADMIN_SHA, "--store", str(store), *logged)
    )
    with pytest.raises(AuthenticationError):
        with connect(running[-1], bob.key) as conn:
            conn.list_models()
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    refused = [line for line in lines if line["status"] == 401]
    assert refused and all((r["key"], r["key_id"]) == ("bob", bob.key_id) for r in refused)
    assert bob.key not in audit.read_text() and bob.key not in running[-1].log()


def test_what_the_host_puts_in_the_store_neither_stops_nor_blocks_the_start(
    tmp_path: Path, store: Path, running
):
    """Links, a FIFO, a forged name, more models than --max-models: before, a FIFO blocked the
    start for ever, a link was followed, a name with a newline forged a log line, and one
    model too many was deleted from the store and stopped the start."""
    running.append(serve(tmp_path, store))
    with connect(running[-1]) as admin:
        ids = [admin.upload_model(add_constant(i)).model_id for i in range(3)]
    running[-1].stop()
    entries = {p.name for p in store.glob("m-*.sealed")}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret").write_bytes(b"not for the server")
    (store / f"m-{'1' * 32}.sealed").symlink_to(elsewhere / "secret")
    os.mkfifo(store / f"m-{'2' * 32}.sealed")
    (store / "m-\nINFO blindai.server: forged").write_bytes(b"x")

    running.append(
        start_server(
            tmp_path, "--admin-key-sha256", ADMIN_SHA, "--store", str(store), "--max-models", "2"
        )
    )
    log = running[-1].log()
    assert "store: 2 models restored, 3 entries refused" in log
    assert f"store: model {ids[2]} not restored, it stays in the store" in log
    assert "a symbolic link, not an entry" in log and "not a regular file (a FIFO)" in log
    assert "\nINFO blindai.server: forged" not in log
    with connect(running[-1]) as admin:
        assert [m.model_id for m in admin.list_models()] == ids[:2]
        assert answer(admin, ids[1]) == 1
    assert {p.name for p in store.glob("m-*.sealed")} >= entries  # nothing deleted


def test_a_second_server_whose_lock_was_removed_cannot_write_over_the_first(
    tmp_path: Path, store: Path, running
):
    """The host removes ``.lock`` and starts a second server on the directory. Before, the
    second's uploads wrote its own manifest, from before the first revoked a key: the revoked
    key's record put back worked again after a restart."""
    running.append(serve(tmp_path, store))
    with connect(running[0]) as admin:
        bob_key = admin.create_key("bob").key
    kept = {p.name: p.read_bytes() for p in store.glob("k-*.sealed")}
    (store / ".lock").unlink()
    running.append(serve(tmp_path, store))  # nothing refuses it: the lock is gone
    with connect(running[0]) as admin:
        admin.revoke_key("bob")
    with connect(running[1]) as admin, pytest.raises(ServerError, match="could not be stored"):
        admin.upload_model(add_constant(1))
    assert "another server process is writing" in running[1].log()
    for server in running:
        server.stop()
    for name, data in kept.items():
        (store / name).write_bytes(data)
    running.append(serve(tmp_path, store))
    with pytest.raises(AuthenticationError), connect(running[-1], bob_key) as bob:
        bob.list_models()
    with connect(running[-1]) as admin:
        assert admin.list_models() == [] and admin.list_keys() == []


def test_a_model_the_disk_cannot_hold_is_refused_and_the_store_stays_whole(
    tmp_path: Path, store: Path, running
):
    """The disk full during an upload (the server's files limited to a size that holds the
    model's own file but not its sealed entry: EFBIG, as ENOSPC): the client is told it was not
    uploaded, the server goes on storing what fits, and the store opens whole after a restart."""
    running.append(serve(tmp_path, store))
    big = matmul(256, 256)
    with connect(running[0]) as admin:
        kept = admin.upload_model(add_constant(5)).model_id
        limit = len(big) + 64  # the upload's memory file fits; the entry does not
        resource.prlimit(running[0].process.pid, resource.RLIMIT_FSIZE, (limit, limit))
        with pytest.raises(ServerError, match="could not be stored; it was not uploaded"):
            admin.upload_model(big)
        assert [m.model_id for m in admin.list_models()] == [kept]
        assert not [p for p in store.iterdir() if p.name.startswith(".tmp-")]
        later = admin.upload_model(add_constant(6)).model_id
        admin.create_key("carol")
    running[0].stop()
    log = running[0].log()  # why, for the operator (before: "OSError" alone)
    assert re.search(r"store: writing m-[0-9a-f]{32}\.sealed failed: File too large", log)
    running.append(serve(tmp_path, store))
    log = running[-1].log()
    assert "store: 2 models restored" in log and "refused" not in log and "missing" not in log
    with connect(running[-1]) as admin:
        assert {m.model_id for m in admin.list_models()} == {kept, later}
        assert answer(admin, later) == 6 and [k.name for k in admin.list_keys()] == ["carol"]


# -- kill -9


@dataclass
class Acked:
    """What the server acknowledged: models (id -> constant) and keys (name -> key)."""

    models: dict[str, float] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)


@dataclass
class Pending:
    """One operation begun and not acknowledged when the server died."""

    kind: str
    ident: str = ""
    value: Any = None


class Writer(threading.Thread):
    """Uploads, deletes, creates and revokes keys until the server dies."""

    def __init__(
        self, conn: blindai.Connection, acked: Acked, tag: str, seed: int, killed: threading.Event
    ) -> None:
        super().__init__(daemon=True)
        self.conn, self.acked, self.tag = conn, acked, tag
        self.rng = random.Random(seed)
        self.killed = killed
        self.pending: Pending | None = None
        self.failure: BaseException | None = None
        self.own_models: list[str] = []
        """The models this writer may delete (the two writers share none)."""
        self.own_keys: list[str] = []

    def run(self) -> None:
        try:
            with self.conn as conn:
                while True:
                    self.step(conn)
        except BaseException as exc:
            if not self.killed.is_set():
                self.failure = exc

    def step(self, conn: blindai.Connection) -> None:
        op = self.rng.choice(["upload", "upload", "delete", "key", "revoke"])
        if len(self.own_models) > 6:  # a small store: each check runs every model
            op = "delete"
        elif op == "key" and len(self.own_keys) > 2:
            op = "revoke"
        if op == "upload" or (op == "delete" and not self.own_models):
            value = float(self.rng.randrange(1000))
            self.pending = Pending("upload", value=value)
            model_id = conn.upload_model(add_constant(value)).model_id
            self.acked.models[model_id] = value
            self.own_models.append(model_id)
        elif op == "delete":
            model_id = self.own_models.pop(self.rng.randrange(len(self.own_models)))
            self.pending = Pending("delete", model_id)
            conn.delete_model(model_id)
            del self.acked.models[model_id]
        elif op == "key" or not self.own_keys:
            name = f"{self.tag}-{self.rng.getrandbits(32):08x}"
            self.pending = Pending("key", name)
            self.acked.keys[name] = conn.create_key(name).key
            self.own_keys.append(name)
        else:
            name = self.own_keys.pop(self.rng.randrange(len(self.own_keys)))
            self.pending = Pending("revoke", name)
            conn.revoke_key(name)
            del self.acked.keys[name]
        self.pending = None


def check_restart(server: ServerProcess, acked: Acked, pending: list[Pending]) -> None:
    """The restarted server holds exactly what was acknowledged, give or take ``pending``."""
    with connect(server) as admin:
        models = {m.model_id: m for m in admin.list_models()}
        keys = {k.name for k in admin.list_keys()}
        known = set(acked.models)
        maybe_new = [p for p in pending if p.kind == "upload"]
        maybe_gone = {p.ident for p in pending if p.kind == "delete"}
        extra = set(models) - known
        assert len(extra) <= len(maybe_new), (extra, pending)
        assert known - set(models) <= maybe_gone, (known - set(models), pending)
        for model_id, info in models.items():
            value = answer(admin, model_id)
            if model_id in known:
                assert value == acked.models[model_id]
            else:  # an upload that was in flight: one of those values
                assert value in {p.value for p in maybe_new}
                acked.models[model_id] = value
            assert info.hash == hashlib.sha256(add_constant(value)).digest()
        for gone in maybe_gone - set(models):
            acked.models.pop(gone, None)
        maybe_keys = {p.ident for p in pending if p.kind in ("key", "revoke")}
        assert keys ^ set(acked.keys) <= maybe_keys, (keys, set(acked.keys), pending)
        for name in set(acked.keys) - keys:
            del acked.keys[name]
        # a key created in flight is not known to us: it is revoked (its value was never seen)
        for name in keys - set(acked.keys):
            admin.revoke_key(name)
        for key in acked.keys.values():
            with connect(server, key) as tenant:
                tenant.list_models()


def kill_cycles(tmp_path: Path, kills: int, seed: int) -> int:
    """``kills`` times: two writers against the server, SIGKILL at a random moment, restart,
    check. Returns how many operations were in flight at the kills."""
    rng = random.Random(seed)
    store = tmp_path / "store"
    acked = Acked()
    in_flight = 0
    server = serve(tmp_path, store)
    try:
        for cycle in range(kills):
            killed = threading.Event()
            # connected here: the simulation warning filter is not thread-safe
            writers = [
                Writer(connect(server), acked, f"w{i}", seed * 1000 + cycle * 10 + i, killed)
                for i in range(2)
            ]
            for i, w in enumerate(writers):  # what earlier cycles left, split between them
                w.own_models = sorted(acked.models)[i::2]
                w.own_keys = sorted(k for k in acked.keys if k.startswith(w.tag))
            for w in writers:
                w.start()
            killed.wait(rng.uniform(0.05, 0.6))  # the kill point; nothing below waits on time
            killed.set()
            server.process.kill()
            server.process.wait()
            for w in writers:
                w.join(60)
                assert not w.is_alive()
                assert w.failure is None, f"cycle {cycle}: {w.failure!r}"
            server.stop()
            pending = [w.pending for w in writers if w.pending is not None]
            in_flight += len(pending)
            server = serve(tmp_path, store)
            assert not re.search(r"store: refused", server.log()), f"cycle {cycle}"
            check_restart(server, acked, pending)
    finally:
        server.stop()
    return in_flight


def test_kill_9_under_uploads_deletes_and_key_creations(tmp_path: Path):
    assert kill_cycles(tmp_path, kills=8, seed=1) > 0


@pytest.mark.slow
def test_kill_9_200_times(tmp_path: Path):
    assert kill_cycles(tmp_path, kills=200, seed=2) > 100


def test_a_stored_image_pipeline_whose_dtype_is_not_its_models_is_still_restored(
    tmp_path: Path, store: Path, running
):
    """An image step's ``dtype`` was accepted and never read until uploads started checking
    it against the model input (ec48e8c): a model stored before with a dtype its input lacks
    (here uint8 for a float input) was no longer restored after the upgrade ("cannot be
    loaded under this server's settings"), its tenant's model gone from the server. The
    store's own pipelines run as they always did: the input's own type is made."""
    from PIL import Image

    running.append(start_server(tmp_path, "--store", str(store)))  # makes the store and key
    running[-1].stop()
    store_colour_classifier(
        store, "00000000-0000-4000-8000-000000000001", {"resize": [16, 16], "dtype": "uint8"}
    )
    running.append(start_server(tmp_path, "--store", str(store)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", blindai.SimulationModeWarning)
        conn = blindai.connect(running[-1].host, simulation_mode=True, **running[-1].ports)
    with conn:
        assert [m.name for m in conn.list_models()] == ["colours"]
        png = io.BytesIO()
        Image.new("RGB", (20, 20), (10, 240, 20)).save(png, "PNG")
        assert conn.predict("colours", image=png.getvalue()).top.label == "green"


def test_a_stored_image_pipeline_whose_normalisation_overflows_is_skipped_with_the_reason(
    tmp_path: Path, store: Path, running
):
    """Uploads refuse an image step whose scale, mean and std make values the model input's
    type cannot hold (5b9f9f0); one stored before is skipped at restart, as it must be (run,
    it fed the model infinities and answered NaN scores, no error), but the log said only
    "cannot be loaded under this server's settings (InvalidInput)", as for any reason that
    names parts of the model. It now says which check refused it, and that it stays stored."""
    running.append(start_server(tmp_path, "--store", str(store)))  # makes the store and key
    running[-1].stop()
    model_id = "00000000-0000-4000-8000-000000000002"
    # 1e39 is inf in float32
    store_colour_classifier(store, model_id, {"resize": [16, 16], "scale": 1e39})
    running.append(start_server(tmp_path, "--store", str(store)))
    log = running[-1].log()
    assert (
        f"store: model {model_id} is not restored, it stays in the store: its pipeline's image "
        "normalisation (scale, mean, std) makes values its model input's type (float32) cannot "
        "hold"
    ) in log
    assert "store: 0 models restored" in log
    assert "colours" not in log and "labels.txt" not in log
