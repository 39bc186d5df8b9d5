"""Open Inference Protocol v2 against a real server, driven by tritonclient[http].

The client pins the server's certificate (fetched from the unattested port) as its only trust
anchor and checks the name ``blindai-srv`` (tritonclient's ``ssl_options["server_hostname"]``
with an ``ssl_context_factory`` that ignores the default CA bundle).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import ssl
import urllib.request
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import cbor2
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto

import blindai
from blindai.protocol.names import SERVER_NAME
from tests import models
from tests._server import ServerProcess, start_server
from tests.integration._oip import DTYPES, attested_pem, extremes, pinned_factory, reference
from tests.models import BackendCase

tritonclient_http = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException, np_to_triton_dtype  # noqa: E402

httpclient: Any = tritonclient_http


@pytest.fixture(scope="module")
def server_pem(server: ServerProcess) -> str:
    """The attested port's certificate, from ``GET /`` on the unattested port."""
    return attested_pem(server)


@pytest.fixture(scope="module")
def client(server: ServerProcess, server_pem: str) -> Iterator[Any]:
    """A tritonclient pinned to the server certificate, checking the name blindai-srv."""
    c = httpclient.InferenceServerClient(
        f"{server.host}:{server.attested_port}",
        ssl=True,
        ssl_context_factory=pinned_factory(server_pem),
        ssl_options={"server_hostname": SERVER_NAME},
    )
    yield c
    c.close()


@pytest.fixture
def upload(conn: blindai.Connection) -> Callable[[bytes], str]:
    """Upload a model under a fresh name; returns the name."""

    def do(model: bytes) -> str:
        name = f"m-{uuid.uuid4().hex[:8]}"
        conn.upload_model(model, model_name=name)
        return name

    return do


def infer_input(name: str, array: np.ndarray, *, binary: bool) -> Any:
    """A tritonclient input holding ``array`` as JSON data or as a binary blob."""
    tensor = httpclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def test_pinning_is_effective(server: ServerProcess, server_pem: str) -> None:
    """Without the pin, or under another name, the TLS handshake fails."""
    address = f"{server.host}:{server.attested_port}"
    unpinned = httpclient.InferenceServerClient(address, ssl=True)
    wrong_name = httpclient.InferenceServerClient(
        address, ssl=True, ssl_context_factory=pinned_factory(server_pem)
    )  # checks the name 127.0.0.1, which the certificate does not hold
    for c in (unpinned, wrong_name):
        with pytest.raises(ssl.SSLCertVerificationError):
            c.is_server_live()
        c.close()


# -- health and metadata --------------------------------------------------------------------


def test_live_and_ready(client: Any) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()


def test_server_metadata(client: Any) -> None:
    meta = client.get_server_metadata()
    assert meta["name"] == "blindai"
    assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata_by_name_and_id(client: Any, conn: blindai.Connection) -> None:
    name = f"meta-{uuid.uuid4().hex[:8]}"
    reply = conn.upload_model(models.two_in_two_out(), model_name=name)
    for key in (name, reply.model_id):
        meta = client.get_model_metadata(key)
        assert meta["name"] == name
        assert meta["versions"] == ["1"]
        assert meta["platform"] == "onnxruntime_onnx"
        assert meta["inputs"] == [
            {"name": "a", "datatype": "FP32", "shape": [-1, 4]},
            {"name": "b", "datatype": "FP32", "shape": [-1, 4]},
        ]
        assert meta["outputs"] == [
            {"name": "sum", "datatype": "FP32", "shape": [-1, 4]},
            {"name": "idx", "datatype": "INT64", "shape": [-1, 1]},
        ]
    assert client.is_model_ready(name)
    assert client.is_model_ready(name, model_version="1")
    assert client.is_model_ready(name, model_version=reply.model_id)
    assert not client.is_model_ready(name, model_version="7")
    assert not client.is_model_ready("no-such-model")


# -- inference ------------------------------------------------------------------------------


