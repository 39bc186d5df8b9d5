"""The 0.6 routes in process: /upload, /run, /delete, the unattested port, and error replies."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from typing import Any

import cbor2
import numpy as np
import pytest
from onnx import TensorProto

from blindai.attestation import simulation
from blindai.attestation.binding import expected_report_data
from blindai.protocol.names import ERROR_HEADER
from blindai.server.access import ANONYMOUS
from blindai.server.registry import ModelRef
from tests.models import failing_add, identity, scalar_identity, two_in_two_out
from tests.unit.server._inprocess import InProcess, in_process, post_scope


@pytest.fixture(scope="module")
def server() -> Iterator[InProcess]:
    with in_process(max_request_bytes=4096, max_model_bytes=1 << 20) as s:
        yield s


def tensor(array: np.ndarray, name: str | None = None, datum: int = 0) -> dict[str, Any]:
    return {
        "info": {"fact": list(array.shape), "datum_type": datum, "node_name": name},
        "bytes_data": array.tobytes(),
    }


def run(server: InProcess, **body: Any) -> tuple[int, Any, str | None]:
    resp = server.attested.post("/run", content=cbor2.dumps(body))
    return resp.status_code, cbor2.loads(resp.content), resp.headers.get(ERROR_HEADER)


def test_upload_answers_id_and_hash(server: InProcess) -> None:
    model = identity(TensorProto.FLOAT)
    as_ints = server.upload(list(model))  # the original clients send an array of ints
    as_bytes = server.upload(model, model_name="named")
    assert as_ints["hash"] == as_bytes["hash"] == hashlib.sha256(model).digest()
    assert as_ints["model_id"] != as_bytes["model_id"]


def test_upload_length_must_be_the_size_sent(server: InProcess) -> None:
    model = identity(TensorProto.FLOAT)
    body = {"model": model, "length": len(model) + 5}
    resp = server.management.post("/upload", content=cbor2.dumps(body))
    assert resp.status_code == 400
    assert resp.headers[ERROR_HEADER] == "InvalidInput"
    message = cbor2.loads(resp.content)
    assert f"length says the model is {len(model) + 5} bytes" in message
    assert f"but {len(model)} bytes were sent" in message


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"model": b"x", "length": "1"}, "length must be an integer"),
        ({"model": b"x", "length": True}, "length must be an integer"),
        ({"model": b"x", "optimize": "yes"}, "optimize"),
        ({"model": b"not onnx"}, "not a valid ONNX model"),
        ({"model": b""}, "empty"),
        ({"model": b"x", "settings": [1]}, "settings must be a map"),
        ({"model": b"x", "settings": {"max_batch": 4}}, "settings: max_batch: Extra inputs"),
        ({"model": b"x", "settings": {"max_batch_size": "4"}}, "max_batch_size: Input should"),
        ({"model": b"x", "settings": {"max_batch_size": 0}}, "greater than or equal to 1"),
        ({"model": b"x", "settings": {"max_queue_delay_us": 10**7}}, "less than or equal"),
    ],
)
def test_bad_uploads_are_invalid_input(server: InProcess, body: dict[str, Any], fragment: str):
    resp = server.management.post("/upload", content=cbor2.dumps(body))
    assert (resp.status_code, resp.headers[ERROR_HEADER]) == (400, "InvalidInput")
    assert fragment in cbor2.loads(resp.content)


def test_run_by_id_name_hash_and_without_either(server: InProcess) -> None:
    model = two_in_two_out()
    reply = server.upload(model, model_name="two")
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    inputs = [tensor(a, "a"), tensor(a, "b")]
    for ref in ({"model_id": reply["model_id"]}, {"model_id": "two"},
                {"model_hash": reply["hash"].hex()}, {}):  # fmt: skip
        status, out, _ = run(server, inputs=inputs, **ref)
        assert status == 200, out
        assert [t["info"]["node_name"] for t in out["outputs"]] == ["sum", "idx"]
        got = np.frombuffer(out["outputs"][0]["bytes_data"], np.float32).reshape(2, 4)
        np.testing.assert_array_equal(got, a + a)


def test_run_with_both_id_and_hash_is_refused(server: InProcess) -> None:
    status, message, kind = run(server, model_id="a", model_hash="b", inputs=[])
    assert (status, kind) == (400, "InvalidInput")
    assert "at most one" in message


def test_a_scalar_keeps_shape_empty(server: InProcess) -> None:
    reply = server.upload(scalar_identity())
    x = np.array(2.5, np.float32)
    status, out, _ = run(server, model_id=reply["model_id"], inputs=[tensor(x)])
    assert status == 200, out
    (y,) = out["outputs"]
    assert y["info"]["fact"] == []
    assert np.frombuffer(y["bytes_data"], np.float32).tolist() == [2.5]


def test_a_flat_tensor_takes_the_models_static_shape(server: InProcess) -> None:
    reply = server.upload(identity(TensorProto.INT64, [1, 4]))
    flat = np.array([1, 2, 3, 4], np.int64)
    status, out, _ = run(server, model_id=reply["model_id"], inputs=[tensor(flat, datum=3)])
    assert status == 200, out
    assert out["outputs"][0]["info"]["fact"] == [1, 4]


@pytest.mark.parametrize(
    ("body", "status", "kind", "fragment"),
    [
        (b"\xff\x00garbage", 400, "InvalidInput", "not valid CBOR"),
        (cbor2.dumps({"model_id": "nope", "inputs": []}), 404, "ModelNotFound", "'nope'"),
        (cbor2.dumps({"model_id": 5, "inputs": []}), 400, "InvalidInput", "must be a string"),
        (b"\0" * 5000, 413, "PayloadTooLarge", "the 4 KiB limit (--max-request-bytes 4096)"),
    ],
)
def test_run_errors_name_their_class(
    server: InProcess, body: bytes, status: int, kind: str, fragment: str
) -> None:
    resp = server.attested.post("/run", content=body)
    assert (resp.status_code, resp.headers[ERROR_HEADER]) == (status, kind)
    assert fragment in cbor2.loads(resp.content)  # the text the original clients display


def test_the_error_header_names_a_class_of_blindai_errors() -> None:
    """A body of more items than the bounded decoder takes was answered with
    ``X-BlindAI-Error: TooManyItems``, a server-internal subclass no client knows."""
    body = cbor2.dumps({"inputs": [[-1] * 20_000]})  # a long array, but not of byte values
    with in_process() as big:
        resp = big.attested.post("/run", content=body)
    assert (resp.status_code, resp.headers[ERROR_HEADER]) == (400, "InvalidInput")
    assert "16384 items" in cbor2.loads(resp.content)


def test_a_model_failing_at_run_time_is_inference_failed(server: InProcess) -> None:
    reply = server.upload(failing_add())
    a, b = np.zeros((2, 3), np.float32), np.zeros((2, 4), np.float32)
    status, message, kind = run(server, model_id=reply["model_id"], inputs=[tensor(a), tensor(b)])
    assert (status, kind) == (422, "InferenceFailed")
    assert "failed on these inputs" in message


def test_delete_by_id_or_name(server: InProcess) -> None:
    model = identity(TensorProto.FLOAT)
    first = server.upload(model, model_name="doomed")
    second = server.upload(model, model_name="doomed")
    resp = server.management.post("/delete", content=cbor2.dumps({"model_id": "doomed"}))
    assert resp.status_code == 200 and cbor2.loads(resp.content) is None
    status, _, kind = run(server, model_id=second["model_id"], inputs=[])
    assert (status, kind) == (404, "ModelNotFound")  # the newest with that name went
    x = np.zeros((1, 3), np.float32)
    assert run(server, model_id="doomed", inputs=[tensor(x)])[0] == 200  # the older one stays
    resp = server.management.post("/delete", content=cbor2.dumps({"model_id": first["model_id"]}))
    assert resp.status_code == 200
    resp = server.management.post("/delete", content=cbor2.dumps({"model_id": "doomed"}))
    assert (resp.status_code, resp.headers[ERROR_HEADER]) == (404, "ModelNotFound")
    resp = server.management.post("/delete", content=cbor2.dumps({}))
    assert (resp.status_code, resp.headers[ERROR_HEADER]) == (400, "InvalidInput")


def test_management_port_serves_no_inference(server: InProcess) -> None:
    assert server.management.post("/run", content=cbor2.dumps({})).status_code == 404


def test_unattested_routes(server: InProcess) -> None:
    cert = cbor2.loads(server.unattested.get("/").content)
    assert cert == server.service.identity.cert_der
    resp = server.unattested.get("/quote")
    assert "mock" in resp.headers["server"]
    assert simulation.decode(cbor2.loads(resp.content)).report_data == expected_report_data(cert)
    assert server.unattested.get("/collateral").status_code == 404
    endorsements = cbor2.loads(server.unattested.get("/endorsements").content)
    assert endorsements == {"collateral": None, "certificates": []}
    info = cbor2.loads(server.unattested.get("/info").content)
    assert info["simulation"] is True and info["tee"] == "simulation"
    assert "error-type-header" in info["capabilities"]


def test_upload_settings_set_how_the_model_runs(server: InProcess) -> None:
    from tests.models import gather_rows, mixes_rows

    body = {"model": gather_rows(10), "settings": {"max_batch_size": 8, "max_concurrent_runs": 1}}
    resp = server.management.post("/upload", content=cbor2.dumps(body))
    assert resp.status_code == 200
    model_id = cbor2.loads(resp.content)["model_id"]
    entry = server.apps.plane.model(ModelRef(model_id), caller=ANONYMOUS)
    assert entry.queue is not None and entry.queue.batching
    assert entry.queue.policy.max_batch_size == 8
    refused = {"model": mixes_rows(), "settings": {"max_batch_size": 8}}
    resp = server.management.post("/upload", content=cbor2.dumps(refused))
    assert resp.status_code == 400
    assert "cannot be batched" in cbor2.loads(resp.content)


def test_a_large_body_that_is_no_map_is_refused_before_it_is_decoded() -> None:
    """A /run body over SMALL_BODY whose first item is not a map is refused from its first
    byte: before, the whole body was decoded first (a 30 MB array took 5 s of a worker). The
    array here turns invalid past its first 50 000 elements: decoded, it was 'not valid CBOR'."""
    body = b"\x9a" + (100_000).to_bytes(4, "big") + b"\x01" * 50_000 + b"\xff" * 50_000
    with in_process(max_request_bytes=1 << 20) as s:
        resp = s.attested.post("/run", content=body)
        assert (resp.status_code, resp.headers[ERROR_HEADER]) == (400, "InvalidInput")
        assert "body must be a CBOR map" in cbor2.loads(resp.content)
        assert run(s, model_id="nope", inputs=[])[0] == 404  # served as before


def test_a_mid_size_body_with_few_items_is_decoded_on_the_loop_else_in_a_worker() -> None:
    """An image-sized /run body is decoded right away; one with many items goes to a worker
    thread (the loop never walks thousands of items) and gets the same answer."""
    from blindai.server.protocols.v06.routes import ON_LOOP_ITEMS, SMALL_BODY

    with in_process() as s:
        model_id = s.upload(identity(TensorProto.FLOAT, [None, None]))["model_id"]
        plane = s.apps.plane
        offloaded: list[str] = []
        real = plane.offload

        async def spy(fn: Any, *args: Any, **kwargs: Any) -> Any:
            offloaded.append(fn.__name__)
            return await real(fn, *args, **kwargs)

        plane.offload = spy  # type: ignore[method-assign]
        x = np.arange(SMALL_BODY, dtype=np.float32).reshape(1, -1)  # 64 KiB
        for pad, where in (([], []), (["p"] * (ON_LOOP_ITEMS + 1), ["decode"])):
            offloaded.clear()
            status, reply, _ = run(s, model_id=model_id, inputs=[tensor(x)], pad=pad)
            assert status == 200, reply
            out = np.frombuffer(reply["outputs"][0]["bytes_data"], np.float32)
            assert np.array_equal(out, x.ravel()) and offloaded == where


@pytest.mark.parametrize(
    ("port", "path"),
    [("attested", "/run"), ("management", "/upload"), ("attested", "/v2/models/m/infer")],
)
def test_a_client_leaving_mid_body_is_no_server_error(
    port: str, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A client closing its connection before its body was whole made every body-reading route
    log "failed unexpectedly: ClientDisconnect" at ERROR and record a 500 (access log, audit
    log, metrics) that nobody was sent. It is recorded as 499 (client closed request), and
    nothing is logged as an error."""
    with in_process() as apps:
        apps.upload(identity(TensorProto.FLOAT), model_name="m")  # v2 looks it up first
        app = getattr(apps.apps, port)
        events = [
            {"type": "http.request", "body": b"\xa1" * 10, "more_body": True},
            {"type": "http.disconnect"},
        ]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return events.pop(0) if events else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = post_scope(path, content_length=100000)
        with caplog.at_level("ERROR", logger="blindai"):
            asyncio.run(app(scope, receive, send))
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [499]
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


