"""The v2 routes in process: metadata, inference (JSON and binary), scalars, error replies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto

from blindai.protocol.names import ERROR_HEADER
from blindai.server._text import MAX_MESSAGE
from blindai.server.protocols.v2.codec import HEADER_LENGTH
from tests.models import failing_add, identity, scalar_identity, two_in_two_out
from tests.unit.server._inprocess import InProcess, in_process


@pytest.fixture(scope="module")
def server() -> Iterator[InProcess]:
    with in_process(max_request_bytes=4096) as s:
        yield s


@pytest.fixture(scope="module")
def two(server: InProcess) -> str:
    return str(server.upload(two_in_two_out(), model_name="two-v2")["model_id"])


def infer(server: InProcess, path: str, doc: dict[str, Any], **kwargs: Any) -> Any:
    return server.attested.post(path, content=json.dumps(doc).encode(), **kwargs)


def fp32(name: str, array: np.ndarray) -> dict[str, Any]:
    return {"name": name, "datatype": "FP32", "shape": list(array.shape),
            "data": array.ravel().tolist()}  # fmt: skip


def test_health_and_server_metadata(server: InProcess) -> None:
    assert server.attested.get("/v2/health/live").json() == {"live": True}
    assert server.attested.get("/v2/health/ready").json() == {"ready": True}
    meta = server.attested.get("/v2").json()
    assert meta["name"] == "blindai" and "binary_tensor_data" in meta["extensions"]


def test_model_metadata_by_name_and_version(server: InProcess, two: str) -> None:
    meta = server.attested.get("/v2/models/two-v2").json()
    assert meta["versions"] == ["1"]
    assert meta["inputs"][0] == {"name": "a", "datatype": "FP32", "shape": [-1, 4]}
    assert server.attested.get(f"/v2/models/two-v2/versions/{two}/ready").json()["ready"]
    assert server.attested.get("/v2/models/two-v2/versions/1/ready").json()["ready"]
    resp = server.attested.get("/v2/models/two-v2/versions/other")
    assert (resp.status_code, resp.headers[ERROR_HEADER]) == (404, "ModelNotFound")
    assert resp.json()["type"] == "ModelNotFound" and "no version" in resp.json()["error"]


def test_json_inference_with_outputs_asked_for(server: InProcess, two: str) -> None:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    doc = {"id": "r1", "inputs": [fp32("a", a), fp32("b", a)], "outputs": [{"name": "idx"}]}
    reply = infer(server, f"/v2/models/{two}/infer", doc).json()
    assert reply["id"] == "r1" and reply["model_version"] == "1"
    assert [o["name"] for o in reply["outputs"]] == ["idx"]
    assert reply["outputs"][0]["data"] == [3, 3]


def test_binary_inference(server: InProcess, two: str) -> None:
    a = np.ones((1, 4), np.float32)
    head = json.dumps({
        "inputs": [
            {"name": n, "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}
            for n in ("a", "b")
        ],
        "parameters": {"binary_data_output": True},
    }).encode()  # fmt: skip
    resp = server.attested.post(
        "/v2/models/two-v2/infer",
        content=head + a.tobytes() * 2,
        headers={HEADER_LENGTH: str(len(head))},
    )
    cut = int(resp.headers[HEADER_LENGTH])
    outputs = json.loads(resp.content[:cut])["outputs"]
    assert outputs[0]["parameters"] == {"binary_data_size": 16}
    total = np.frombuffer(resp.content[cut : cut + 16], np.float32)
    np.testing.assert_array_equal(total, [2, 2, 2, 2])


@pytest.mark.parametrize("length", [b"\xb2", b"0" * 30 + b"9" * 5000])
def test_a_json_length_that_int_refuses_is_400(server: InProcess, two: str, length: bytes) -> None:
    """A superscript digit (latin-1 header text) or over 4300 digits made int() raise
    ValueError: the route answered 500."""
    resp = server.attested.post(
        "/v2/models/two-v2/infer", content=b"{}", headers={HEADER_LENGTH: length}
    )
    assert (resp.status_code, resp.headers[ERROR_HEADER]) == (400, "InvalidInput")
    assert HEADER_LENGTH in resp.json()["error"]


def test_error_messages_quote_at_most_a_kibibyte_of_the_request() -> None:
    """Messages quote the names and shapes a request gave: a 100 000-character input name came
    back whole (over gRPC, such a message was lost to the client's metadata limit)."""
    a = np.zeros((1, 4), np.float32)
    with in_process(max_request_bytes=1 << 22) as big:
        model = big.upload(two_in_two_out())["model_id"]
        for doc in (
            {"inputs": [fp32("n" * 100_000, a), fp32("b", a)]},
            {"inputs": [{"name": "a", "datatype": "F" * 100_000, "shape": [1], "data": [0]}]},
            {"inputs": [{"name": "a", "datatype": "FP32", "shape": [1] * 100_000, "data": [0]}]},
        ):
            resp = infer(big, f"/v2/models/{model}/infer", doc)
            assert resp.status_code == 400
            message = resp.json()["error"]
            assert len(message) <= MAX_MESSAGE and message.endswith(
                ("...", "32", "BF16']", "['a', 'b']")
            )


def test_a_classification_over_the_reply_limit_is_refused_before_it_is_made() -> None:
    with in_process(max_request_bytes=1 << 20, max_response_bytes=1 << 18) as small:
        model = small.upload(identity(TensorProto.UINT8, [None, 1]))["model_id"]
        x = {"name": "x", "datatype": "UINT8", "shape": [100_000, 1], "data": [0] * 100_000}
        doc = {"inputs": [x], "outputs": [{"name": "y", "parameters": {"classification": 1}}]}
        resp = infer(small, f"/v2/models/{model}/infer", doc)
    assert (resp.status_code, resp.headers[ERROR_HEADER]) == (422, "InferenceFailed")
    assert "classification of output 'y' would have 100000 elements" in resp.json()["error"]


def test_a_scalar_keeps_shape_empty(server: InProcess) -> None:
    model = server.upload(scalar_identity())["model_id"]
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [], "data": [1.5]}]}
    (out,) = infer(server, f"/v2/models/{model}/infer", doc).json()["outputs"]
    assert (out["shape"], out["data"]) == ([], [1.5])
    meta = server.attested.get(f"/v2/models/{model}").json()
    assert meta["inputs"][0]["shape"] == []


