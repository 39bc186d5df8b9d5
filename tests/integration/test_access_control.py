"""Two tenants and an admin over attested TLS (simulation): keys, ownership, the audit log.

A real ``blindai serve --simulation --admin-key-sha256 H --store DIR --audit-log FILE``; the
admin creates keys for alice and bob; each uploads, runs, lists and deletes through our client,
``BlindAiClient`` and tritonclient; the admin lists and deletes everything and revokes.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import numpy as np
import pytest

import blindai
from blindai.client import BlindAiClient
from blindai.errors import (
    AlreadyExists,
    AuthenticationError,
    ConfigurationError,
    KeyNotFound,
    ModelNotFound,
    PermissionDenied,
    RegistryFull,
)
from blindai.protocol.apikeys import generate_key
from tests._fakes.mitm import UnattestedMitm
from tests._server import ServerProcess, start_server
from tests.integration._oip import attested_pem, scrape
from tests.models import add_constant

ADMIN_KEY = generate_key()
ADMIN_SHA = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
X = np.array([[1.0, 2.0]], np.float32)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("access")


@pytest.fixture(scope="module")
def server(state: Path) -> Iterator[ServerProcess]:
    proc = start_server(
        state,
        "--admin-key-sha256",
        ADMIN_SHA,
        "--store",
        str(state / "store"),
        "--audit-log",
        str(state / "audit.jsonl"),
    )
    yield proc
    proc.stop()


def connect(server: ServerProcess, api_key: str | None, **kw: Any) -> blindai.Connection:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", blindai.SimulationModeWarning)
        return blindai.connect(
            server.host, simulation_mode=True, api_key=api_key, **{**server.ports, **kw}
        )


@pytest.fixture(scope="module")
def admin(server: ServerProcess) -> Iterator[blindai.Connection]:
    with connect(server, ADMIN_KEY) as conn:
        yield conn


@pytest.fixture(scope="module")
def alice_key(admin: blindai.Connection) -> str:
    return admin.create_key(f"alice-{uuid.uuid4().hex[:6]}").key


@pytest.fixture(scope="module")
def bob_key(admin: blindai.Connection) -> str:
    return admin.create_key(f"bob-{uuid.uuid4().hex[:6]}").key


@pytest.fixture
def alice(server: ServerProcess, alice_key: str) -> Iterator[blindai.Connection]:
    with connect(server, alice_key) as conn:
        yield conn


@pytest.fixture
def bob(server: ServerProcess, bob_key: str) -> Iterator[blindai.Connection]:
    with connect(server, bob_key) as conn:
        yield conn


def added(conn: blindai.Connection, model: str) -> float:
    out = conn.run_model(model, input_tensors={"x": X}).output[0].as_numpy()
    return float(out[0, 0] - X[0, 0])


def refusal(call: Any) -> tuple[type, int, str]:
    with pytest.raises(ModelNotFound) as info:
        call()
    return type(info.value), info.value.status_code, info.value.message


def test_without_a_valid_key_every_attested_route_is_401(server: ServerProcess, alice_key: str):
    for key in (None, "bai_" + "x" * 43, alice_key + "x"):
        with connect(server, key) as conn:
            for call in (
                lambda: conn.upload_model(add_constant(0)),
                lambda: conn.run_model("anything", input_tensors={"x": X}),
                lambda: conn.delete_model("anything"),
                conn.list_models,
                conn.list_keys,
            ):
                with pytest.raises(AuthenticationError) as info:
                    call()
                assert info.value.status_code == 401


def test_a_key_that_cannot_travel_in_a_header_is_refused_before_connecting(server):
    with pytest.raises(ConfigurationError, match="api_key"):
        connect(server, "key with spaces\r\nX-Injected: 1")


def test_two_tenants_and_public_models(
    alice: blindai.Connection, bob: blindai.Connection, admin: blindai.Connection
):
    private = alice.upload_model(add_constant(1), model_name="fraud").model_id
    public = alice.upload_model(add_constant(2), model_name="shared", public=True).model_id
    assert added(alice, private) == 1 and added(alice, "fraud") == 1
    assert added(bob, public) == 2 and added(bob, "shared") == 2
    # alice's private model is, for bob, exactly a missing one (run and delete)
    missing = str(uuid.uuid4())
    for theirs, absent in ((private, missing), ("fraud", "fraux")):
        mine = refusal(lambda m=theirs: bob.run_model(m, input_tensors={"x": X}))
        none = refusal(lambda m=absent: bob.run_model(m, input_tensors={"x": X}))
        assert mine[:2] == none[:2] and mine[2].replace(theirs, "?") == none[2].replace(absent, "?")
        mine = refusal(lambda m=theirs: bob.delete_model(m))
        none = refusal(lambda m=absent: bob.delete_model(m))
        assert mine[:2] == none[:2] and mine[2].replace(theirs, "?") == none[2].replace(absent, "?")
    with pytest.raises(PermissionDenied) as info:
        bob.delete_model(public)
    assert info.value.status_code == 403
    assert added(alice, private) == 1  # nothing bob did touched it
    listed = {m.model_id: m for m in bob.list_models()}
    assert public in listed and private not in listed
    assert listed[public].owner is not None and listed[public].public
    seen = {m.model_id: m for m in alice.list_models()}
    assert {private, public} <= set(seen)
    info_private = seen[private]
    assert info_private.name == "fraud" and not info_private.public
    assert info_private.hash == hashlib.sha256(add_constant(1)).digest()
    assert info_private.size == len(add_constant(1))
    assert {private, public} <= {m.model_id for m in admin.list_models()}
    alice.delete_model(public)
    admin.delete_model(private)  # the admin deletes anything
    assert not {private, public} & {m.model_id for m in admin.list_models()}


def test_one_key_cannot_fill_the_server_for_the_others(
    server: ServerProcess, admin: blindai.Connection, bob: blindai.Connection
):
    """--max-models-per-key (16 by default): a tenant's 17th model is refused (507) while
    another tenant still uploads and runs."""
    with connect(server, admin.create_key(f"carol-{uuid.uuid4().hex[:6]}").key) as carol:
        held = []
        try:
            for value in range(16):
                held.append(carol.upload_model(add_constant(100 + value)).model_id)
            with pytest.raises(RegistryFull) as info:
                carol.upload_model(add_constant(200))
            assert info.value.status_code == 507
            assert "--max-models-per-key 16" in info.value.message
            theirs = bob.upload_model(add_constant(300)).model_id
            assert added(bob, theirs) == 300 and added(carol, held[-1]) == 115
            bob.delete_model(theirs)
        finally:
            for model_id in held:
                carol.delete_model(model_id)


def test_run_without_id_runs_the_newest_model_the_caller_may_run(
    alice: blindai.Connection, bob: blindai.Connection
):
    mine = bob.upload_model(add_constant(5)).model_id
    alice.upload_model(add_constant(6))  # private, newer
    assert float(bob.run_model(input_tensors={"x": X}).output[0].as_numpy()[0, 0]) == 6.0
    bob.delete_model(mine)


def test_the_admin_runs_only_its_own_and_public_models(
    alice: blindai.Connection, admin: blindai.Connection
):
    private = alice.upload_model(add_constant(7)).model_id
    with pytest.raises(ModelNotFound):
        admin.run_model(private, input_tensors={"x": X})
    own = admin.upload_model(add_constant(8)).model_id
    assert added(admin, own) == 8
    assert next(m for m in admin.list_models() if m.model_id == own).owner == "admin"
    admin.delete_model(own)
    admin.delete_model(private)


def test_only_the_admin_manages_keys(alice: blindai.Connection, admin: blindai.Connection):
    for call in (lambda: alice.create_key("x"), alice.list_keys, lambda: alice.revoke_key("x")):
        with pytest.raises(PermissionDenied, match="only the admin key"):
            call()
    name = f"carol-{uuid.uuid4().hex[:6]}"
    created = admin.create_key(name)
    assert created.key.startswith("bai_") and created.key not in repr(created)
    with pytest.raises(AlreadyExists):
        admin.create_key(name)
    assert name in {k.name for k in admin.list_keys()}
    admin.revoke_key(name)
    with pytest.raises(KeyNotFound):
        admin.revoke_key(name)


def test_a_revoked_key_stops_working_and_its_models_stay(
    server: ServerProcess, admin: blindai.Connection
):
    name = f"dave-{uuid.uuid4().hex[:6]}"
    key = admin.create_key(name).key
    with connect(server, key) as dave:
        model = dave.upload_model(add_constant(9)).model_id
        admin.revoke_key(name)
        with pytest.raises(AuthenticationError):
            dave.list_models()
    owner = next(m for m in admin.list_models() if m.model_id == model).owner
    assert owner is not None and owner.startswith("k_")  # the revoked key's id
    admin.delete_model(model)


def test_blindai_client_takes_the_key(server: ServerProcess, alice_key: str):
    client = BlindAiClient()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", blindai.SimulationModeWarning)
        client.connect_server(
            server.host,
            simulation=True,
            untrusted_port=server.unattested_port,
            attested_port=server.attested_port,
            model_management_port=server.management_port,
            api_key=alice_key,
        )
    with client:
        uploaded = client.upload_model(add_constant(3), shape=(1, 2))
        assert client.run_model([1.0, 2.0]).output == [4.0, 5.0]
        client.delete_model(uploaded.model_id)
    unkeyed = BlindAiClient()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", blindai.SimulationModeWarning)
        unkeyed.connect_server(
            server.host,
            simulation=True,
            untrusted_port=server.unattested_port,
            attested_port=server.attested_port,
            model_management_port=server.management_port,
        )
    with unkeyed, pytest.raises(AuthenticationError):
        unkeyed.upload_model(add_constant(3))


def test_the_key_never_reaches_the_unattested_port(server: ServerProcess, alice_key: str):
    with UnattestedMitm(server.host, server.unattested_port) as mitm:
        with connect(server, alice_key, unattested_server_port=mitm.port) as conn:
            conn.list_models()
            model = conn.upload_model(add_constant(4)).model_id
            assert added(conn, model) == 4
            conn.delete_model(model)
    # the client verifies each attested connection on itself (GET /attestation, without the
    # key: tests/unit/client/test_peers.py); whatever reaches the unattested port has no key
    seen = "\n".join(mitm.requests)
    assert alice_key not in seen and "authorization" not in seen.lower()


def test_unattested_info_says_access_control_is_on(server: ServerProcess, admin):
    assert admin.server_info["access_control"] is True


def test_metrics_name_public_models_only(
    server: ServerProcess, alice: blindai.Connection, bob: blindai.Connection
):
    """Issue 13: per-model labels carry a model's id only where its owner made it public."""
    name = f"secret-{uuid.uuid4().hex[:6]}"
    private = alice.upload_model(add_constant(3), model_name=name).model_id
    public = alice.upload_model(add_constant(4), model_name=name + "-pub", public=True).model_id
    count = "blindai_model_inference_requests_total"
    private_ok = (count, (("model", "private"), ("outcome", "success")))
    public_ok = (count, (("model", public), ("outcome", "success")))
    before = scrape(server, attested_pem(server), api_key=ADMIN_KEY)
    assert added(alice, private) == 3 and added(bob, public) == 4 and added(alice, public) == 4
    after = scrape(server, attested_pem(server), api_key=ADMIN_KEY)
    assert after[private_ok] == before.get(private_ok, 0) + 1
    assert after[public_ok] == before.get(public_ok, 0) + 2
    duration = ("blindai_model_inference_duration_seconds_count", (("model", public),))
    assert after[duration] == before.get(duration, 0) + 2
    text = str(after)
    assert private not in text and name not in text  # neither its id nor any name
    alice.delete_model(public)
    alice.delete_model(private)
    assert public not in str(
        scrape(server, attested_pem(server), api_key=ADMIN_KEY)
    )  # a deleted model's series go