@pytest.mark.parametrize("binary_in", [False, True], ids=["json-in", "binary-in"])
@pytest.mark.parametrize("binary_out", [False, True], ids=["json-out", "binary-out"])
def test_two_in_two_out_matches_onnxruntime(
    client: Any, upload: Callable[[bytes], str], binary_in: bool, binary_out: bool
) -> None:
    model = models.two_in_two_out()
    name = upload(model)
    rng = np.random.default_rng(1)
    a = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal((3, 4)).astype(np.float32)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary_out) for n in ("sum", "idx")]
    result = client.infer(
        name,
        [infer_input("b", b, binary=binary_in), infer_input("a", a, binary=binary_in)],
        outputs=outputs,
        request_id="req-42",
    )
    want = reference(model, {"a": a, "b": b})
    response = result.get_response()
    assert response["id"] == "req-42"
    assert response["model_name"] == name
    for out in response["outputs"]:
        assert ("parameters" in out) is binary_out
        assert ("data" in out) is not binary_out
    for key in ("sum", "idx"):
        got = result.as_numpy(key)
        assert got.dtype == want[key].dtype
        np.testing.assert_array_equal(got, want[key])


def test_no_outputs_listed_means_all_binary(client: Any, upload: Callable[[bytes], str]) -> None:
    name = upload(models.two_in_two_out())
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    result = client.infer(
        name, [infer_input("a", a, binary=True), infer_input("b", a, binary=False)]
    )
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["sum", "idx"]
    assert all("binary_data_size" in o["parameters"] for o in response["outputs"])
    np.testing.assert_array_equal(result.as_numpy("sum"), a + a)
    np.testing.assert_array_equal(result.as_numpy("idx"), [[3], [3]])


def test_requested_outputs_are_a_subset(client: Any, upload: Callable[[bytes], str]) -> None:
    name = upload(models.two_in_two_out())
    a = np.eye(4, dtype=np.float32)
    result = client.infer(
        name,
        [infer_input("a", a, binary=False), infer_input("b", a, binary=False)],
        outputs=[httpclient.InferRequestedOutput("idx", binary_data=False)],
    )
    assert [o["name"] for o in result.get_response()["outputs"]] == ["idx"]
    assert result.as_numpy("sum") is None
    np.testing.assert_array_equal(result.as_numpy("idx"), [[0], [1], [2], [3]])


def test_versioned_infer(client: Any, conn: blindai.Connection) -> None:
    """As Triton: the uploads of a name are its versions 1, 2, ...; no version: the newest.

    A version may also be given as the model's id; any other version is unknown (404).
    """
    name = f"ver-{uuid.uuid4().hex[:8]}"
    first = conn.upload_model(models.identity(TensorProto.FLOAT), model_name=name).model_id
    conn.upload_model(models.identity(TensorProto.FLOAT), model_name=name)
    x = np.ones((1, 3), np.float32)

    def version_that_ran(version: str) -> str:
        result = client.infer(name, [infer_input("x", x, binary=True)], model_version=version)
        np.testing.assert_array_equal(result.as_numpy("y"), x)
        return str(result.get_response()["model_version"])

    assert version_that_ran("") == "2"
    assert version_that_ran("1") == "1"
    assert version_that_ran(first) == "1"
    assert client.get_model_metadata(name)["versions"] == ["1", "2"]
    with pytest.raises(InferenceServerException) as info:
        client.infer(name, [infer_input("x", x, binary=True)], model_version="3")
    assert info.value.status() == "404"


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_a_backend_test_model_with_scalars(
    client: Any, upload: Callable[[bytes], str], scalar_case: BackendCase, binary: bool
) -> None:
    """onnx's BitCast scalar case: shape [] in, shape [] out, through tritonclient."""
    name = upload(scalar_case.model)
    (x,), (want,) = scalar_case.inputs, scalar_case.outputs
    meta = client.get_model_metadata(name)
    assert meta["inputs"][0]["shape"] == [] and meta["outputs"][0]["shape"] == []
    out = httpclient.InferRequestedOutput("y", binary_data=binary)
    result = client.infer(name, [infer_input("x", x, binary=binary)], outputs=[out])
    got = result.as_numpy("y")
    assert got.shape == () and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_large_tensor(client: Any, upload: Callable[[bytes], str], binary: bool) -> None:
    """Bodies over 64 KiB are parsed and encoded in a worker thread."""
    name = upload(models.identity(TensorProto.FLOAT, [None, None]))
    x = np.random.default_rng(5).standard_normal((4, 50_000)).astype(np.float32)
    result = client.infer(
        name,
        [infer_input("x", x, binary=binary)],
        outputs=[httpclient.InferRequestedOutput("y", binary_data=binary)],
    )
    np.testing.assert_array_equal(result.as_numpy("y"), x)