@pytest.mark.parametrize(
    ("doc", "status", "kind", "fragment"),
    [
        ({"inputs": []}, 400, "InvalidInput", "non-empty list"),
        ({"inputs": [fp32("zz", np.zeros((1, 4), np.float32))]}, 400, "InvalidInput", "'zz'"),
        (
            {"inputs": [fp32("a", np.zeros((1, 4), np.float32))] * 2, "outputs": [{"name": "q"}]},
            400,
            "InvalidInput",
            "given twice",
        ),
    ],
)
def test_errors_are_json_with_their_type(
    server: InProcess, two: str, doc: dict[str, Any], status: int, kind: str, fragment: str
) -> None:
    resp = infer(server, f"/v2/models/{two}/infer", doc)
    assert (resp.status_code, resp.headers[ERROR_HEADER]) == (status, kind)
    body = resp.json()
    assert body["type"] == kind and fragment in body["error"]


def test_unknown_output_unknown_model_and_limits(server: InProcess, two: str) -> None:
    a = np.zeros((1, 4), np.float32)
    doc = {"inputs": [fp32("a", a), fp32("b", a)], "outputs": [{"name": "nope"}]}
    resp = infer(server, f"/v2/models/{two}/infer", doc)
    assert resp.status_code == 400 and "no output named 'nope'" in resp.json()["error"]
    resp = infer(server, "/v2/models/absent/infer", {"inputs": [fp32("a", a)]})
    assert (resp.status_code, resp.json()["type"]) == (404, "ModelNotFound")
    resp = server.attested.post(f"/v2/models/{two}/infer", content=b"{" * 5000)
    assert (resp.status_code, resp.json()["type"]) == (413, "PayloadTooLarge")
    assert "the 4 KiB limit (--max-request-bytes 4096)" in resp.json()["error"]
    resp = server.attested.post(
        f"/v2/models/{two}/infer", content=b"{}", headers={"content-encoding": "gzip"}
    )
    assert resp.status_code == 400 and "gzip" in resp.json()["error"]
    assert server.attested.get("/v2/repository/index").status_code == 404


def test_json_nested_past_the_parsers_limit_is_400() -> None:
    # 60 KB: under the repository routes' 64 KiB, 30 times Python's default recursion limit
    # (a test runner may raise it: hypothesis does while it runs)
    deep = b"[" * 30_000 + b"]" * 30_000
    with in_process(max_request_bytes=1 << 17) as server:
        two = server.upload(two_in_two_out(), model_name="two-deep")["model_id"]
        a = np.ones((1, 4), np.float32)
        for path in ("/v2/repository/index", f"/v2/repository/models/{two}/load",
                     f"/v2/repository/models/{two}/unload", f"/v2/models/{two}/infer"):  # fmt: skip
            resp = server.attested.post(path, content=deep)
            assert (resp.status_code, resp.json()["type"]) == (400, "InvalidInput"), path
            assert "not valid JSON" in resp.json()["error"], path
            ok = infer(server, f"/v2/models/{two}/infer", {"inputs": [fp32("a", a), fp32("b", a)]})
            assert ok.status_code == 200, path


def test_a_failing_model_is_inference_failed(server: InProcess) -> None:
    model = server.upload(failing_add())["model_id"]
    doc = {"inputs": [fp32("a", np.zeros((2, 3), np.float32)),
                      fp32("b", np.zeros((2, 4), np.float32))]}  # fmt: skip
    resp = infer(server, f"/v2/models/{model}/infer", doc)
    assert (resp.status_code, resp.json()["type"]) == (422, "InferenceFailed")


def test_large_bodies_are_answered_through_the_worker_path(server: InProcess) -> None:
    with in_process(max_request_bytes=1 << 22) as big:
        model = big.upload(identity(TensorProto.FLOAT, [None, None]))["model_id"]
        x = np.ones((64, 512), np.float32)  # over OFFLOAD_BYTES as JSON and as output
        reply = infer(big, f"/v2/models/{model}/infer", {"inputs": [fp32("x", x)]}).json()
        assert reply["outputs"][0]["shape"] == [64, 512]


def test_an_unsupported_path_is_a_404_whose_message_is_bounded(server: InProcess) -> None:
    """Other /v2 paths answered a 404 quoting the whole path: 10,000 characters of a request
    line came back in the message, past the 1 KiB every other error message is cut to."""
    resp = server.attested.get("/v2/shm/" + "a" * 10_000)
    assert resp.status_code == 404
    message = resp.json()["error"]
    assert message.startswith("/v2/shm/aaa") and message.endswith("...")
    assert len(message) <= MAX_MESSAGE
    assert server.attested.get("/v2/trace/setting").json() == {
        "error": "/v2/trace/setting is not supported here"
    }
