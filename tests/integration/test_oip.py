"""The Open Inference Protocol through the real clients, REST and gRPC, one suite for both.

tritonclient[http] and tritonclient[grpc] trust only the attested certificate (read from the
unattested port) under the name ``blindai-srv``; every result is compared with onnxruntime run
in-process. Also: repository load/unload, statistics, classification, TLS refusals, metrics.
"""

from __future__ import annotations

import ssl
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto
from prometheus_client.parser import text_string_to_metric_families

import blindai
from blindai.protocol.names import SERVER_NAME
from tests import models
from tests._server import ServerProcess
from tests.integration._oip import (
    DTYPES,
    attested_pem,
    extremes,
    pinned_factory,
    reference,
    scrape,
)

http = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
ml_dtypes = pytest.importorskip("ml_dtypes")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture(scope="module")
def pem(server: ServerProcess) -> str:
    return attested_pem(server)


@pytest.fixture(scope="module")
def pem_file(pem: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pin") / "attested.pem"
    path.write_text(pem)
    return path


def grpc_client(server: ServerProcess, root: Path | None) -> Any:
    return grpcclient.InferenceServerClient(
        f"{server.host}:{server.grpc_port}",
        ssl=True,
        root_certificates=None if root is None else str(root),
        channel_args=[("grpc.ssl_target_name_override", SERVER_NAME)],
    )


def http_client(server: ServerProcess, pem: str) -> Any:
    return http.InferenceServerClient(
        f"{server.host}:{server.attested_port}",
        ssl=True,
        ssl_context_factory=pinned_factory(pem),
        ssl_options={"server_hostname": SERVER_NAME},
    )


@pytest.fixture(scope="module", params=["http", "grpc"])
def triton(request, server: ServerProcess, pem: str, pem_file: Path) -> Iterator[tuple[Any, Any]]:
    """(client, its module) for each protocol."""
    if request.param == "http":
        client, module = http_client(server, pem), http
    else:
        client, module = grpc_client(server, pem_file), grpcclient
    yield client, module
    client.close()


def upload(conn: blindai.Connection, model: bytes, name: str | None = None) -> str:
    name = name or f"m-{uuid.uuid4().hex[:8]}"
    conn.upload_model(model, model_name=name)
    return name


def infer(triton: tuple[Any, Any], name: str, arrays: dict[str, np.ndarray], **kwargs: Any) -> Any:
    client, module = triton
    inputs = []
    for key, array in arrays.items():
        datatype = "BF16" if array.dtype == ml_dtypes.bfloat16 else None
        from tritonclient.utils import np_to_triton_dtype

        t = module.InferInput(key, list(array.shape), datatype or np_to_triton_dtype(array.dtype))
        t.set_data_from_numpy(array)
        inputs.append(t)
    return client.infer(name, inputs, **kwargs)


def test_health_and_server_metadata(triton) -> None:
    client, _ = triton
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    extensions = meta["extensions"] if isinstance(meta, dict) else list(meta.extensions)
    assert {"classification", "model_repository", "statistics"} <= set(extensions)


@pytest.mark.parametrize("datatype", list(DTYPES))
def test_every_datatype_equals_onnxruntime(triton, conn, datatype: str) -> None:
    elem, dtype = DTYPES[datatype]
    model = models.identity(elem)
    name = upload(conn, model)
    x = extremes(dtype)
    got = infer(triton, name, {"x": x}).as_numpy("y")
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, reference(model, {"x": x})["y"])


def test_bytes_and_bf16(triton, conn) -> None:
    name = upload(conn, models.identity(TensorProto.STRING, [None]))
    words = np.array(["héllo", "", "wörld"], dtype=object)
    got = infer(triton, name, {"x": words}).as_numpy("y")
    assert [g.decode() if isinstance(g, bytes) else g for g in got] == list(words)
    name = upload(conn, models.identity(TensorProto.BFLOAT16))
    x = np.array([[1.5, -2.25, 3e38], [0, 1e-38, -7]], dtype=ml_dtypes.bfloat16)
    got = infer(triton, name, {"x": x}).as_numpy("y")
    np.testing.assert_array_equal(got.view(np.uint16), x.view(np.uint16))