def test_concurrent_requests(server: ServerProcess, server_pem: str, upload: Any) -> None:
    """Several connections in flight at once each get their own answer."""
    name = upload(models.matmul(64, 8))
    many = httpclient.InferenceServerClient(
        f"{server.host}:{server.attested_port}",
        concurrency=4,
        ssl=True,
        ssl_context_factory=pinned_factory(server_pem),
        ssl_options={"server_hostname": SERVER_NAME},
    )
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((5, 64)).astype(np.float32) for _ in range(16)]
    pending = [many.async_infer(name, [infer_input("x", x, binary=True)]) for x in xs]
    got = [p.get_result().as_numpy("y") for p in pending]
    many.close()
    model = models.matmul(64, 8)
    for x, y in zip(xs, got, strict=True):
        np.testing.assert_allclose(y, reference(model, {"x": x})["y"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", list(DTYPES))
def test_every_datatype_round_trips(
    client: Any, upload: Callable[[bytes], str], datatype: str, binary: bool
) -> None:
    elem, dtype = DTYPES[datatype]
    model = models.identity(elem)
    name = upload(model)
    x = extremes(dtype)
    result = client.infer(
        name,
        [infer_input("x", x, binary=binary)],
        outputs=[httpclient.InferRequestedOutput("y", binary_data=binary)],
    )
    out = result.get_response()["outputs"][0]
    assert out["datatype"] == datatype
    assert out["shape"] == [2, 3]
    got = result.as_numpy("y")
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, reference(model, {"x": x})["y"])
    np.testing.assert_array_equal(got, x)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_bytes_round_trip(client: Any, upload: Callable[[bytes], str], binary: bool) -> None:
    name = upload(models.identity(TensorProto.STRING, [None]))
    x = np.array(["héllo", "", "wörld"], dtype=object)
    result = client.infer(
        name,
        [infer_input("x", x, binary=binary)],
        outputs=[httpclient.InferRequestedOutput("y", binary_data=binary)],
    )
    got = result.as_numpy("y")
    assert [g.decode() if isinstance(g, bytes) else g for g in got] == list(x)


def test_asyncio_client(server: ServerProcess, server_pem: str, upload: Any) -> None:
    """tritonclient.http.aio (aiohttp) cannot set the TLS server name: the certificate is still
    the only trust anchor, but only the name check is disabled."""
    aio = pytest.importorskip("tritonclient.http.aio")
    name = upload(models.two_in_two_out())
    context = ssl.create_default_context(cadata=server_pem)
    context.check_hostname = False  # dialled as 127.0.0.1; the pin still applies
    a = np.arange(8, dtype=np.float32).reshape(2, 4)

    async def run() -> Any:
        client = aio.InferenceServerClient(
            f"{server.host}:{server.attested_port}", ssl=True, ssl_context=context
        )
        try:
            assert await client.is_server_live()
            inputs = []
            for key in ("a", "b"):
                tensor = aio.InferInput(key, [2, 4], "FP32")
                tensor.set_data_from_numpy(a, binary_data=True)
                inputs.append(tensor)
            return await client.infer(name, inputs)
        finally:
            await client.close()

    result = asyncio.run(run())
    np.testing.assert_array_equal(result.as_numpy("sum"), a + a)
    np.testing.assert_array_equal(result.as_numpy("idx"), [[3], [3]])


# -- errors: status, JSON body, and the server keeps serving ----------------------------------


def raw_post(
    server: ServerProcess, pem: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    """POST over pinned TLS with http.client, for requests tritonclient will not make."""
    context = ssl.create_default_context(cadata=pem)
    conn = http.client.HTTPSConnection(server.host, server.attested_port, context=context)
    raw = socket.create_connection((server.host, server.attested_port), timeout=30)
    conn.sock = context.wrap_socket(raw, server_hostname=SERVER_NAME)
    try:
        conn.request("POST", path, body, headers)
        reply = conn.getresponse()
        assert reply.getheader("content-type") == "application/json"
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


def expect_error(call: Callable[[], object], status: str, fragment: str) -> None:
    with pytest.raises(InferenceServerException) as info:
        call()
    assert info.value.status() == status
    assert fragment in info.value.message()


def test_bf16_model_runs(client: Any, upload: Callable[[bytes], str]) -> None:
    """onnxruntime's numpy interface has no bfloat16: the server goes through OrtValues."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    name = upload(models.identity(TensorProto.BFLOAT16))
    assert client.get_model_metadata(name)["inputs"][0]["datatype"] == "BF16"
    x = np.array([[1.5, -2.25, 3e38], [0, 1e-38, -7]], dtype=ml_dtypes.bfloat16)
    got = client.infer(name, [infer_input("x", x, binary=True)]).as_numpy("y")
    assert got.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(got.view(np.uint16), x.view(np.uint16))


def test_other_v2_paths_are_json_404(server: ServerProcess, server_pem: str) -> None:
    status, error = raw_post(server, server_pem, "/v2/systemsharedmemory/register", b"{}", {})
    assert status == 404
    assert "not supported" in error["error"]


def test_unknown_model_is_404(client: Any) -> None:
    x = np.zeros((1, 3), np.float32)
    expect_error(lambda: client.infer("nope", [infer_input("x", x, binary=False)]), "404", "nope")
    expect_error(lambda: client.get_model_metadata("nope"), "404", "nope")


def test_wrong_shape_is_400(client: Any, upload: Callable[[bytes], str]) -> None:
    name = upload(models.identity(TensorProto.FLOAT))
    x = np.zeros((2, 4), np.float32)
    expect_error(lambda: client.infer(name, [infer_input("x", x, binary=True)]), "400", "shape")
    assert client.infer(name, [infer_input("x", x[:, :3].copy(), binary=True)]).as_numpy(
        "y"
    ).shape == (2, 3)


def test_wrong_datatype_is_400(client: Any, upload: Callable[[bytes], str]) -> None:
    name = upload(models.identity(TensorProto.FLOAT))
    x = np.zeros((2, 3), np.float64)
    expect_error(lambda: client.infer(name, [infer_input("x", x, binary=False)]), "400", "dtype")


def test_unknown_output_is_400(client: Any, upload: Callable[[bytes], str]) -> None:
    name = upload(models.identity(TensorProto.FLOAT))
    x = np.zeros((2, 3), np.float32)
    outputs = [httpclient.InferRequestedOutput("zzz")]
    expect_error(
        lambda: client.infer(name, [infer_input("x", x, binary=False)], outputs=outputs),
        "400",
        "zzz",
    )


def binary_request(json_part: dict[str, Any], blob: bytes) -> tuple[bytes, dict[str, str]]:
    """A body and headers for the binary extension."""
    head = json.dumps(json_part).encode()
    return head + blob, {"Inference-Header-Content-Length": str(len(head))}


X_BINARY = {"name": "x", "datatype": "FP32", "shape": [1, 3],
            "parameters": {"binary_data_size": 12}}  # fmt: skip
MALFORMED = {
    "garbage-json": (b"{not json", {}, "not valid JSON"),
    "not-an-object": (b"[1, 2]", {}, "JSON object"),
    "nested-too-deep": (b"[" * 100_000 + b"]" * 100_000, {}, "not valid JSON"),
    "blob-too-short": (*binary_request({"inputs": [X_BINARY]}, b"\0" * 8), "runs past the end"),
    "blob-too-long": (*binary_request({"inputs": [X_BINARY]}, b"\0" * 16), "belong to no input"),
    "blob-without-header": (json.dumps({"inputs": [X_BINARY]}).encode(), {}, "runs past"),
    "header-length-too-big": (b"{}", {"Inference-Header-Content-Length": "99"}, "no larger"),
    "data-count": (
        json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3],
                                "data": [1, 2]}]}).encode(), {}, "element"),
    "unknown-datatype": (
        json.dumps({"inputs": [{"name": "x", "datatype": "FP99", "shape": [1, 3],
                                "data": [1, 2, 3]}]}).encode(), {}, "unknown datatype"),
    "unknown-input": (
        json.dumps({"inputs": [{"name": "q", "datatype": "FP32", "shape": [1, 3],
                                "data": [1, 2, 3]}]}).encode(), {}, "no input named"),
}  # fmt: skip


@pytest.mark.parametrize(("body", "headers", "fragment"), MALFORMED.values(), ids=MALFORMED)
def test_malformed_requests_are_400(
    server: ServerProcess,
    server_pem: str,
    client: Any,
    upload: Callable[[bytes], str],
    body: bytes,
    headers: dict[str, str],
    fragment: str,
) -> None:
    name = upload(models.identity(TensorProto.FLOAT))
    status, error = raw_post(server, server_pem, f"/v2/models/{name}/infer", body, headers)
    assert status == 400
    assert fragment in error["error"]
    assert client.is_server_live()
    x = np.ones((1, 3), np.float32)
    np.testing.assert_array_equal(
        client.infer(name, [infer_input("x", x, binary=True)]).as_numpy("y"), x
    )


def test_binary_size_mismatch_through_tritonclient(
    client: Any, upload: Callable[[bytes], str]
) -> None:
    name = upload(models.identity(TensorProto.FLOAT))
    tensor = infer_input("x", np.zeros((1, 3), np.float32), binary=True)
    tensor._parameters["binary_data_size"] = 8  # lie about the blob's size
    expect_error(lambda: client.infer(name, [tensor]), "400", "binary")
    x = np.ones((1, 3), np.float32)
    np.testing.assert_array_equal(
        client.infer(name, [infer_input("x", x, binary=True)]).as_numpy("y"), x
    )


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A second server whose bodies are limited to 4 KiB."""
    proc = start_server(tmp_path_factory.mktemp("small"), "--max-request-bytes", "4096")
    yield proc
    proc.stop()


def test_body_over_the_limit_is_413(small_server: ServerProcess) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", blindai.SimulationModeWarning)
        small = blindai.connect(
            small_server.host,
            simulation_mode=True,
            **small_server.ports,  # type: ignore[arg-type]
        )
    with small:
        small.upload_model(models.identity(TensorProto.FLOAT), model_name="small")
    with urllib.request.urlopen(f"http://{small_server.host}:{small_server.unattested_port}/") as r:
        pem = ssl.DER_cert_to_PEM_cert(cbor2.loads(r.read()))
    x = np.zeros((100, 3), np.float32)
    body, headers = binary_request(
        {"inputs": [{**X_BINARY, "shape": [100, 3], "parameters": {"binary_data_size": 1200}}]},
        x.tobytes(),
    )
    assert raw_post(small_server, pem, "/v2/models/small/infer", body, headers)[0] == 200
    big, big_headers = binary_request(
        {"inputs": [{**X_BINARY, "shape": [400, 3], "parameters": {"binary_data_size": 4800}}]},
        np.zeros((400, 3), np.float32).tobytes(),
    )
    assert len(big) > 4096
    status, error = raw_post(small_server, pem, "/v2/models/small/infer", big, big_headers)
    assert status == 413
    assert "4096" in error["error"]
    assert raw_post(small_server, pem, "/v2/models/small/infer", body, headers)[0] == 200


def test_tritonclient_pinned_to_the_certificate_blindai_attested(server: ServerProcess) -> None:
    """The documented way: attest with blindai.connect, then pin its certificate."""
    import warnings

    import blindai

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", blindai.SimulationModeWarning)
        conn = blindai.connect(server.host, simulation_mode=True, **server.ports)
    with conn:
        conn.upload_model(models.two_in_two_out(), model_name="doc-two")
        client = httpclient.InferenceServerClient(
            f"{server.host}:{server.attested_port}",
            ssl=True,
            ssl_context_factory=pinned_factory(conn.certificate_pem),
            ssl_options={"server_hostname": "blindai-srv"},
        )
        a = np.ones((1, 4), np.float32)
        inputs = [
            httpclient.InferInput("a", [1, 4], "FP32"),
            httpclient.InferInput("b", [1, 4], "FP32"),
        ]
        for i in inputs:
            i.set_data_from_numpy(a, binary_data=True)
        result = client.infer("doc-two", inputs)
        np.testing.assert_array_equal(result.as_numpy("sum"), a + a)
        client.close()


def test_hostile_bodies_get_400_and_the_server_goes_on(
    server: ServerProcess, server_pem: str, client: Any, upload: Callable[[bytes], str]
) -> None:
    """A JSON length of a superscript digit was a 500; a request of 100 000 inputs or of
    100 000 keys held a worker for minutes (simdjson lookups from the start: quadratic)."""
    name = upload(models.identity(TensorProto.FLOAT, [None, 3]))
    path = f"/v2/models/{name}/infer"
    x = {"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}
    one = json.dumps(x).encode()
    hostile = [
        (json.dumps({"inputs": [x]}).encode(), {"Inference-Header-Content-Length": "\xb2"}),
        # written as text: 100 000 Python objects here would set the test's collector going
        (b'{"inputs": [' + b",".join([one] * 100_000) + b"]}", {}),
        (
            b"{"
            + b"".join(b'"k%d": 0, ' % i for i in range(100_000))
            + b'"inputs": [%s, %s]}' % (one, one),
            {},
        ),
    ]
    for body, headers in hostile:
        status, error = raw_post(server, server_pem, path, body, headers)
        assert status == 400 and error["type"] == "InvalidInput", error
    array = np.ones((1, 3), np.float32)
    inputs = [infer_input("x", array, binary=False)]
    np.testing.assert_array_equal(client.infer(name, inputs).as_numpy("y"), array)
    assert "Traceback" not in server.log()


def test_a_scikit_learn_classifier_as_skl2onnx_exports_it(
    client: Any, upload: Callable[[bytes], str]
) -> None:
    """skl2onnx ends a classifier in ZipMap (a map of label to probability per row): refused
    at the default limits until the server made those maps itself, bounded by each run's
    rows. Served over v2 (BYTES, each map as JSON text): the labels and maps onnxruntime
    gives."""
    skl2onnx = pytest.importorskip("skl2onnx")
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    model = skl2onnx.to_onnx(LogisticRegression(max_iter=500).fit(x, y), x[:1])
    name = upload(model.SerializeToString())
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    label, maps = want.run(None, {"X": x[:7]})
    for binary in (False, True):
        got = client.infer(name, [infer_input("X", x[:7], binary=binary)])
        np.testing.assert_array_equal(got.as_numpy("output_label"), label)
        texts = [
            t.decode() if isinstance(t, bytes) else t for t in got.as_numpy("output_probability")
        ]
        assert [json.loads(t) for t in texts] == [{str(k): v for k, v in m.items()} for m in maps]
