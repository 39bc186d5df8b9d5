"""Replicas against real servers: fresh evidence, reconnects to a restarted server, the pinned
simulated measurement, readiness, model export and sync, and ``upload --replicas``."""

from __future__ import annotations

import json
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto

import blindai
from blindai.attestation.simulation import UnsafeSimulationVerifier
from blindai.client.replicas import sync_models
from blindai.errors import ConfigurationError, PermissionDenied, PolicyError
from blindai.pipeline import Pipeline
from tests._fakes.server_log import attested_requests
from tests._server import ServerProcess, free_ports, spawn_server, start_server, wait_ready
from tests.integration._cli import cli, one_error_line
from tests.models import colour_classifier, identity, matmul
from tests.stored import store_colour_classifier

pytestmark = pytest.mark.filterwarnings(
    "ignore::blindai.attestation.simulation.SimulationModeWarning"
)
X = np.ones((1, 3), np.float32)


def _connect(server: ServerProcess, **kwargs: Any) -> blindai.Connection:
    return blindai.connect(server.host, simulation_mode=True, **server.ports, **kwargs)


@pytest.fixture(scope="module")
def exporting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server that allows export."""
    proc = start_server(tmp_path_factory.mktemp("exporting"), "--allow-model-export")
    yield proc
    proc.stop()


def _ready(server: ServerProcess) -> tuple[int, bytes]:
    url = f"https://{server.host}:{server.attested_port}/v2/health/ready"
    context = ssl._create_unverified_context()  # a probe, as the kubelet's: nothing trusted
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# --- per connection -------------------------------------------------------------------------


def test_fresh_evidence_on_every_new_replica(server: ServerProcess) -> None:
    with _connect(server, nonce=True) as conn:
        (replica,) = conn.replicas
        assert replica.fresh and replica.cert_der == conn.certificate
        uploaded = conn.upload_model(identity(TensorProto.FLOAT))  # management: from the cache
        conn.delete_model(uploaded.model_id)
        assert conn.attestation_stats.verified == 1


def test_one_connection_per_request_is_verified_once(server: ServerProcess) -> None:
    with _connect(server, keep_alive=False) as conn:
        uploaded = conn.upload_model(identity(TensorProto.FLOAT), model_name="per-request")
        for _ in range(5):
            conn.predict("per-request", {"x": X})
        conn.delete_model(uploaded.model_id)
        stats = conn.attestation_stats
    # connect's connection, then one per request: each admitted from the cache
    assert (stats.verified, stats.refused) == (1, 0) and stats.reused >= 6


def test_a_restarted_server_is_verified_again(tmp_path: Path) -> None:
    """Same address and ports, a new process: a new key, verified when the client reconnects."""
    ports = tuple(free_ports(3))
    first = spawn_server(tmp_path, "127.0.0.1", ports, grpc_port=0)  # type: ignore[arg-type]
    wait_ready(first)
    try:
        conn = _connect(first)
        conn.upload_model(identity(TensorProto.FLOAT), model_name="restart")
        old = conn.certificate
        first.stop()
        second = spawn_server(tmp_path, "127.0.0.1", ports, grpc_port=0)  # type: ignore[arg-type]
        wait_ready(second)
        with pytest.raises(blindai.errors.ModelNotFound):  # it holds nothing yet
            conn.predict("restart", {"x": X})
        assert conn.attestation_stats.verified == 2
        assert {p.cert_der for p in conn.replicas} - {old}  # the new certificate
        conn.upload_model(identity(TensorProto.FLOAT), model_name="restart")
        assert conn.predict("restart", {"x": X})["y"].tolist() == X.tolist()
        conn.close()
    finally:
        first.stop()
        if "second" in locals():
            second.stop()


def test_another_simulated_measurement_is_refused(tmp_path: Path) -> None:
    other = start_server(tmp_path, "--simulation-measurement", "ab" * 32)
    try:
        before = attested_requests(other.log())
        pinned = UnsafeSimulationVerifier(expected_measurement=b"\xcd" * 32)
        with pytest.raises(PolicyError) as info:
            _connect(other, verifier=pinned)
        assert info.value.violations[0].actual == "ab" * 32
        other.wait_for_log("GET /attestation")
        after = attested_requests(other.log())[len(before) :]
        assert after == ["GET /attestation"]
        good = UnsafeSimulationVerifier(expected_measurement=b"\xab" * 32)
        with _connect(other, verifier=good) as conn:
            assert conn.claims.measurement == b"\xab" * 32
    finally:
        other.stop()


def test_simulation_measurement_outside_simulation_is_refused() -> None:
    r = cli("serve", "--tee", "sev-snp", "--simulation-measurement", "ab" * 32, timeout=30)
    assert "simulation mode only" in one_error_line(r, "ConfigurationError", 2)


# --- readiness ------------------------------------------------------------------------------


def test_not_ready_until_the_required_models_are_held(tmp_path: Path) -> None:
    model = matmul(3, 2, seed=5)
    import hashlib

    required = tmp_path / "required.txt"
    required.write_text(
        f"# the models of this deployment\nsha256   {hashlib.sha256(model).hexdigest()}\n"
    )
    server = start_server(tmp_path, "--require-models", str(required), "--require-model-count", "2")
    try:
        assert _ready(server) == (400, b'{"ready":false,"missing_models":2}')
        with _connect(server) as conn:
            conn.upload_model(identity(TensorProto.FLOAT))
            assert _ready(server) == (400, b'{"ready":false,"missing_models":1}')
            uploaded = conn.upload_model(model)
            assert _ready(server) == (200, b'{"ready":true}')
            conn.delete_model(uploaded.model_id)
            assert _ready(server)[0] == 400
    finally:
        server.stop()


def test_an_unreadable_required_models_file_stops_the_start(tmp_path: Path) -> None:
    bad = tmp_path / "required.txt"
    bad.write_text("not-a-digest\n")
    r = cli("serve", "--simulation", "--require-models", str(bad), timeout=30)
    assert "line 1: expected a SHA-256" in one_error_line(r, "ConfigurationError", 2)


def test_ready_without_requirements(server: ServerProcess) -> None:
    assert _ready(server) == (200, b'{"ready":true}')


# --- export and sync --------------------------------------------------------------------------


def test_export_is_off_by_default(server: ServerProcess) -> None:
    with _connect(server) as conn:
        uploaded = conn.upload_model(identity(TensorProto.FLOAT), model_name="no-export")
        assert uploaded.model_id in {m.model_id for m in conn.list_models()}
        with pytest.raises(PermissionDenied, match="allow-model-export"):
            conn.export_model(uploaded.model_id)
        conn.delete_model(uploaded.model_id)


def test_export_gives_the_model_as_uploaded(exporting: ServerProcess, tmp_path: Path) -> None:
    folder = tmp_path / "pipe"
    folder.mkdir()
    (folder / "pipeline.toml").write_text(
        '[input]\nkind = "image"\nresize = [16, 16]\n'
        '[output]\nkind = "labels"\nlabels = "labels.txt"\ntop_k = 3\n'
    )
    (folder / "labels.txt").write_text("red\ngreen\nblue\n")
    model = colour_classifier(16)
    with _connect(exporting) as conn:
        uploaded = conn.upload_model(model, model_name="colours", optimize=False, pipeline=folder)
        exported = conn.export_model("colours")
        assert (exported.model_id, exported.model, exported.name) == (
            uploaded.model_id,
            model,
            "colours",
        )
        assert exported.optimize is False
        assert exported.pipeline == Pipeline.from_dir(folder).to_wire()
        listed = {m.model_id: m for m in conn.list_models()}[uploaded.model_id]
        assert (listed.hash, listed.size) == (uploaded.hash, len(model))
        conn.delete_model(uploaded.model_id)
        with pytest.raises(blindai.errors.ModelNotFound):
            conn.export_model(uploaded.model_id)


def test_an_export_is_in_the_audit_log(exporting: ServerProcess) -> None:
    """An export hands a model's bytes out: it is audited as "export", with the model's id, as
    every other request on a model is (docs/access-control.md). It wrote no audit line."""
    with _connect(exporting) as conn:
        uploaded = conn.upload_model(identity(TensorProto.FLOAT), model_name="audited-export")
        conn.export_model(uploaded.model_id)
        conn.delete_model(uploaded.model_id)
    exporting.wait_for_log(f'"action": "delete", "model": "{uploaded.model_id}"')
    audited = [
        json.loads(line) for line in exporting.log().splitlines() if line.startswith('{"time"')
    ]
    exports = [a for a in audited if a["model"] == uploaded.model_id and a["action"] == "export"]
    assert [(a["status"], a["key"]) for a in exports] == [(200, None)]


def test_an_export_in_flight_leaves_the_server_to_others(exporting: ServerProcess) -> None:
    """A 34 MB model exported three times over while another client runs a model: every run
    answers, every export is whole (the reply goes out 1 MiB at a time, read in a worker)."""
    big, small = matmul(2048, 4096), identity(TensorProto.FLOAT, [1, 3])
    with _connect(exporting) as conn:
        big_id = conn.upload_model(big).model_id
        small_id = conn.upload_model(small).model_id
    done = threading.Event()
    exported: list[bytes] = []

    def export() -> None:
        try:
            with _connect(exporting) as conn:
                exported.extend(conn.export_model(big_id).model for _ in range(3))
        finally:
            done.set()

    worker = threading.Thread(target=export)
    runs = 0
    with _connect(exporting) as other:
        worker.start()
        while not done.is_set() or runs == 0:
            out = other.run_model(small_id, input_tensors={"x": X}).output[0].as_numpy()
            assert np.array_equal(out, X)
            runs += 1
        worker.join()
        other.delete_model(big_id)
        other.delete_model(small_id)
    assert exported == [big] * 3


def test_sync_copies_what_the_target_lacks(exporting: ServerProcess, tmp_path: Path) -> None:
    target = start_server(tmp_path)
    try:
        with _connect(exporting) as source, _connect(target) as dest:
            a = source.upload_model(matmul(3, 2, seed=1), model_name="sync-a")
            b = source.upload_model(matmul(3, 2, seed=2), model_name="sync-b")
            dest.upload_model(matmul(3, 2, seed=2), model_name="sync-b")  # already there
            report = sync_models(source, dest)
            assert report.copied == (a.model_id,) and b.model_id in report.present
            assert report.errors == ()
            x = np.ones((1, 3), np.float32)
            assert np.allclose(
                dest.predict("sync-a", {"x": x})["y"], source.predict("sync-a", {"x": x})["y"]
            )
            assert sync_models(source, dest).copied == ()
            # the other way: the target does not allow export, every copy is an error
            back = sync_models(dest, source)
            assert back.copied == ()
            for source_model in (a, b):
                source.delete_model(source_model.model_id)
            back = sync_models(dest, source)
            assert back.copied == () and all(
                isinstance(e, PermissionDenied) for _, e in back.errors
            )
    finally:
        target.stop()


def test_sync_copies_a_model_an_older_replica_took_with_an_image_dtype_its_input_lacks(
    tmp_path: Path,
) -> None:
    """A model uploaded before uploads checked an image step's dtype against the model input
    (ec48e8c) is restored by its replica (a3fd8aa) and exported with its pipeline as uploaded;
    a newer replica, waiting for it under --require-models, refused the copy (the dtype check),
    so it never became ready. The sync now uploads it again without the dtype, which only
    uploads check (the step makes the input's own type): the copy runs as the source's."""
    import hashlib
    import io

    from PIL import Image

    store = tmp_path / "store"
    for side in ("old", "new"):
        (tmp_path / side).mkdir()
    start_server(tmp_path / "old", "--store", str(store)).stop()  # makes the store and key
    # uint8 for a float input
    model = store_colour_classifier(
        store, "00000000-0000-4000-8000-000000000003", {"resize": [16, 16], "dtype": "uint8"}
    )
    required = tmp_path / "required.txt"
    required.write_text(hashlib.sha256(model).hexdigest() + "\n")
    older = start_server(tmp_path / "old", "--store", str(store), "--allow-model-export")
    newer = start_server(tmp_path / "new", "--require-models", str(required))
    try:
        assert _ready(newer)[0] == 400
        with _connect(older) as source, _connect(newer) as dest:
            report = sync_models(source, dest)
            assert report.errors == () and len(report.copied) == 1
            assert _ready(newer) == (200, b'{"ready":true}')
            png = io.BytesIO()
            Image.new("RGB", (20, 20), (10, 240, 20)).save(png, "PNG")
            assert dest.predict("colours", image=png.getvalue()).top.label == "green"
    finally:
        older.stop()
        newer.stop()


def test_a_model_the_target_refuses_as_too_large_is_sent_once(
    exporting: ServerProcess, tmp_path: Path
) -> None:
    """3ab4a84 uploads a model whose pipeline names an image dtype once more without it when
    the target refuses it with InvalidInput, which PayloadTooLarge is: a model over the
    target's --max-model-bytes was sent twice (the whole model again, for the same 413). It is
    now sent once, and reported with that refusal."""
    from blindai.errors import PayloadTooLarge

    audit = tmp_path / "audit.jsonl"
    target = start_server(tmp_path, "--max-model-bytes", "100", "--audit-log", str(audit))
    spec = {
        "input": {"kind": "image", "resize": [16, 16], "dtype": "float32"},
        "output": {"kind": "labels", "labels": "labels.txt", "top_k": 1},
    }
    try:
        with _connect(exporting) as source, _connect(target) as dest:
            uploaded = source.upload_model(
                colour_classifier(16),  # 141 bytes
                model_name="too-large",
                pipeline=Pipeline(spec, {"labels.txt": b"red\ngreen\nblue\n"}),
            )
            report = sync_models(source, dest)
            source.delete_model(uploaded.model_id)
    finally:
        target.stop()
    assert report.copied == ()
    assert [(m, type(e)) for m, e in report.errors] == [(uploaded.model_id, PayloadTooLarge)]
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [line["status"] for line in lines if line["action"] == "upload"] == [413]


def test_a_model_the_target_refuses_for_another_reason_is_sent_once(
    exporting: ServerProcess, tmp_path: Path
) -> None:
    """sync_models uploaded a model whose pipeline names an image dtype once more, without it,
    after any InvalidInput but a 413: a model the target refused for another reason (here its
    image step resizes past the target's --max-image-side) was sent twice, for the same 400.
    Only the dtype check the retry is meant for makes it now."""
    audit = tmp_path / "audit.jsonl"
    target = start_server(tmp_path, "--max-image-side", "8", "--audit-log", str(audit))
    spec = {
        "input": {"kind": "image", "resize": [16, 16], "dtype": "float32"},
        "output": {"kind": "labels", "labels": "labels.txt", "top_k": 1},
    }
    try:
        with _connect(exporting) as source, _connect(target) as dest:
            uploaded = source.upload_model(
                colour_classifier(16),
                model_name="too-wide",
                pipeline=Pipeline(spec, {"labels.txt": b"red\ngreen\nblue\n"}),
            )
            report = sync_models(source, dest)
            source.delete_model(uploaded.model_id)
    finally:
        target.stop()
    assert report.copied == ()
    ((model_id, error),) = report.errors
    assert model_id == uploaded.model_id and "sides of at most 8" in str(error), error
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [line["status"] for line in lines if line["action"] == "upload"] == [400]


def test_sync_cli(exporting: ServerProcess, tmp_path: Path) -> None:
    """The source on 127.0.0.1, the target on 127.0.0.5 with the same ports (as two pods)."""
    ports = (exporting.unattested_port, exporting.attested_port, exporting.management_port)
    target = spawn_server(tmp_path, "127.0.0.5", ports, grpc_port=0)
    wait_ready(target)
    flags = ["--unattested-port", str(ports[0]), "--attested-port", str(ports[1])]
    flags += ["--management-port", str(ports[2]), "--simulation"]
    try:
        with _connect(exporting) as conn:
            uploaded = conn.upload_model(matmul(3, 2, seed=9), model_name="sync-cli")
        r = cli("sync", "--from", "127.0.0.1", "--to", "127.0.0.5,127.0.0.1", *flags)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == [f"{'127.0.0.5':<16} copied 1, present 0"]
        with _connect(target) as conn:
            assert [m.hash for m in conn.list_models()] == [uploaded.hash]
        with _connect(exporting) as conn:
            conn.delete_model(uploaded.model_id)
        r = cli("sync", "--from", "127.0.0.5", "--to", "127.0.0.1", *flags)  # export is off there
        assert r.returncode == 1
        assert "error: model" in r.stdout and "PermissionDenied" in r.stdout
        r = cli("sync", "--from", "127.0.0.1,127.0.0.5", "--to", "127.0.0.1", *flags)
        assert "--from names 2 replicas" in one_error_line(r, "ConfigurationError", 2)
    finally:
        target.stop()


# --- upload --replicas --------------------------------------------------------------------------


def test_upload_to_replicas_reports_each(server: ServerProcess, tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(matmul(3, 2, seed=11))
    ports = ["--unattested-port", str(server.unattested_port), "--attested-port"]
    ports += [str(server.attested_port), "--management-port", str(server.management_port)]
    r = cli("upload", model, "--replicas", "127.0.0.1", "--name", "rep", "--simulation", *ports)
    assert r.returncode == 0, r.stderr
    (line,) = r.stdout.splitlines()
    assert line.startswith("127.0.0.1") and "model_id" in line and "sha256" in line
    # a second address where nothing listens on those ports: reported, the first still served
    r = cli(
        "upload", model, "--replicas", "127.0.0.1,127.0.0.9", "--simulation", *ports, timeout=60
    )
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert lines[0].startswith("127.0.0.1") and "model_id" in lines[0]
    assert lines[1].startswith("127.0.0.9") and "error: NetworkError" in lines[1]
    assert "1 of 2 replicas did not receive the model" in r.stderr
    with _connect(server) as conn:
        for m in conn.list_models():
            if m.name == "rep" or m.hash.hex() in r.stdout:
                conn.delete_model(m.model_id)


def test_upload_to_an_unresolvable_name() -> None:
    r = cli("upload", __file__, "--replicas", "no-such-host.invalid", "--simulation")
    assert "cannot resolve 'no-such-host.invalid'" in one_error_line(r, "NetworkError", 1)


def test_empty_replica_list_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        blindai.client.replicas.resolve_replicas([])