def test_two_inputs_metadata_and_versions(triton, conn) -> None:
    client, _ = triton
    model = models.two_in_two_out()
    name = upload(conn, model)
    upload(conn, model, name)
    meta = (
        client.get_model_metadata(name, as_json=True)
        if triton[1] is grpcclient
        else (client.get_model_metadata(name))
    )
    assert meta["versions"] == ["1", "2"]
    assert [i["name"] for i in meta["inputs"]] == ["a", "b"]
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    result = infer(triton, name, {"b": a, "a": a}, model_version="1")
    want = reference(model, {"a": a, "b": a})
    np.testing.assert_array_equal(result.as_numpy("sum"), want["sum"])
    np.testing.assert_array_equal(result.as_numpy("idx"), want["idx"])
    assert client.is_model_ready(name, "2")
    assert not client.is_model_ready(name, "3")
    assert not client.is_model_ready(f"none-{uuid.uuid4().hex}")


def index_of(triton, name: str) -> list[dict[str, str]]:
    client, module = triton
    found = client.get_model_repository_index(**({"as_json": True} if module is grpcclient else {}))
    rows = found.get("models", []) if isinstance(found, dict) else found
    return [r for r in rows if r["name"] == name]


def test_repository_unload_and_load(triton, conn) -> None:
    client, _ = triton
    name = upload(conn, models.identity(TensorProto.FLOAT))
    x = np.ones((1, 3), np.float32)
    assert [r["state"] for r in index_of(triton, name)] == ["READY"]
    client.unload_model(name)
    assert [r["state"] for r in index_of(triton, name)] == ["UNAVAILABLE"]
    assert not client.is_model_ready(name)
    with pytest.raises(InferenceServerException, match="unloaded"):
        infer(triton, name, {"x": x})
    client.load_model(name)
    assert client.is_model_ready(name)
    np.testing.assert_array_equal(infer(triton, name, {"x": x}).as_numpy("y"), x)


def test_statistics_move(triton, conn) -> None:
    client, module = triton
    name = upload(conn, models.identity(TensorProto.FLOAT))
    for _ in range(3):
        infer(triton, name, {"x": np.ones((1, 3), np.float32)})
    kwargs = {"as_json": True} if module is grpcclient else {}
    (stats,) = client.get_inference_statistics(name, **kwargs)["model_stats"]
    assert stats["name"] == name
    assert stats["version"] == "1"
    assert int(stats["inference_count"]) == 3
    inference = stats["inference_stats"]
    for key in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        assert int(inference[key]["count"]) == 3, key
    assert int(inference["compute_infer"]["ns"]) > 0


def test_classification(triton, conn) -> None:
    _, module = triton
    name = upload(conn, models.identity(TensorProto.FLOAT))
    x = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.3]], np.float32)
    outputs = [module.InferRequestedOutput("y", class_count=2)]
    got = infer(triton, name, {"x": x}, outputs=outputs).as_numpy("y")
    text = [[v.decode() if isinstance(v, bytes) else v for v in row] for row in got]
    assert text == [["0.700000:1", "0.200000:2"], ["0.500000:0", "0.300000:2"]]


def test_grpc_trusts_only_the_attested_certificate(server, pem_file: Path, tmp_path: Path) -> None:
    """The system roots, or another certificate, do not reach the server."""
    import trustme

    other = tmp_path / "other.pem"
    other.write_bytes(trustme.CA().cert_pem.bytes())
    for root in (None, other):
        client = grpc_client(server, root)
        with pytest.raises(InferenceServerException, match="UNAVAILABLE"):
            client.is_server_live(client_timeout=10)
        client.close()
    pinned = grpc_client(server, pem_file)
    assert pinned.is_server_live(client_timeout=10)
    pinned.close()


