"""Three replicas behind HAProxy on loopback: one address, one policy (``make test-scale``).

Three ``blindai serve --simulation`` replicas listen on their own loopback addresses with the
default ports (127.0.0.2, .3, .4, as pods in a cluster would), HAProxy balances each port round
robin in TCP mode on 127.0.0.1 (TLS passes through, ending in each replica), and the client
opens one connection per request (``keep_alive=False``) so that connections reach every
replica. The client pins the replicas' measurement (the simulation verifier's
``expected_measurement``): one policy for all. In order:

1. ``blindai upload --replicas`` verifies and fills the three replicas; 300 requests through
   HAProxy land on all three, each answer equal to onnxruntime in this process;
2. a replica is replaced by a server with another measurement: every connection that lands on
   it is refused before a request is sent (PolicyError, counted), the others keep serving;
3. a replica is killed and restarted (a new TLS key, no models, not ready): the client verifies
   its new certificate when a connection lands on it; after ``blindai sync`` it is ready and
   serves again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cbor2
import numpy as np
import onnxruntime as ort
import pytest

import blindai
from blindai.attestation.simulation import UnsafeSimulationVerifier
from blindai.errors import BlindAIError, ModelNotFound, PolicyError
from blindai.server.attesters.simulation import measure_code
from scripts._haproxy import (
    DEFAULT_PORTS,
    Balancer,
    haproxy_binary,
    loopback_hosts,
    start_haproxy,
)
from tests._fakes.server_log import attested_requests
from tests._server import REPO, ServerProcess, spawn_server, wait_ready
from tests.models import matmul

pytestmark = [
    pytest.mark.scale,
    pytest.mark.filterwarnings("ignore::blindai.attestation.simulation.SimulationModeWarning"),
]

REQUESTS = 300
OTHER_MEASUREMENT = "ee" * 32
MODEL = matmul(8, 4, seed=7)


@dataclass
class Cluster:
    """Three replica slots behind one balancer; each slot's current server process."""

    hosts: list[str]
    replicas: list[ServerProcess]
    balancer: Balancer
    workdir: Path

    def start(self, slot: int, *extra: str) -> ServerProcess:
        """(Re)start a replica in ``slot`` on its address with the default ports."""
        server = spawn_server(self.workdir, self.hosts[slot], DEFAULT_PORTS, *extra, grpc_port=0)
        wait_ready(server)
        self.replicas[slot] = server
        return server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if haproxy_binary() is None:
        if os.environ.get("BLINDAI_REQUIRE_SCALE") == "1":
            pytest.fail("haproxy is not installed and BLINDAI_REQUIRE_SCALE=1")
        pytest.skip("haproxy is not installed: make test-scale installs it (apt-get)")
    workdir = tmp_path_factory.mktemp("scale")
    hosts = loopback_hosts(3)
    replicas = [  # gRPC off: HAProxy here balances the three HTTP ports
        spawn_server(workdir, host, DEFAULT_PORTS, "--allow-model-export", grpc_port=0)
        for host in hosts
    ]
    try:
        for server in replicas:
            wait_ready(server)
        balancer = start_haproxy(hosts, workdir=workdir)
    except BaseException:
        for server in replicas:
            server.stop()
        raise
    cluster = Cluster(hosts, replicas, balancer, workdir)
    try:
        yield cluster
    finally:
        balancer.stop()
        for server in cluster.replicas:
            server.stop()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    return subprocess.run(
        [sys.executable, "-m", "blindai", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _certificate(server: ServerProcess) -> bytes:
    url = f"http://{server.host}:{server.unattested_port}/"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return cbor2.loads(resp.read())  # type: ignore[no-any-return]


def _ready(server: ServerProcess) -> int:
    import ssl

    url = f"https://{server.host}:{server.attested_port}/v2/health/ready"
    context = ssl._create_unverified_context()  # a probe, as the kubelet's: nothing trusted
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _runs(server: ServerProcess) -> int:
    return attested_requests(server.log()).count("POST /run")


def _logged(server: ServerProcess, n: int) -> list[str]:
    """The attested requests ``server`` logged, once it logged ``n`` (or after 30 s)."""
    deadline = time.monotonic() + 30
    while len(found := attested_requests(server.log())) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def _served(replicas: list[ServerProcess], before: list[int], total: int) -> list[int]:
    """Requests each replica logged since ``before``, once they add up to ``total`` (a replica
    logs a request just after answering it: the last line may still be on its way)."""
    deadline = time.monotonic() + 30
    while True:
        served = [_runs(s) - b for s, b in zip(replicas, before, strict=True)]
        if sum(served) >= total or time.monotonic() > deadline:
            return served
        time.sleep(0.05)


def _requests(conn: blindai.Connection, n: int, seed: int) -> tuple[int, list[BlindAIError]]:
    """``n`` predictions, each checked against onnxruntime here; (successes, errors)."""
    session = ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    ok, errors = 0, []
    for _ in range(n):
        x = rng.standard_normal((2, 8)).astype(np.float32)
        try:
            got = conn.predict("scale", {"x": x})["y"]
        except BlindAIError as exc:
            errors.append(exc)
            continue
        np.testing.assert_allclose(got, session.run(None, {"x": x})[0], rtol=1e-5, atol=1e-6)
        ok += 1
    return ok, errors


def test_three_replicas_behind_haproxy(cluster: Cluster, tmp_path: Path) -> None:
    model = tmp_path / "scale.onnx"
    model.write_bytes(MODEL)
    flags = ["--simulation", "--unattested-port", "9923"]  # the replicas' (default) ports

    # 1. upload to each replica, then 300 requests through the balancer
    r = _cli("upload", str(model), "--name", "scale", "--replicas", ",".join(cluster.hosts), *flags)
    assert r.returncode == 0, r.stderr
    assert [line.split()[0] for line in r.stdout.splitlines()] == cluster.hosts
    pinned = UnsafeSimulationVerifier(expected_measurement=measure_code())
    conn = blindai.connect(
        cluster.balancer.host,
        **cluster.balancer.connect_ports,
        simulation_mode=True,
        verifier=pinned,
        keep_alive=False,
    )
    with conn:
        before = [_runs(s) for s in cluster.replicas]
        ok, errors = _requests(conn, REQUESTS, seed=1)
        assert (ok, errors) == (REQUESTS, [])
        served = _served(cluster.replicas, before, REQUESTS)
        assert sum(served) == REQUESTS and all(n > 0 for n in served), served
        assert {p.cert_der for p in conn.replicas} == {_certificate(s) for s in cluster.replicas}
        assert conn.attestation_stats.verified == 3 and conn.attestation_stats.refused == 0

        # 2. replica 1 replaced by a server with another measurement
        cluster.replicas[1].stop()
        bad = cluster.start(1, "--simulation-measurement", OTHER_MEASUREMENT)
        stats = conn.attestation_stats
        ok, errors = _requests(conn, 60, seed=2)
        assert ok > 0 and errors, (ok, errors)
        assert all(isinstance(e, PolicyError) for e in errors), errors
        assert all(e.violations[0].actual == OTHER_MEASUREMENT for e in errors)  # type: ignore[attr-defined]
        assert conn.attestation_stats.refused - stats.refused == len(errors)
        # every connection that landed on it asked /attestation and nothing else
        asked = _logged(bad, len(errors))
        assert asked == ["GET /attestation"] * len(errors)
        bad.stop()
        cluster.start(1, "--allow-model-export")  # a good replica again, empty

        # 3. replica 2 killed and restarted: a new key, no models, not ready until synced
        required = tmp_path / "required.txt"
        required.write_text(r.stdout.split("sha256")[1].split()[0] + "\n")
        old_cert = _certificate(cluster.replicas[2])
        cluster.replicas[2].process.kill()
        cluster.replicas[2].process.wait()
        restarted = cluster.start(2, "--allow-model-export", "--require-models", str(required))
        assert _certificate(restarted) != old_cert and _ready(restarted) == 400
        verified = conn.attestation_stats.verified
        ok, errors = _requests(conn, 30, seed=3)  # replicas 1 and 2 hold no model yet
        assert ok > 0 and errors and all(isinstance(e, ModelNotFound) for e in errors)
        assert conn.attestation_stats.verified == verified + 2  # both new certificates
        for slot in (1, 2):
            r = _cli("sync", "--from", cluster.hosts[0], "--to", cluster.hosts[slot], *flags)
            assert r.returncode == 0 and "copied 1, present 0" in r.stdout, (r.stdout, r.stderr)
        assert _ready(restarted) == 200
        before = [_runs(s) for s in cluster.replicas]
        ok, errors = _requests(conn, 60, seed=4)
        assert (ok, errors) == (60, [])
        served = _served(cluster.replicas, before, 60)
        assert sum(served) == 60 and all(n > 0 for n in served), served
        assert _certificate(restarted) in {p.cert_der for p in conn.replicas}
