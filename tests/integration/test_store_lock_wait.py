"""A store write that waits on the manifest's lock holds no other request.

Each write of the manifest takes an exclusive ``flock`` on the manifest file, waiting up to
``LOCK_WAIT_S`` (10 s) for another process holding it (a second server the host started on the
directory, or the host itself). A real server with access control and a store; this test's
process holds that lock while the admin creates a key: the creation is refused (500) once the
wait ends, and meanwhile the server answers other clients at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import blindai
from blindai.client._transport import PlainTransport
from blindai.errors import ServerError
from blindai.protocol.apikeys import generate_key
from blindai.server.store._manifest_file import LOCK_WAIT_S
from tests._server import ServerProcess, start_server

ADMIN_KEY = generate_key()
ADMIN_SHA = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path, "--admin-key-sha256", ADMIN_SHA, "--store", str(tmp_path / "s"))
    yield proc
    proc.stop()


def _connect(server: ServerProcess, api_key: str) -> blindai.Connection:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", blindai.SimulationModeWarning)
        return blindai.connect(server.host, simulation_mode=True, api_key=api_key, **server.ports)


def _timed(call: object) -> float:
    start = time.perf_counter()
    call()  # type: ignore[operator]
    return time.perf_counter() - start


def test_a_key_write_waiting_on_the_manifest_lock_holds_no_other_request(
    server: ServerProcess, tmp_path: Path
):
    """Before, KeyRing.create held the key ring's lock through the store's write, and
    authenticating every request takes that lock on the event loop; GET /info (open) read the
    store's admin keys under the manifest's lock, held through the write. So while a key
    creation waited on the manifest's lock, the whole server stood still: an authenticated
    call and GET /info each waited out the 10 s."""
    with _connect(server, ADMIN_KEY) as admin:
        alice_key = admin.create_key("alice").key
        with _connect(server, alice_key) as alice, ThreadPoolExecutor(1) as pool:
            fd = os.open(tmp_path / "s" / "manifest", os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # as another process on the directory would
                started = time.perf_counter()
                creating = pool.submit(admin.create_key, "bob")
                time.sleep(1.0)  # its write waits on the lock
                plain = PlainTransport(server.host, server.unattested_port, 30)
                try:
                    info = _timed(lambda: plain.request("GET", "/info"))
                finally:
                    plain.close()
                listed = _timed(alice.list_models)
                with pytest.raises(ServerError) as refused:
                    creating.result(timeout=60)
                waited = time.perf_counter() - started
            finally:
                os.close(fd)
        assert listed < 2.0 and info < 2.0, (listed, info)
        assert refused.value.status_code == 500
        assert "could not be stored" in refused.value.message
        assert LOCK_WAIT_S - 1 < waited < LOCK_WAIT_S + 10, waited
        assert [k.name for k in admin.list_keys()] == ["alice"]  # bob was not created
        assert admin.create_key("bob").name == "bob"  # the lock released, writes go on