def test_http_trusts_only_the_attested_certificate(server, pem: str) -> None:
    """tritonclient[http]: the system roots, or another CA's certificate, fail the handshake."""
    import trustme

    other = trustme.CA().cert_pem.bytes().decode()
    for client in (
        http.InferenceServerClient(f"{server.host}:{server.attested_port}", ssl=True),
        http_client(server, other),
    ):
        with pytest.raises(ssl.SSLCertVerificationError):
            client.is_server_live()
        client.close()
    with http_client(server, pem) as pinned:
        assert pinned.is_server_live()


def test_metrics_parse_and_move(server, pem, pem_file, conn) -> None:
    name = upload(conn, models.identity(TensorProto.FLOAT))
    grpc_key = ("blindai_grpc_requests_total", (("code", "OK"), ("method", "ModelInfer")))
    rest_key = (
        "blindai_inference_phase_duration_seconds_count",
        (("phase", "infer"), ("protocol", "rest")),
    )
    before = scrape(server, pem)
    x = np.ones((1, 3), np.float32)
    with http_client(server, pem) as h:
        infer((h, http), name, {"x": x})
    g = grpc_client(server, pem_file)
    infer((g, grpcclient), name, {"x": x})
    g.close()
    after = scrape(server, pem)
    assert after[rest_key] == before.get(rest_key, 0) + 1
    assert after[grpc_key] == before.get(grpc_key, 0) + 1
    for counter in ("blindai_received_bytes_total", "blindai_sent_bytes_total"):
        key = (counter, (("port", "grpc"),))  # the serialized messages, 12 bytes of x at least
        assert after[key] >= before.get(key, 0) + 12, counter
    assert after[("blindai_models_loaded", ())] >= 1
    assert name not in str(after)


def test_plain_metrics_port_is_loopback_only(tmp_path: Path) -> None:
    from tests._server import free_ports, start_server

    (port,) = free_ports(1)
    proc = start_server(tmp_path, "--metrics-port", str(port), "--host", "127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as reply:
            names = {f.name for f in text_string_to_metric_families(reply.read().decode())}
        assert {"blindai_http_requests", "blindai_evidence_refreshes"} <= names
        assert "plain-HTTP metrics on http://127.0.0.1:" in proc.log()
    finally:
        proc.stop()


def test_grpc_errors_carry_status_codes(server, pem_file, conn) -> None:
    client = grpc_client(server, pem_file)
    try:
        x = np.ones((1, 3), np.float32)
        with pytest.raises(InferenceServerException) as info:
            infer((client, grpcclient), f"none-{uuid.uuid4().hex}", {"x": x})
        assert info.value.status() == "StatusCode.NOT_FOUND"
        name = upload(conn, models.identity(TensorProto.FLOAT))
        with pytest.raises(InferenceServerException) as info:
            infer((client, grpcclient), name, {"x": np.ones((2, 4), np.float32)})
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "shape" in info.value.message()
        assert client.is_server_live()  # and the server keeps serving
    finally:
        client.close()


def test_grpc_unserved_calls_and_long_names_get_their_status(server, pem_file, conn) -> None:
    """ModelConfig (tritonclient's get_model_config) raised NotImplementedError in the generated
    base class: grpcio logged a traceback at every call. A 100 000-character model name came back
    in the NOT_FOUND message, over the client's metadata limit: RESOURCE_EXHAUSTED instead."""
    client = grpc_client(server, pem_file)
    try:
        name = upload(conn, models.identity(TensorProto.FLOAT))
        with pytest.raises(InferenceServerException) as info:
            client.get_model_config(name)
        assert info.value.status() == "StatusCode.UNIMPLEMENTED"
        assert "ModelConfig is not supported" in info.value.message()
        with pytest.raises(InferenceServerException) as info:
            infer((client, grpcclient), "n" * 100_000, {"x": np.ones((1, 3), np.float32)})
        assert info.value.status() == "StatusCode.NOT_FOUND"
        assert "no model" in info.value.message()
        x = np.ones((1, 3), np.float32)  # and the server keeps serving
        np.testing.assert_array_equal(infer((client, grpcclient), name, {"x": x}).as_numpy("y"), x)
    finally:
        client.close()
    assert "NotImplementedError" not in server.log()
