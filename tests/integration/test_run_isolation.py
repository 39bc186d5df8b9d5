"""``--run-isolation process`` on a real server: a request that crashes onnxruntime fails alone,
a kernel that runs past the run timeout is stopped, and no model host outlives the server.

The crashing model is a GRU over a ``Slice`` the request sizes (``attacks.empty_unsafe``),
admitted with ``--no-empty-kernel-proofs``: a cut of 0 ends onnxruntime 1.32's process
(SIGABRT). Without isolation that process is the server's (shown last)."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import cbor2
import numpy as np
import pytest
from onnx import TensorProto

import blindai
from blindai.errors import InferenceFailed, InferenceTimeout, NetworkError, PermissionDenied
from blindai.protocol.apikeys import generate_key
from tests import attacks
from tests._procs import children
from tests._server import ServerProcess, connect, start_server
from tests.models import identity

ISOLATED = ("--run-isolation", "process", "--no-empty-kernel-proofs", "--intra-op-threads", "1")
GRU = attacks.empty_unsafe("GRU", made="slice")
HOSTILE = attacks.empty_unsafe_feeds("GRU", made="slice", empty=True)
FINE = attacks.empty_unsafe_feeds("GRU", made="slice")
T = TypeVar("T")


@pytest.fixture(scope="module")
def isolated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("isolated"), *ISOLATED, "--run-timeout", "1")
    yield server
    server.stop()


def _hosts(pid: int, module: bytes = b"_model_host_worker") -> set[int]:
    """The model hosts the process ``pid`` started; with ``module``, its children running that
    module (``b"_compile_worker"``: the compile checks)."""
    return children(pid, running=module)


def _gone(pids: set[int], within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        alive = set()
        for pid in pids:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            try:  # a zombie (its parent not reaping it) counts as gone
                if (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) == "Z":
                    continue
            except OSError:
                continue
            alive.add(pid)
        if not alive:
            return True
        time.sleep(0.05)
    return False


class _Probe:
    """Another client running another model in a loop, checking every answer."""

    def __init__(self, server: ServerProcess, model_id: str) -> None:
        self.server, self.model_id = server, model_id
        self.calls = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(connect(server),))

    def _loop(self, conn) -> None:  # type: ignore[no-untyped-def]
        try:
            with conn:
                while not self._stop.is_set():
                    x = np.full((2, 3), self.calls, np.float32)
                    out = conn.predict(self.model_id, {"x": x})
                    assert np.array_equal(out.output[0], x)
                    self.calls += 1
        except BaseException as exc:
            self.errors.append(exc)

    def __enter__(self) -> _Probe:
        self._thread.start()
        deadline = time.monotonic() + 30
        while self.calls == 0 and not self.errors and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def test_a_request_that_crashes_onnxruntime_fails_alone(isolated: ServerProcess) -> None:
    """Tenant A's request ends its model's process: A gets 422 naming the signal, another
    client's runs on another model are answered throughout, the server's process is the same,
    and A's model answers a valid request afterwards (its host started again)."""
    pid = isolated.process.pid
    with connect(isolated) as a, connect(isolated) as b:
        crasher = a.upload_model(GRU).model_id
        other = b.upload_model(identity(TensorProto.FLOAT)).model_id
        with _Probe(isolated, other) as probe:
            served = probe.calls
            for _ in range(2):
                with pytest.raises(InferenceFailed) as crashed:
                    a.predict(crasher, HOSTILE)
                assert crashed.value.status_code == 422
                assert "onnxruntime ended the model's process during this run (SIGABRT)" in (
                    crashed.value.message
                )
                out = _once_started_again(lambda: a.predict(crasher, FINE))
                assert np.asarray(out.output[0]).shape == (3, 1, 1, 2)
            time.sleep(0.2)
            assert probe.calls > served
        assert probe.errors == []
    assert isolated.process.poll() is None and isolated.process.pid == pid
    log = isolated.log()
    assert "can end its own model's process (--run-isolation process)" in log
    assert "model host: a model's process ended during a run (SIGABRT)" in log
    assert "Traceback" not in log