def test_a_large_output_is_written_from_its_array_not_joined_first() -> None:
    """The reply to a run with a large output went out as one body, the output copied into it
    (a tenth of the server's CPU for a 588 KiB output); now its pieces go out one after the
    other, the output from the array's memory, and the client reads the same bytes."""
    from blindai.server.protocols.v06.wire import PartsResponse, outputs_response

    small = np.arange(3, dtype=np.float32)
    large = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    response = outputs_response([("s", small), ("y", large), ("z", large[0, 0])])
    assert isinstance(response, PartsResponse)
    assert any(isinstance(p, memoryview) and np.shares_memory(p, large) for p in response.parts)
    assert not any(isinstance(p, bytes) and len(p) >= large.nbytes for p in response.parts)
    whole = b"".join(response.parts)
    assert int(response.headers["content-length"]) == len(whole)
    outputs = cbor2.loads(whole)["outputs"]
    assert [o["bytes_data"] for o in outputs] == [
        small.tobytes(),
        large.tobytes(),
        large[0, 0].tobytes(),
    ]


def test_a_large_output_comes_back_whole() -> None:
    x = np.random.default_rng(1).standard_normal((3, 300, 300), dtype=np.float32)
    with in_process(max_request_bytes=4 << 20, max_model_bytes=1 << 20) as server:
        model_id = server.upload(identity(TensorProto.FLOAT, [3, 300, 300]))["model_id"]
        status, reply, _ = run(server, model_id=model_id, inputs=[tensor(x, "x")])
    assert status == 200
    (out,) = reply["outputs"]
    assert out["bytes_data"] == x.tobytes() and out["info"]["fact"] == [3, 300, 300]