def test_the_servers_metrics_are_not_a_tenants_to_read(
    server: ServerProcess, alice_key: str, admin: blindai.Connection
):
    """Server-wide counts (every private model's inferences under one label, requests by
    route) told any tenant how busy the others were: a tenant's key now gets 403 on
    /metrics; the admin key (and the loopback --metrics-port) still read them."""
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as info:
        scrape(server, attested_pem(server), api_key=alice_key)
    assert info.value.code == 403
    assert info.value.headers["X-BlindAI-Error"] == "PermissionDenied"
    assert b"admin key" in info.value.read()
    assert scrape(server, attested_pem(server), api_key=ADMIN_KEY)


def _alice_and_bob(proc: ServerProcess) -> tuple[dict[str, str], ssl.SSLContext]:
    """Keys for Alice and Bob on a server with access control, and a TLS context that trusts
    its attested certificate (for requests written by hand)."""
    with connect(proc, ADMIN_KEY) as admin_conn:
        keys = {name: admin_conn.create_key(name).key for name in ("alice", "bob")}
    context = ssl.create_default_context(cadata=attested_pem(proc))
    context.check_hostname = False
    return keys, context


def _held_body(
    proc: ServerProcess, context: ssl.SSLContext, key: str, length: int
) -> tuple[ssl.SSLSocket, bytes]:
    """A /run as ``key`` whose body of ``length`` bytes never comes; the server's first answer,
    if any (b"": it waits for the body)."""
    raw = socket.create_connection((proc.host, proc.attested_port), timeout=30)
    sock = context.wrap_socket(raw)
    sock.sendall(
        b"POST /run HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        b"Content-Length: %d\r\n\r\nxx" % (key.encode(), length)
    )
    sock.settimeout(0.5)
    try:
        return sock, sock.recv(65536)
    except TimeoutError:
        return sock, b""