def _once_started_again(call: Callable[[], T], within: float = 30.0) -> T:
    """``call()``'s answer once the model's host, started again in the background after a
    crash, runs. A request sent meanwhile waits for that start within its run timeout (1 s
    here), which a start can exceed on a busy machine: a 504 then, and the request is sent
    again; any other error is raised."""
    deadline = time.monotonic() + within
    while True:
        try:
            return call()
        except InferenceTimeout:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _cpu_seconds(pid: int) -> dict[int, float]:
    """CPU time (user and system) of the process ``pid`` and of each of its model hosts."""
    took = {}
    for each in {pid} | _hosts(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        took[each] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return took


def test_a_kernel_past_the_run_timeout_is_stopped(isolated: ServerProcess) -> None:
    """One MatMul of about 5 s: onnxruntime checks ``terminate`` only between kernels, so in
    the server's process the client got its 504 but the kernel ran on to its end, a core and a
    worker busy for seconds. Here its host is killed: after the 504, about when the 1 s run
    timeout passed, nothing of the server uses a core; the model answers the next request."""
    pid = isolated.process.pid
    with connect(isolated) as conn:
        model_id = conn.upload_model(attacks.long_kernel(), optimize=False).model_id
        started = time.monotonic()
        with pytest.raises(InferenceTimeout) as stopped:
            conn.predict(model_id, {"n": np.array([6000], np.int64)})
        took = time.monotonic() - started
        before = _cpu_seconds(pid)
        time.sleep(1.5)
        after = _cpu_seconds(pid)
        assert stopped.value.status_code == 504
        assert took < 2.5, took
        busy = sum(after[p] - before[p] for p in before.keys() & after.keys())
        assert busy < 0.5, busy  # the kernel alone would use 1.5 s of CPU in this time
        out = conn.predict(model_id, {"n": np.array([3], np.int64)})
        assert float(out.output[0]) == 27.0


def test_a_batching_model_runs_through_its_host(isolated: ServerProcess) -> None:
    """The batching probe and queue use the host's predict like the session's."""
    with connect(isolated) as conn:
        # its own bytes: identical ones uploaded before would share their session, unbatched
        model = identity(TensorProto.FLOAT, [None, 5])
        model_id = conn.upload_model(model, max_batch_size=4).model_id
        results: list[object] = []

        def call(c, k: int) -> None:  # type: ignore[no-untyped-def]
            try:
                with c:
                    x = np.full((1, 5), k, np.float32)
                    results.append(bool(np.array_equal(c.predict(model_id, {"x": x}).output[0], x)))
            except Exception as exc:
                results.append(exc)

        # connected here: warnings filters (connect silences one) are not thread-safe
        threads = [threading.Thread(target=call, args=(connect(isolated), k)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [True] * 6


def test_a_batch_one_member_of_which_crashes_onnxruntime(tmp_path: Path) -> None:
    """Six requests of one key queued together into one batch of a model that crashes when
    any row of a run starts with 7 (``attacks.batched_gru_crash``): the batch's run crashes the
    host, its members are rerun alone; the one with 7 crashes it again (422), each other member
    gets its own row back. Two crashes are logged: the batch's, then the member's."""
    server = start_server(tmp_path, *ISOLATED, "--run-timeout", "20")
    try:
        with connect(server) as conn:
            model_id = conn.upload_model(
                attacks.batched_gru_crash(), max_batch_size=8, max_queue_delay_us=400_000
            ).model_id
            results: dict[int, object] = {}

            def call(c, k: int) -> None:  # type: ignore[no-untyped-def]
                x = np.full((1, 3), 7.0 if k == 0 else k, np.float32)
                try:
                    with c:
                        out = np.asarray(c.predict(model_id, {"x": x}).output[0])
                        results[k] = bool(np.array_equal(out, x))
                except Exception as exc:
                    results[k] = exc

            clients = [connect(server) for _ in range(6)]
            threads = [threading.Thread(target=call, args=(clients[k], k)) for k in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        crashed = results.pop(0)
        assert isinstance(crashed, InferenceFailed) and crashed.status_code == 422
        assert "(SIGABRT)" in crashed.message
        assert results == dict.fromkeys(range(1, 6), True)
        log = server.log()
        assert log.count("model host: a model's process ended during a run (SIGABRT)") == 2
        assert "Traceback" not in log
    finally:
        server.stop()


def test_a_tenant_that_crashes_a_public_model_is_refused_and_the_others_are_served(
    tmp_path: Path,
) -> None:
    """Bob's requests crash alice's public model: the model-wide limit (5 within 60 s) let
    one tenant keep it stopped for every key with 5 requests a minute. Each crash is charged to
    bob's key: after 2, his runs of it are refused (403) and alice's are answered all along."""
    admin_key = generate_key()
    server = start_server(
        tmp_path, *ISOLATED, "--admin-key-sha256", hashlib.sha256(admin_key.encode()).hexdigest()
    )

    def as_key(key: str) -> blindai.Connection:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", blindai.SimulationModeWarning)
            return blindai.connect(server.host, simulation_mode=True, api_key=key, **server.ports)

    try:
        with as_key(admin_key) as admin:
            alice_key, bob_key = (admin.create_key(n).key for n in ("alice", "bob"))
        with as_key(alice_key) as alice, as_key(bob_key) as bob:
            model = alice.upload_model(GRU, model_name="shared", public=True).model_id
            for _ in range(2):
                with pytest.raises(InferenceFailed, match="SIGABRT") as crashed:
                    bob.run_model(model, input_tensors=HOSTILE)
                assert crashed.value.status_code == 422
                out = alice.run_model(model, input_tensors=FINE).output[0].as_numpy()
                assert out.shape == (3, 1, 1, 2)
            for feeds in (HOSTILE, FINE):
                with pytest.raises(PermissionDenied, match="refused for") as refused:
                    bob.run_model(model, input_tensors=feeds)
                assert refused.value.status_code == 403
            for _ in range(3):
                out = alice.run_model(model, input_tensors=FINE).output[0].as_numpy()
                assert out.shape == (3, 1, 1, 2)
        log = server.log()
        assert log.count("model host: a model's process ended during a run (SIGABRT)") == 2
        assert "its runs of that model are refused for now" in log
    finally:
        server.stop()


def test_deleting_a_model_stops_its_host(isolated: ServerProcess) -> None:
    """The upload's host is the spare started before it (the next spare is started then): the
    delete stops that host, and the server keeps one spare."""
    pid = isolated.process.pid
    with connect(isolated) as conn:
        before = _hosts(pid)
        model_id = conn.upload_model(identity(TensorProto.FLOAT, [7, 3])).model_id
        during = _hosts(pid)
        assert len(during) == len(before) + 1
        conn.delete_model(model_id)
    deadline = time.monotonic() + 10
    while len(after := _hosts(pid)) > len(before) and time.monotonic() < deadline:
        time.sleep(0.05)
    (host,) = during - after
    assert _gone({host}) and after <= during


def test_without_spare_processes_no_child_waits_idle(tmp_path: Path) -> None:
    """``--no-spare-processes``: the server starts no compile child and no model host ahead
    (with them: one of each, tested above); an upload forks its own of each, the model runs,
    and once it is deleted no child of the server is left."""
    server = start_server(tmp_path, *ISOLATED, "--no-spare-processes")
    try:
        pid = server.process.pid
        time.sleep(0.5)  # a spare would have been started with the server
        assert _hosts(pid) == set() and _hosts(pid, b"_compile_worker") == set()
        with connect(server) as conn:
            model_id = conn.upload_model(identity(TensorProto.FLOAT, [2, 3])).model_id
            (host,) = _hosts(pid)  # the model's own, no spare beside it
            x = np.arange(6, dtype=np.float32).reshape(2, 3)
            assert np.array_equal(
                conn.run_model(model_id, input_tensors=[x]).output[0].as_numpy(), x
            )
            assert _hosts(pid, b"_compile_worker") == set()
            conn.delete_model(model_id)
        assert _gone({host}) and _hosts(pid) == set()
    finally:
        server.stop()


def _cut(server: ServerProcess, body: bytes, sent: int) -> None:
    """Send an upload's head and the first ``sent`` bytes of its body, then leave."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection((server.host, server.management_port), timeout=30)
    with ctx.wrap_socket(raw) as sock:
        head = f"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
        sock.sendall(head.encode() + body[:sent])
        time.sleep(0.5)  # the server has read what came


def test_an_upload_cut_mid_body_starts_no_host(isolated: ServerProcess) -> None:
    """A client that leaves inside its upload's body: the model's bytes go (the file closed),
    no check, no compile and no host is started for it, and the server serves the next one."""
    pid = isolated.process.pid
    before = _hosts(pid)
    model = identity(TensorProto.FLOAT, [5, 3])
    body = cbor2.dumps({"model": model, "length": len(model), "model_name": "cut"})
    pattern = re.compile(r"POST /upload (\d+) ")
    earlier = len(pattern.findall(isolated.log()))
    _cut(isolated, body, len(body) // 2)
    deadline = time.monotonic() + 30
    while len(pattern.findall(isolated.log())) == earlier and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pattern.findall(isolated.log())[earlier:] == ["499"], isolated.log()[-2000:]
    assert _hosts(pid) == before
    with connect(isolated) as conn:
        assert "cut" not in [m.name for m in conn.list_models()]
        model_id = conn.upload_model(model, model_name="kept").model_id
        x = np.ones((5, 3), np.float32)
        assert np.array_equal(conn.predict(model_id, {"x": x}).output[0], x)
        conn.delete_model(model_id)


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_no_model_host_outlives_the_server(tmp_path: Path, how: str) -> None:
    """Stopped (SIGTERM), the server stops its hosts and its spare; killed (SIGKILL), each
    host, and the spare, sees its socket end and exits."""
    server = start_server(tmp_path, *ISOLATED)
    try:
        (spare,) = _hosts(server.process.pid)  # started with the server, before any upload
        with connect(server) as conn:
            for k in range(2):
                model_id = conn.upload_model(identity(TensorProto.FLOAT, [k + 1, 3])).model_id
                conn.predict(model_id, {"x": np.ones((k + 1, 3), np.float32)})
        hosts = _hosts(server.process.pid)
        assert len(hosts) == 3 and spare in hosts  # the first upload's host was that spare
        if how == "kill":
            server.process.send_signal(signal.SIGKILL)
            server.process.wait(10)
        else:
            server.stop()
            assert server.process.returncode == 0
        assert _gone(hosts)
    finally:
        server.stop()


def test_without_isolation_the_crash_ends_the_server(tmp_path: Path) -> None:
    """What the mode is for: the same request on a server without it ends the server's
    process, every tenant's connections with it."""
    server = start_server(tmp_path, "--no-empty-kernel-proofs")
    try:
        with connect(server) as conn:
            model_id = conn.upload_model(GRU).model_id
            with pytest.raises(NetworkError):
                conn.predict(model_id, HOSTILE)
        assert server.process.wait(10) == -signal.SIGABRT
    finally:
        server.stop()