def test_one_key_cannot_hold_the_whole_body_budget(tmp_path: Path) -> None:
    """A body declares its length first and may come at --body-min-rate: a tenant holding
    slow bodies took the whole --max-body-memory, and every other tenant got 503. One key now
    holds at most half of it (here 2 MiB of 4): Alice's third 1 MiB body is refused, Bob's is
    taken."""
    MiB = 1 << 20
    proc = start_server(
        tmp_path,
        *("--admin-key-sha256", ADMIN_SHA),
        *("--max-request-bytes", str(MiB), "--max-body-memory", str(4 * MiB)),
        *("--max-model-bytes", str(MiB // 2), "--max-pipeline-bytes", str(MiB // 4)),
    )
    try:
        keys, context = _alice_and_bob(proc)

        def held_body(key: str) -> tuple[ssl.SSLSocket, bytes]:
            return _held_body(proc, context, key, MiB)

        held = [held_body(keys["alice"]) for _ in range(2)]
        try:
            assert [answer for _, answer in held] == [b"", b""]  # her share: 2 MiB
            sock, refused = held_body(keys["alice"])
            sock.close()
            assert refused.startswith(b"HTTP/1.1 503 ") and b"this key" in refused
            sock, taken = held_body(keys["bob"])
            held.append((sock, taken))
            assert taken == b""  # the server waits for Bob's body: there was room for it
        finally:
            for sock, _ in held:
                sock.close()
    finally:
        proc.stop()


def test_a_full_body_budget_does_not_tell_a_tenant_what_the_others_hold(tmp_path: Path) -> None:
    """The 503 of a full --max-body-memory said "the server holds N bytes of other requests'
    bodies": any tenant read there, to the byte, what every other key's requests in progress
    held (the /metrics it may not read count less). It now says the budget is full, its size,
    and what the caller's own key holds; Bob, refused while Alice holds 2 MiB and the admin
    1.5 MiB, learns neither figure."""
    MiB = 1 << 20
    proc = start_server(
        tmp_path,
        *("--admin-key-sha256", ADMIN_SHA),
        *("--max-request-bytes", str(MiB), "--max-body-memory", str(4 * MiB)),
        *("--max-model-bytes", str(MiB // 2), "--max-pipeline-bytes", str(MiB // 4)),
    )
    try:
        keys, context = _alice_and_bob(proc)
        others = [
            (keys["alice"], MiB),
            (keys["alice"], MiB),
            (ADMIN_KEY, MiB),
            (ADMIN_KEY, MiB // 2),
        ]
        held = [_held_body(proc, context, key, length) for key, length in others]
        try:
            assert [answer for _, answer in held] == [b""] * 4  # 3.5 MiB of 4 held
            sock, refused = _held_body(proc, context, keys["bob"], MiB)
            sock.close()
            assert refused.startswith(b"HTTP/1.1 503 ") and b"ServerBusy" in refused
            assert b"--max-body-memory" in refused and b"%d" % (4 * MiB) in refused
            for figure in (7 * MiB // 2, 2 * MiB, 3 * MiB // 2):  # all others', Alice's, admin's
                assert b"%d" % figure not in refused, refused
            assert b"this key holds 0 bytes" in refused
        finally:
            for sock, _ in held:
                sock.close()
    finally:
        proc.stop()


def test_the_readiness_probe_does_not_count_the_tenants_models(tmp_path: Path) -> None:
    """With --require-model-count, /v2/health/ready (no key: Kubernetes calls it) answered
    "missing_models": N, the required count less the models loaded: anyone reaching the port
    read how many models the tenants held loaded (the admin key's blindai_models_loaded), and
    saw each upload, unload and delete change it. With access control it says only whether the
    replica is ready; an open server still gives the figure."""
    import http.client

    proc = start_server(
        tmp_path, *("--admin-key-sha256", ADMIN_SHA), *("--require-model-count", "3")
    )
    try:
        keys, context = _alice_and_bob(proc)

        def ready() -> tuple[int, Any]:
            conn = http.client.HTTPSConnection(proc.host, proc.attested_port, context=context)
            try:
                conn.request("GET", "/v2/health/ready")
                reply = conn.getresponse()
                return reply.status, json.loads(reply.read())
            finally:
                conn.close()

        assert ready() == (400, {"ready": False})
        with connect(proc, keys["alice"]) as alice_conn:
            held = [alice_conn.upload_model(add_constant(v)).model_id for v in (1, 2)]
            assert ready() == (400, {"ready": False})  # not "missing_models": 1
            held.append(alice_conn.upload_model(add_constant(3)).model_id)
            assert ready() == (200, {"ready": True})
    finally:
        proc.stop()


def test_a_keys_unread_answers_fill_its_own_share(tmp_path: Path) -> None:
    """Answers a client leaves unread count in the body budget until taken (for up to 17
    minutes at the defaults); they counted for no key, so one tenant asking for 16 MB answers
    it never read filled the whole budget (80 MiB here), and every other tenant got 503. They
    now count in the asking key's share (40 MiB): Alice's fourth request is refused, and Bob's
    16 MiB body still finds room."""
    from tests import attacks

    MiB = 1 << 20
    proc = start_server(
        tmp_path,
        *("--admin-key-sha256", ADMIN_SHA),
        *("--max-request-bytes", str(16 * MiB), "--max-response-bytes", str(16 * MiB)),
        *("--max-model-bytes", str(MiB), "--max-pipeline-bytes", str(MiB)),
        *("--max-body-memory", str(80 * MiB)),
    )
    try:
        keys, context = _alice_and_bob(proc)
        with connect(proc, keys["alice"]) as alice_conn:
            big = alice_conn.upload_model(attacks.constant_of_shape(reduce=False)).model_id
        ask = cbor2.dumps(
            {
                "model_id": big,
                "inputs": [
                    {
                        "info": {"fact": [1], "datum_type": 3, "node_name": None},
                        "bytes_data": np.int64(4_000_000).tobytes(),  # a 16 MB answer
                    }
                ],
            }
        )

        def first_bytes(key: str, head: bytes, wait: float) -> tuple[ssl.SSLSocket, bytes]:
            """Send ``head`` as ``key``; the first bytes the server answers (b"": none yet)."""
            raw = socket.create_connection((proc.host, proc.attested_port), timeout=30)
            sock = context.wrap_socket(raw)
            sock.sendall(head)
            sock.settimeout(wait)
            try:
                return sock, sock.recv(4096)
            except TimeoutError:
                return sock, b""

        def run_head(key: str, length: int) -> bytes:
            return (
                b"POST /run HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n" % (key.encode())
                + b"Content-Length: %d\r\n\r\n" % length
            )

        held = []
        try:
            for _ in range(4):  # each answer left unread but its first bytes
                held.append(first_bytes(keys["alice"], run_head(keys["alice"], len(ask)) + ask, 30))
            answers = [answer for _, answer in held]
            assert all(a.startswith(b"HTTP/1.1 200 ") for a in answers[:3]), answers
            assert answers[3].startswith(b"HTTP/1.1 503 ") and b"this key" in answers[3]
            held.append(first_bytes(keys["bob"], run_head(keys["bob"], 16 * MiB), 0.5))
            assert held[-1][1] == b""  # the server waits for Bob's body: there was room for it
        finally:
            for sock, _ in held:
                sock.close()
    finally:
        proc.stop()


def test_the_audit_log_is_content_free(
    server: ServerProcess, state: Path, alice: blindai.Connection, alice_key: str
):
    model = alice.upload_model(add_constant(11), model_name="very-secret-name").model_id
    added(alice, model)
    with pytest.raises(ModelNotFound):
        alice.run_model("another-secret-name", input_tensors={"x": X})
    alice.delete_model(model)
    wrong = alice_key[:-1] + ("y" if alice_key[-1] != "y" else "z")
    with connect(server, wrong) as stranger, pytest.raises(AuthenticationError):
        stranger.list_models()  # its own 401 (it relied on an earlier test's when run alone)
    text = (state / "audit.jsonl").read_text()
    for secret in ("very-secret-name", "another-secret-name", alice_key, alice_key[4:], wrong):
        assert secret not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert all(
        set(line)
        == {"time", "key", "key_id", "action", "model", "target_key", "status", "duration_ms"}
        for line in lines
    )
    ours = [line for line in lines if line["model"] == model]
    assert [line["action"] for line in ours] == ["upload", "run", "delete"]
    assert all(line["status"] == 200 and line["key"].startswith("alice-") for line in ours)
    assert any(
        line["action"] == "run" and line["status"] == 404 and line["model"] is None
        for line in lines
    )
    assert any(line["status"] == 401 and line["key"] is None for line in lines)


def _audited(state: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (state / "audit.jsonl").read_text().splitlines()]


def test_a_request_cut_at_shutdown_is_audited_with_the_503_its_client_got(tmp_path: Path):
    """At --shutdown-timeout the server answers a request still in progress 503 itself and
    drops the connection; the app, finding its client gone, answered 499 to nobody, and that
    was what the audit log (and the access log and metrics) recorded: "the client left", when
    the server had cut it. The line now holds the 503 the client got."""
    audit = tmp_path / "audit.jsonl"
    proc = start_server(
        tmp_path,
        *("--admin-key-sha256", ADMIN_SHA, "--audit-log", str(audit)),
        *("--shutdown-timeout", "1"),
    )
    try:
        keys, context = _alice_and_bob(proc)
        sock, first = _held_body(proc, context, keys["alice"], 1000)
        assert first == b""
        proc.process.terminate()
        sock.settimeout(15)
        answer = sock.recv(65536)
        sock.close()
        assert proc.process.wait(15) == 0
    finally:
        proc.stop()
    assert answer.startswith(b"HTTP/1.1 503 ")
    runs = [line for line in _audited(tmp_path) if line["action"] == "run"]
    assert [(run["key"], run["status"]) for run in runs] == [("alice", 503)]


@pytest.mark.parametrize(
    "rest",
    [b"zz-not-a-size\r\n", b"1;" + b"e" * (128 << 10)],
    ids=["broken-size-line", "framing-over-its-bound"],
)
def test_a_body_the_connection_refuses_midway_is_audited_with_the_400_its_client_got(
    tmp_path: Path, rest: bytes
):
    """A chunked body whose framing breaks after its first chunk: the connection answers 400
    itself and hangs up, and the app, reading the body, finds its client gone and answered
    499 to nobody; the audit log (and the access log) recorded that 499, not the 400 the
    client got. The line now holds the 400."""
    audit = tmp_path / "audit.jsonl"
    proc = start_server(tmp_path, "--admin-key-sha256", ADMIN_SHA, "--audit-log", str(audit))
    try:
        keys, context = _alice_and_bob(proc)
        raw = socket.create_connection((proc.host, proc.attested_port), timeout=30)
        sock = context.wrap_socket(raw)
        sock.sendall(
            b"POST /run HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n2\r\nxx\r\n" % keys["alice"].encode()
        )
        time.sleep(0.5)  # the app is reading the body
        sock.sendall(rest)
        sock.settimeout(15)
        answer = sock.recv(65536)
        sock.close()
        proc.wait_for_log("attested POST /run")
    finally:
        proc.stop()
    assert answer.startswith(b"HTTP/1.1 400 ")
    runs = [line for line in _audited(tmp_path) if line["action"] == "run"]
    assert [(run["key"], run["status"]) for run in runs] == [("alice", 400)]
    assert "attested POST /run 400" in proc.log()


def test_each_audit_log_outage_is_reported_with_the_lines_it_lost(tmp_path: Path):
    """The audit log piped to a reader that goes away and comes back (a log shipper that
    restarts): a line that cannot be written never fails its request, but only the very first
    failure of the server's life was reported, so a second outage went unseen, and a buffered
    file wrote some lost lines later among newer ones. Each outage is now reported when it
    begins and when it ends, with the exact count of lines it lost (none written late)."""
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    proc = start_server(tmp_path, "--admin-key-sha256", ADMIN_SHA, "--audit-log", str(fifo))

    def piped(fd: int) -> list[dict[str, Any]]:
        time.sleep(0.3)  # the line is written as the answer starts
        return [json.loads(line) for line in os.read(fd, 1 << 16).decode().splitlines()]

    try:
        with connect(proc, ADMIN_KEY) as admin_conn:
            admin_conn.list_keys()
            assert [line["action"] for line in piped(reader)] == ["key-list"]
            for outage in (1, 2):
                os.close(reader)  # the reader goes away: each line now fails (EPIPE)
                for _ in range(outage + 1):
                    admin_conn.list_keys()
                reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
                admin_conn.create_key(f"after-outage-{outage}")
                assert [line["action"] for line in piped(reader)] == ["key-create"]
                proc.wait_for_log(f"written again; {outage + 1} lines were lost")
        log = proc.log()
    finally:
        proc.stop()
        os.close(reader)
    assert log.count("the audit log cannot be written: BrokenPipeError") == 2


def test_the_audit_log_tells_a_revoked_key_from_a_new_key_of_the_same_name(
    server: ServerProcess, state: Path, admin: blindai.Connection
):
    """A revoked key's name is free again: the lines of the old and the new key named "carol"
    said the same ``"key": "carol-..."`` and nothing else, and the key-create and key-revoke
    lines did not say which key was made or revoked. Each line now holds the caller's key id,
    and a key action the id of the key it acted on."""
    name = f"carol-{uuid.uuid4().hex[:6]}"
    models = []
    first = admin.create_key(name)
    with connect(server, first.key) as carol:
        models.append(carol.upload_model(add_constant(1)).model_id)
    assert admin.revoke_key(name).key_id == first.key_id
    second = admin.create_key(name)
    with connect(server, second.key) as carol:
        models.append(carol.upload_model(add_constant(2)).model_id)
    assert first.key_id != second.key_id
    lines = _audited(state)
    uploads = {line["model"]: line for line in lines if line["action"] == "upload"}
    assert [(uploads[m]["key"], uploads[m]["key_id"]) for m in models] == [
        (name, first.key_id),
        (name, second.key_id),
    ]
    acted = [(line["action"], line["target_key"]) for line in lines if line["key_id"] == "admin"]
    assert [a for a in acted if a[1] in (first.key_id, second.key_id)] == [
        ("key-create", first.key_id),
        ("key-revoke", first.key_id),
        ("key-create", second.key_id),
    ]
    assert all(line["target_key"] is None for line in lines if line["action"] == "upload")
    for model in models:
        admin.delete_model(model)


def _answer_to(proc: ServerProcess, port: int, head: bytes) -> bytes:
    """What the server answers ``head`` sent by hand over attested TLS on ``port``."""
    context = ssl.create_default_context(cadata=attested_pem(proc))
    context.check_hostname = False
    with context.wrap_socket(socket.create_connection((proc.host, port), timeout=30)) as sock:
        sock.sendall(head)
        return sock.recv(65536)


def test_a_request_head_refused_unread_is_audited(server: ServerProcess, state: Path):
    """A request whose line or headers were over the limits (431) or that was not HTTP (400)
    was answered by the HTTP layer before any route, so it had no audit line: someone probing
    the attested and management ports left no trace there. Each now has an ``unread`` line
    with the status answered, no key and no model (its headers, the key among them, were not
    read)."""
    before = len(_audited(state))
    big = b"x-probe: " + b"a" * (20 << 10) + b"\r\n"
    many = b"".join(b"x-%d: 1\r\n" % i for i in range(200))
    for port in (server.attested_port, server.management_port):
        heads = (
            b"GET /models HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n",
            b"GET /" + b"a" * (20 << 10) + b" HTTP/1.1\r\n\r\n",
            b"GET /models HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n",
            b"NOT HTTP AT ALL\r\n\r\n",
        )
        answers = [_answer_to(server, port, head).split(b" ", 2)[1] for head in heads]
        assert answers == [b"431", b"431", b"431", b"400"]
    unread = [line for line in _audited(state)[before:] if line["action"] == "unread"]
    assert [line["status"] for line in unread] == [431, 431, 431, 400] * 2
    assert all(
        (line["key"], line["key_id"], line["model"], line["target_key"]) == (None,) * 4
        and line["duration_ms"] >= 0
        for line in unread
    )
    assert len(_audited(state)) - before == len(unread)  # nothing else was written


def test_a_body_whose_framing_is_refused_is_audited_with_the_400_its_client_got(
    server: ServerProcess, state: Path, alice_key: str
):
    """A /run whose chunked body did not parse was answered 400 by the HTTP layer, and the
    route, finding its client gone, answered 499 to nobody: the audit line said that the
    client had left. It now holds the 400 the client got, as a cut holds its 503."""
    before = len(_audited(state))
    head = b"POST /run HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n" % alice_key.encode()
    chunked = b"Transfer-Encoding: chunked\r\n\r\n"
    for body in (b"zz\r\n", b"1;e=" + b"a" * (300 << 10)):  # not hex; framing over its bound
        assert _answer_to(server, server.attested_port, head + chunked + body).startswith(
            b"HTTP/1.1 400 "
        )
    deadline = time.monotonic() + 10
    while len(runs := [x for x in _audited(state)[before:] if x["action"] == "run"]) < 2:
        assert time.monotonic() < deadline, runs  # the route writes its line once it stops
        time.sleep(0.05)
    assert [run["status"] for run in runs] == [400, 400]
    assert all(run["key"].startswith("alice-") for run in runs)


# -- v2 with tritonclient


tritonclient_http = pytest.importorskip("tritonclient.http")


def triton(server: ServerProcess, pem: str) -> Any:
    import gevent.ssl  # type: ignore[import-untyped]

    def factory(cafile: str | None = None) -> ssl.SSLContext:
        del cafile
        context: ssl.SSLContext = gevent.ssl.create_default_context(cadata=pem)
        return context

    return tritonclient_http.InferenceServerClient(
        f"{server.host}:{server.attested_port}",
        ssl=True,
        ssl_context_factory=factory,
        ssl_options={"server_hostname": "blindai-srv"},
    )


def test_tritonclient_passes_the_key_as_a_header(
    server: ServerProcess, alice: blindai.Connection, alice_key: str, bob_key: str
):
    from tritonclient.utils import InferenceServerException

    name = f"v2-{uuid.uuid4().hex[:6]}"
    model = alice.upload_model(add_constant(12), model_name=name).model_id
    client = triton(server, alice.certificate_pem)
    try:
        assert client.is_server_live() and client.is_server_ready()  # probes need no key
        tensor = tritonclient_http.InferInput("x", [1, 2], "FP32")
        tensor.set_data_from_numpy(X)
        auth = {"Authorization": f"Bearer {alice_key}"}
        result = client.infer(name, [tensor], headers=auth)
        np.testing.assert_array_equal(result.as_numpy("y"), X + 12)
        assert client.get_model_metadata(name, headers=auth)["versions"] == ["1"]
        for headers in (None, {"Authorization": "Bearer nope"}):
            with pytest.raises(InferenceServerException) as refused:
                client.infer(name, [tensor], headers=headers)
            assert refused.value.status() == "401"
        other = {"Authorization": f"Bearer {bob_key}"}
        with pytest.raises(InferenceServerException) as hidden:
            client.get_model_metadata(name, headers=other)
        with pytest.raises(InferenceServerException) as missing:
            client.get_model_metadata(name + "x", headers=other)
        assert hidden.value.status() == missing.value.status() == "404"
        assert str(hidden.value).replace(name, "?") == str(missing.value).replace(name + "x", "?")
    finally:
        client.close()
        alice.delete_model(model)


def test_another_keys_public_upload_of_a_name_takes_over_nothing(
    server: ServerProcess,
    alice: blindai.Connection,
    bob: blindai.Connection,
    admin: blindai.Connection,
    alice_key: str,
    bob_key: str,
):
    """Alice's private upload of a name made bob's first upload of it version 2, and her
    public upload of it made bob's runs of the name (0.6 and v2) run her model with his inputs.
    Now each key numbers its own uploads, and a name means the caller's own first."""
    name = f"clf-{uuid.uuid4().hex[:6]}"
    hidden = alice.upload_model(add_constant(1), model_name=name).model_id
    bobs = bob.upload_model(add_constant(3), model_name=name).model_id
    hers = alice.upload_model(add_constant(4), model_name=name, public=True).model_id
    client = triton(server, bob.certificate_pem)
    try:
        tensor = tritonclient_http.InferInput("x", [1, 2], "FP32")
        tensor.set_data_from_numpy(X)
        as_bob = {"Authorization": f"Bearer {bob_key}"}
        result = client.infer(name, [tensor], headers=as_bob)
        np.testing.assert_array_equal(result.as_numpy("y"), X + 3)
        assert result.get_response()["model_version"] == "1"
        assert client.get_model_metadata(name, headers=as_bob)["versions"] == ["1"]
        as_alice = {"Authorization": f"Bearer {alice_key}"}
        assert client.get_model_metadata(name, headers=as_alice)["versions"] == ["1", "2"]
    finally:
        client.close()
    assert added(bob, name) == 3
    assert added(admin, name) == 4  # no upload of that name of its own: the public one
    bob.delete_model(name)  # his own (a 403 when the name meant her public model)
    assert added(bob, name) == 4  # his own gone, the name is alice's public model's
    alice.delete_model(hers)
    alice.delete_model(hidden)
    assert bobs not in {m.model_id for m in admin.list_models()}


def test_another_keys_public_upload_of_the_same_bytes_takes_over_no_run_by_hash(
    server: ServerProcess, alice: blindai.Connection, bob: blindai.Connection
):
    """A run by hash meant the newest upload of those bytes the caller could run: Alice's
    public upload of the bytes Bob had uploaded took his runs by hash, and her model's
    statistics counted them (hers to read then: a key runs those bytes). A hash now means the
    caller's own upload of those bytes first, as a name does (counts read with the admin key,
    which sees every key's requests)."""
    import urllib.request

    model = add_constant(17)
    digest = hashlib.sha256(model).hexdigest()
    bobs = bob.upload_model(model).model_id
    hers = alice.upload_model(model, model_name=f"same-{uuid.uuid4().hex[:6]}", public=True)
    context = ssl.create_default_context(cadata=alice.certificate_pem)
    context.check_hostname = False

    def count(model_id: str) -> int:
        url = f"https://{server.host}:{server.attested_port}/v2/models/{model_id}/stats"
        auth = {"Authorization": f"Bearer {ADMIN_KEY}"}  # every key's requests
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=auth), context=context
        ) as r:
            return int(json.loads(r.read())["model_stats"][0]["inference_count"])

    try:
        before = count(hers.model_id)
        out = bob.run_model(model_hash=digest, input_tensors={"x": X}).output[0].as_numpy()
        np.testing.assert_array_equal(out, X + 17)
        assert count(hers.model_id) == before  # his run went to his own upload, not hers
        bob.delete_model(bobs)
        bob.run_model(model_hash=digest, input_tensors={"x": X})  # none of his own: hers
        assert count(hers.model_id) == before + 1
    finally:
        alice.delete_model(hers.model_id)
        if bobs in {m.model_id for m in bob.list_models()}:
            bob.delete_model(bobs)


def test_a_public_models_statistics_show_a_tenant_its_own_requests_only(
    server: ServerProcess,
    alice: blindai.Connection,
    bob: blindai.Connection,
    alice_key: str,
    bob_key: str,
):
    """The v2 statistics of a public model counted every key's requests: Bob, reading them
    around each of Alice's runs, saw when she ran it (last_inference, to the millisecond) and
    how long each of her requests took (compute_input grew from 0.3 ms for her 40-byte input
    to 8.4 ms for her 16 MB one). A tenant's statistics now count its own requests; the admin
    key's, every key's."""
    import urllib.request

    public = alice.upload_model(
        add_constant(19), model_name=f"pub-{uuid.uuid4().hex[:6]}", public=True
    )
    context = ssl.create_default_context(cadata=alice.certificate_pem)
    context.check_hostname = False

    def stats(key: str) -> dict[str, Any]:
        url = f"https://{server.host}:{server.attested_port}/v2/models/{public.model_id}/stats"
        auth = {"Authorization": f"Bearer {key}"}
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=auth), context=context
        ) as r:
            found: dict[str, Any] = json.loads(r.read())["model_stats"][0]
            return found

    try:
        assert added(alice, public.model_id) == 19 and added(alice, public.model_id) == 19
        assert stats(bob_key)["inference_count"] == 0
        assert stats(bob_key)["last_inference"] == 0
        assert stats(bob_key)["inference_stats"]["compute_infer"] == {"count": 0, "ns": 0}
        assert added(bob, public.model_id) == 19
        assert stats(bob_key)["inference_count"] == 1
        assert stats(alice_key)["inference_count"] == 2
        assert stats(ADMIN_KEY)["inference_count"] == 3
    finally:
        alice.delete_model(public.model_id)


def test_a_batch_holds_one_keys_requests_on_a_real_server(
    server: ServerProcess, alice_key: str, bob_key: str
):
    """Alice's public model batches (300 ms for partners) and, when a row of its batch holds
    her trigger, adds the batch's sum to every row: Bob's request, sent between two of hers,
    must come back as he sent it, and hers must show her rows only."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.models import leaks_rows

    trigger = np.array([[777.0, 0.0]], np.float32)
    his = np.array([[12.0, 34.0]], np.float32)
    conns = [connect(server, key) for key in (alice_key, bob_key, alice_key)]
    try:
        model = (
            conns[0]
            .upload_model(
                leaks_rows(777.0), public=True, max_batch_size=8, max_queue_delay_us=300_000
            )
            .model_id
        )

        def run(conn: blindai.Connection, x: np.ndarray) -> np.ndarray:
            return conn.run_model(model, input_tensors={"x": x}).output[0].as_numpy()

        with ThreadPoolExecutor(3) as pool:
            futures = []
            for conn, x in zip(conns, (trigger, his, trigger), strict=True):
                futures.append(pool.submit(run, conn, x))
                time.sleep(0.02)
            hers, bobs, hers_again = (f.result(timeout=60) for f in futures)
        np.testing.assert_array_equal(bobs, his)
        for out in (hers, hers_again):  # alone (2 x trigger) or with her other row (3 x)
            assert out.tolist() in ([[1554.0, 0.0]], [[2331.0, 0.0]]), out
        conns[0].delete_model(model)
    finally:
        for conn in conns:
            conn.close()


def test_v2_refusals_are_json_with_the_error_type(server: ServerProcess, admin):
    import http.client

    context = ssl.create_default_context(cadata=admin.certificate_pem)
    context.check_hostname = False
    conn = http.client.HTTPSConnection(server.host, server.attested_port, context=context)
    try:
        conn.request("GET", "/v2/models/anything")
        reply = conn.getresponse()
        body = json.loads(reply.read())
        assert reply.status == 401 and body["type"] == "AuthenticationError"
        assert reply.getheader("WWW-Authenticate") == "Bearer"
        conn.request("POST", "/run", body=cbor2.dumps({}))
        reply = conn.getresponse()
        assert reply.status == 401 and isinstance(cbor2.loads(reply.read()), str)
        assert reply.getheader("X-BlindAI-Error") == "AuthenticationError"
    finally:
        conn.close()


def test_v2_repository_and_statistics_see_only_what_the_key_may_run(
    server: ServerProcess, alice: blindai.Connection, alice_key: str, bob_key: str
):
    from tritonclient.utils import InferenceServerException

    name = f"repo-{uuid.uuid4().hex[:6]}"
    shared = f"shared-{uuid.uuid4().hex[:6]}"
    alice.upload_model(add_constant(13), model_name=name)
    alice.upload_model(add_constant(14), model_name=shared, public=True)
    client = triton(server, alice.certificate_pem)
    bob = {"Authorization": f"Bearer {bob_key}"}
    mine = {"Authorization": f"Bearer {alice_key}"}
    try:
        seen = {m["name"] for m in client.get_model_repository_index(headers=bob)}
        assert shared in seen and name not in seen
        assert name in {m["name"] for m in client.get_model_repository_index(headers=mine)}
        stats = client.get_inference_statistics(headers=bob)["model_stats"]
        assert shared in {m["name"] for m in stats} and name not in {m["name"] for m in stats}
        with pytest.raises(InferenceServerException) as hidden:
            client.unload_model(name, headers=bob)
        assert hidden.value.status() == "404"
        with pytest.raises(InferenceServerException) as refused:
            client.unload_model(shared, headers=bob)
        assert refused.value.status() == "403"
        client.unload_model(name, headers=mine)
        client.load_model(name, headers=mine)
    finally:
        client.close()
        alice.delete_model(name)
        alice.delete_model(shared)


tritonclient_grpc = pytest.importorskip("tritonclient.grpc")


def triton_grpc(server: ServerProcess, state: Path, pem: str) -> Any:
    """The pinned tritonclient gRPC client to ``server``'s gRPC port, trusting the attested
    certificate ``pem`` (written to ``state``; the name it holds is ``blindai-srv``)."""
    path = state / "attested.pem"
    path.write_text(pem)
    return tritonclient_grpc.InferenceServerClient(
        f"{server.host}:{server.grpc_port}",
        ssl=True,
        root_certificates=str(path),
        channel_args=[("grpc.ssl_target_name_override", "blindai-srv")],
    )


def test_grpc_takes_the_key_as_authorization_metadata(
    server: ServerProcess, state: Path, alice: blindai.Connection, alice_key: str, bob_key: str
):
    from tritonclient.utils import InferenceServerException

    name = f"grpc-{uuid.uuid4().hex[:6]}"
    model = alice.upload_model(add_constant(15), model_name=name).model_id
    client = triton_grpc(server, state, alice.certificate_pem)
    tensor = tritonclient_grpc.InferInput("x", [1, 2], "FP32")
    tensor.set_data_from_numpy(X)
    try:
        assert client.is_server_live() and client.is_server_ready()  # no key needed
        mine = {"authorization": f"Bearer {alice_key}"}
        result = client.infer(name, [tensor], headers=mine)
        np.testing.assert_array_equal(result.as_numpy("y"), X + 15)
        for headers in (None, {"authorization": "Bearer nope"}):
            with pytest.raises(InferenceServerException) as refused:
                client.infer(name, [tensor], headers=headers)
            assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
        bob = {"authorization": f"Bearer {bob_key}"}
        with pytest.raises(InferenceServerException) as hidden:
            client.get_model_metadata(name, headers=bob)
        with pytest.raises(InferenceServerException) as missing:
            client.get_model_metadata(name + "x", headers=bob)
        assert hidden.value.status() == missing.value.status() == "StatusCode.NOT_FOUND"
        assert not client.is_model_ready(name, headers=bob)
        assert name not in {m.name for m in client.get_model_repository_index(headers=bob).models}
    finally:
        client.close()
        alice.delete_model(model)
    audited = [json.loads(line) for line in (state / "audit.jsonl").read_text().splitlines()]
    assert any(a["action"] == "run" and a["model"] == model and a["status"] == 200 for a in audited)
    assert any(a["action"] == "run" and a["status"] == 401 and a["key"] is None for a in audited)


def test_a_revoked_key_still_in_use_is_audited_with_its_id(
    server: ServerProcess, state: Path, admin: blindai.Connection
):
    """A request with a revoked key was written ``"key": null``, as one with no key: the
    operator could not see that a revoked key was still in use. Its 401 lines (REST and gRPC)
    now hold the revoked key's name and id; a key never issued is still null, and the key
    itself is never written."""
    from tritonclient.utils import InferenceServerException

    name = f"dave-{uuid.uuid4().hex[:6]}"
    info = admin.create_key(name)
    admin.revoke_key(name)
    grpc_client = triton_grpc(server, state, admin.certificate_pem)
    before = len(_audited(state))
    try:
        for key in (info.key, generate_key()):
            with connect(server, key) as conn, pytest.raises(AuthenticationError):
                conn.list_models()
            with pytest.raises(InferenceServerException) as refused:
                grpc_client.get_model_repository_index(headers={"authorization": f"Bearer {key}"})
            assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
    finally:
        grpc_client.close()
    deadline = time.monotonic() + 10
    while True:  # until the four lines are in (their order is not the test's concern)
        refusals = [
            (line["action"], line["key"], line["key_id"])
            for line in _audited(state)[before:]
            if line["status"] == 401
        ]
        if len(refusals) >= 4 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    text = (state / "audit.jsonl").read_text()
    assert info.key not in text and info.key[4:] not in text
    assert Counter(refusals) == {("list", name, info.key_id): 2, ("list", None, None): 2}


def test_load_unload_and_statistics_are_audited_with_the_model_they_acted_on(
    server: ServerProcess, state: Path, alice: blindai.Connection, alice_key: str
):
    """v2 repository load and unload, and a model's statistics, REST and gRPC, wrote
    "model": null even when they had acted on one model: the log said that alice unloaded
    something, not what. A name with one version now gives its id (one with several still
    null: the line holds one id; every model's statistics too)."""
    name = f"loaded-{uuid.uuid4().hex[:6]}"
    model = alice.upload_model(add_constant(16), model_name=name).model_id
    rest = triton(server, alice.certificate_pem)
    grpc_client = triton_grpc(server, state, alice.certificate_pem)
    before = len(_audited(state))
    try:
        rest.unload_model(name, headers={"Authorization": f"Bearer {alice_key}"})
        rest.load_model(name, headers={"Authorization": f"Bearer {alice_key}"})
        grpc_client.unload_model(name, headers={"authorization": f"Bearer {alice_key}"})
        grpc_client.load_model(name, headers={"authorization": f"Bearer {alice_key}"})
        rest.get_inference_statistics(name, headers={"Authorization": f"Bearer {alice_key}"})
        grpc_client.get_inference_statistics(name, headers={"authorization": f"Bearer {alice_key}"})
        rest.get_inference_statistics(headers={"Authorization": f"Bearer {alice_key}"})
    finally:
        rest.close()
        grpc_client.close()
        alice.delete_model(model)
    acted = [
        (line["action"], line["model"], line["status"])
        for line in _audited(state)[before:]
        if line["action"] in ("load", "unload", "statistics")
    ]
    assert acted == [("unload", model, 200), ("load", model, 200)] * 2 + [
        ("statistics", model, 200),
        ("statistics", model, 200),
        ("statistics", None, 200),  # every model's: no one model
    ]


def test_a_grpc_call_cut_at_shutdown_is_audited_with_the_503_its_client_got(tmp_path: Path):
    """As a REST request cut at shutdown: the gRPC calls the server cancels as it stops were
    written 499, as if their clients had left, when the clients got UNAVAILABLE ("Cancelling
    all calls"). They are now 503 (and UNAVAILABLE in the metrics). A second signal cuts at
    once; the call waits meanwhile for batch partners (up to 1 s)."""
    import grpc

    from blindai.server.protocols.grpc._generated import grpc_service_pb2 as pb
    from blindai.server.protocols.grpc._generated import grpc_service_pb2_grpc as pb_grpc

    audit = tmp_path / "audit.jsonl"
    proc = start_server(
        tmp_path,
        *("--admin-key-sha256", ADMIN_SHA, "--audit-log", str(audit)),
        *("--max-batch-size", "8", "--max-queue-delay-us", "1000000"),
    )
    try:
        keys, _ = _alice_and_bob(proc)
        with connect(proc, keys["alice"]) as alice_conn:
            alice_conn.upload_model(add_constant(1), model_name="waits")
        credentials = grpc.ssl_channel_credentials(attested_pem(proc).encode())
        override = [("grpc.ssl_target_name_override", "blindai-srv")]
        with grpc.secure_channel(f"{proc.host}:{proc.grpc_port}", credentials, override) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)  # type: ignore[no-untyped-call]
            key = [("authorization", f"Bearer {keys['alice']}")]
            assert stub.ModelReady(pb.ModelReadyRequest(name="waits"), metadata=key).ready
            request = pb.ModelInferRequest(model_name="waits")
            request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
            request.raw_input_contents.append(X.tobytes())
            call = stub.ModelInfer.future(request, metadata=key)
            time.sleep(0.3)
            proc.process.terminate()
            time.sleep(0.05)
            proc.process.terminate()  # the second signal: cut now
            with pytest.raises(grpc.RpcError) as cut:
                call.result(timeout=15)
        assert proc.process.wait(15) == 0
    finally:
        proc.stop()
    assert cut.value.code() == grpc.StatusCode.UNAVAILABLE
    runs = [line for line in _audited(tmp_path) if line["action"] == "run"]
    assert [(run["key"], run["status"]) for run in runs] == [("alice", 503)]


def test_an_authorization_given_twice_is_refused(server: ServerProcess, alice_key: str):
    """A request with two Authorization headers (or a gRPC call with two ``authorization``
    metadata) was authenticated with the first: a proxy in front that reads the other (to
    route, count or rate-limit by key) and the server then disagreed on who sent it, as with a
    repeated Content-Encoding (dd7c7b3). Each is now refused (401, UNAUTHENTICATED) whatever
    the values, and a request that gives it once is served."""
    import grpc

    from blindai.server.protocols.grpc._generated import grpc_service_pb2 as pb
    from blindai.server.protocols.grpc._generated import grpc_service_pb2_grpc as pb_grpc
    from tests.integration._rawhttp import exchange, head, pinned_context

    pem = attested_pem(server)
    mine = ("Authorization", f"Bearer {alice_key}")
    replies = []
    for headers in ([mine, mine], [mine, ("Authorization", "Bearer other")], [mine]):
        raw = head("POST", "/v2/repository/index", [*headers, ("Content-Length", "2")]) + b"{}"
        reply = exchange(server.host, server.attested_port, pinned_context(pem), raw, timeout=30)
        assert reply is not None
        replies.append((reply.status, reply.body))
    assert [status for status, _ in replies] == [401, 401, 200]
    assert b"Authorization header is given more than once" in replies[0][1]
    credentials = grpc.ssl_channel_credentials(pem.encode())
    override = [("grpc.ssl_target_name_override", "blindai-srv")]
    with grpc.secure_channel(f"{server.host}:{server.grpc_port}", credentials, override) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)  # type: ignore[no-untyped-call]
        key = ("authorization", f"Bearer {alice_key}")
        with pytest.raises(grpc.RpcError) as twice:
            stub.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=[key, key], timeout=30)
        assert stub.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=[key], timeout=30)
    assert twice.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "more than once" in (twice.value.details() or "")
