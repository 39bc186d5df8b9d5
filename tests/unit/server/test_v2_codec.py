"""The v2 codec: JSON and binary tensors, request parsing, reply encoding, and its errors.

Requests are also built, and replies read back, with tritonclient's own helpers, so the codec
is checked against an independent implementation of the protocol.
"""

from __future__ import annotations

import json
import struct
import sys
import threading
from typing import Any

import numpy as np
import pytest

from blindai.errors import InferenceFailed, InvalidInput
from blindai.server import _json
from blindai.server.protocols.v2.codec import (
    HEADER_LENGTH,
    InferRequest,
    RequestedOutput,
    encode_response,
    parse_request,
)
from blindai.server.protocols.v2.datatypes import datatype_for, dtype_for
from blindai.server.protocols.v2.tensors import (
    array_from_binary,
    array_from_json,
    array_to_binary,
    array_to_json,
)

NUMERIC = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}  # fmt: skip


def request(inputs: list[dict[str, Any]], blob: bytes = b"", **extra: Any) -> InferRequest:
    head = json.dumps({"inputs": inputs, **extra}).encode()
    return parse_request(head + blob, str(len(head)) if blob else None)


def fp32(name: str = "x", shape: list[int] | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "datatype": "FP32", "shape": [1, 3] if shape is None else shape, **extra}


# -- datatypes ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*NUMERIC, "BYTES"])
def test_datatypes_round_trip(name: str) -> None:
    assert datatype_for(dtype_for(name)) == name


def test_bf16_uses_ml_dtypes() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    assert dtype_for("BF16") == np.dtype(ml_dtypes.bfloat16)
    assert datatype_for(np.dtype(ml_dtypes.bfloat16)) == "BF16"
    assert datatype_for(None, "tensor(bfloat16)") == "BF16"


def test_bf16_without_ml_dtypes_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # makes the import fail
    with pytest.raises(InvalidInput, match="ml_dtypes"):
        dtype_for("BF16")


@pytest.mark.parametrize("bad", ["FP8", "fp32", "", None, 3])
def test_unknown_datatype(bad: object) -> None:
    with pytest.raises(InvalidInput, match="unknown datatype"):
        dtype_for(bad)


def test_unsupported_onnx_type_is_named_in_metadata() -> None:
    assert datatype_for(None, "tensor(complex64)") == "tensor(complex64)"


# -- JSON data ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(NUMERIC))
def test_json_data_flat_and_nested(name: str) -> None:
    dtype = np.dtype(NUMERIC[name])
    values = (
        [[True, False, True], [False, True, True]] if name == "BOOL" else [[0, 1, 2], [3, 4, 5]]
    )
    want = np.array(values, dtype=dtype)
    for data in (values, [v for row in values for v in row]):
        got = array_from_json(data, dtype, (2, 3), "x")
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    ("dtype", "data"),
    [
        (np.uint64, [0, 2**64 - 1, 2**63, 1]),  # numpy alone would go through float64
        (np.int64, [-(2**63), 2**63 - 1, 0, 1]),
        (np.uint8, [0, 255, 1, 2]),
        (np.int8, [-128, 127, 0, 1]),
    ],
)
def test_json_integers_are_exact_at_the_limits(dtype: type[np.generic], data: list[int]) -> None:
    got = array_from_json(data, np.dtype(dtype), (4,), "x")
    assert got.tolist() == data


def test_json_integral_floats_are_accepted_for_integers() -> None:
    np.testing.assert_array_equal(
        array_from_json([1.0, 2.0], np.dtype(np.int32), (2,), "x"), [1, 2]
    )


@pytest.mark.parametrize(
    ("dtype", "data", "message"),
    [
        (np.uint8, [256, 0], "out of range"),
        (np.uint8, [-1, 0], "out of range"),
        (np.int8, [-129, 0], "out of range"),
        (np.uint64, [2**64, 0], "out of range"),
        (np.uint64, [-1, 2**64 - 1], "out of range"),
        (np.int64, [2**63, -1], "out of range"),
        (np.int32, [1.5, 2], "must be integers"),
        (np.uint64, [0.5, 2**64 - 1], "must be integers"),
        (np.int32, [float("nan"), 1], "out of range"),
        (np.int32, [True, False], "do not fit"),
        (np.int32, ["1", "2"], "do not fit"),
        (np.bool_, [1, 0], "do not fit"),
        (np.float32, [True, False], "do not fit"),
        (np.float32, ["1", "2"], "do not fit"),
        (np.float16, [1e10, 0], "out of range"),
    ],
)
def test_json_values_that_do_not_fit(
    dtype: type[np.generic], data: list[Any], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        array_from_json(data, np.dtype(dtype), (2,), "x")


def test_json_infinities_are_kept_in_floats() -> None:
    got = array_from_json([float("inf"), float("-inf")], np.dtype(np.float16), (2,), "x")
    assert np.isinf(got).all()


@pytest.mark.parametrize(
    ("data", "shape", "message"),
    [
        ([1, 2, 3], (2, 2), "3 element"),
        ([[1, 2], [3]], (3,), "regular nested list"),
        ({"a": 1}, (1,), "must be a list"),
        ("123", (3,), "must be a list"),
    ],
)
def test_json_shape_errors(data: object, shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        array_from_json(data, np.dtype(np.float32), shape, "x")


def test_json_empty_tensor() -> None:
    got = array_from_json([], np.dtype(np.int64), (0, 3), "x")
    assert got.shape == (0, 3) and got.dtype == np.int64


def test_json_strings() -> None:
    got = array_from_json([["a", "é"], ["", "z"]], np.dtype(object), (4,), "x")
    assert got.tolist() == ["a", "é", "", "z"]
    with pytest.raises(InvalidInput, match="strings"):
        array_from_json(["a", 1], np.dtype(object), (2,), "x")


def test_json_strings_with_a_lone_surrogate_are_refused() -> None:
    # simdjson and orjson refuse the escape; the standard library, which reads what they
    # refuse, keeps it, and encoding the string later raised (a 500 for a pipeline's text)
    body = b'{"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", '
    for escaped in (b'"\\ud800"', b'"a\\udfffb"'):
        with pytest.raises(InvalidInput, match="input 'text': BYTES data must be Unicode text"):
            parse_request(body + b'"data": ["ok", ' + escaped + b"]}]}", None)
    parsed = parse_request(body + b'"data": ["ok", "\\ud83d\\ude00"]}]}', None)
    assert parsed.inputs[0][1].tolist() == ["ok", "\U0001f600"]  # a surrogate pair is one


# -- binary data ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(NUMERIC))
def test_binary_round_trip(name: str) -> None:
    dtype = np.dtype(NUMERIC[name])
    array = (np.arange(6) % 2).astype(dtype).reshape(2, 3)
    blob = array_to_binary(array)
    assert blob == array.tobytes()
    np.testing.assert_array_equal(array_from_binary(memoryview(blob), dtype, (2, 3), "x"), array)


def test_binary_size_must_match_the_shape() -> None:
    with pytest.raises(InvalidInput, match="needs 12"):
        array_from_binary(memoryview(b"\0" * 8), np.dtype(np.float32), (1, 3), "x")


def test_binary_unaligned_blob_is_copied() -> None:
    data = memoryview(b"\0" + np.arange(3, dtype=np.float64).tobytes())[1:]
    got = array_from_binary(data, np.dtype(np.float64), (3,), "x")
    assert got.flags.aligned
    np.testing.assert_array_equal(got, [0, 1, 2])


def test_binary_bool_bytes_must_be_0_or_1() -> None:
    with pytest.raises(InvalidInput, match="0 or 1"):
        array_from_binary(memoryview(b"\x01\x02"), np.dtype(bool), (2,), "x")


def length_prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def test_binary_bytes_round_trip() -> None:
    blob = length_prefixed(b"ab", b"", "é".encode())
    got = array_from_binary(memoryview(blob), np.dtype(object), (3,), "x")
    assert got.tolist() == ["ab", "", "é"]
    assert array_to_binary(got) == blob


@pytest.mark.parametrize(
    ("blob", "shape", "message"),
    [
        (length_prefixed(b"ab")[:-1], (1,), "runs past the end"),
        (length_prefixed(b"ab") + b"\0\0", (2,), "inside a length prefix"),
        (length_prefixed(b"a", b"b"), (3,), r"2 elements given, shape \[3\] needs 3"),
        # stopped at the element past the shape's count, before the rest is read
        (length_prefixed(b"a", b"b") + b"\xff", (1,), r"more than 1 element given"),
        (length_prefixed(b""), (0,), r"more than 0 elements given"),
    ],
)
def test_binary_bytes_errors(blob: bytes, shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        array_from_binary(memoryview(blob), np.dtype(object), shape, "x")


def test_binary_bytes_that_are_not_utf8_stay_bytes() -> None:
    # an image or WAV file for a pipeline; model string inputs refuse them (test_dataplane)
    blob = length_prefixed(b"\x89PNG\xff", b"text")
    got = array_from_binary(memoryview(blob), np.dtype(object), (2,), "x")
    assert got.tolist() == [b"\x89PNG\xff", "text"]
    assert [type(x) for x in got] == [bytes, str]  # not views of the request's body
    assert array_to_binary(got) == blob


def test_json_output_of_non_utf8_bytes_is_refused() -> None:
    with pytest.raises(InferenceFailed, match="binary_data"):
        array_to_json(np.array([b"\xff"], dtype=object), "y")
    assert array_to_json(np.array([b"ok", "s"], dtype=object), "y") == ["ok", "s"]


# -- requests -------------------------------------------------------------------------------


def test_empty_and_scalar_shapes() -> None:
    parsed = request([fp32(shape=[0, 2**40], data=[]), fp32("s", shape=[], data=[7])])
    assert [a.shape for _, a in parsed.inputs] == [(0, 2**40), ()]


def test_json_request() -> None:
    parsed = request([fp32(data=[1, 2, 3])], id="r1")
    assert parsed.id == "r1"
    assert parsed.outputs is None and parsed.binary_output is False
    [(name, array)] = parsed.inputs
    assert name == "x" and array.dtype == np.float32 and array.shape == (1, 3)


def test_mixed_json_and_binary_inputs_in_order() -> None:
    a, b = np.arange(3, dtype=np.float32), np.arange(2, dtype=np.int64)
    parsed = request(
        [
            fp32("a", [1, 3], parameters={"binary_data_size": 12}),
            {"name": "j", "datatype": "BOOL", "shape": [1], "data": [True]},
            {
                "name": "b",
                "datatype": "INT64",
                "shape": [2],
                "parameters": {"binary_data_size": 16},
            },
        ],
        a.tobytes() + b.tobytes(),
    )
    got = dict(parsed.inputs)
    np.testing.assert_array_equal(got["a"], a.reshape(1, 3))
    np.testing.assert_array_equal(got["b"], b)
    assert got["j"].tolist() == [True]


def test_outputs_binary_flags() -> None:
    outputs = [
        {"name": "p", "parameters": {"binary_data": True}},
        {"name": "q", "parameters": {"binary_data": False}},
        {"name": "r"},
    ]
    parsed = request([fp32(data=[1, 2, 3])], outputs=outputs,
                     parameters={"binary_data_output": True})  # fmt: skip
    assert parsed.outputs == [
        RequestedOutput("p", True),
        RequestedOutput("q", False),
        RequestedOutput("r", True),
    ]
    assert request([fp32(data=[1, 2, 3])], outputs=[{"name": "r"}]).outputs == [
        RequestedOutput("r", False)
    ]


def test_unknown_request_parameters_are_ignored() -> None:
    parsed = request([fp32(data=[1, 2, 3])], parameters={"priority": 3, "custom": "x"})
    assert parsed.binary_output is False


@pytest.mark.parametrize(
    ("body", "header", "message"),
    [
        (b"{nope", None, "not valid JSON"),
        (b"\xff\xfe", None, "not valid JSON"),
        (b"[]", None, "JSON object"),
        (b"{}", None, "inputs must be a non-empty list"),
        (b'{"inputs": []}', None, "inputs must be a non-empty list"),
        (b"{}", "abc", HEADER_LENGTH),
        (b"{}", "-1", HEADER_LENGTH),
        (b"{}", "3", HEADER_LENGTH),
        # int() reads other scripts' digits and refuses over 4300 digits: both were a 500
        (b"{}", "\xb2", HEADER_LENGTH),
        (b"{}", "\u0661", HEADER_LENGTH),
        (b"{}", "9" * 5000, HEADER_LENGTH),
        (b'{"inputs": [1]}', None, r"inputs\[0\] must be a JSON object"),
    ],
)
def test_malformed_bodies(body: bytes, header: str | None, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_request(body, header)


@pytest.mark.parametrize(
    ("inputs", "blob", "extra", "message"),
    [
        ([fp32(parameters={"binary_data_size": 12})], b"\0" * 8, {}, "runs past the end"),
        ([fp32(parameters={"binary_data_size": 12})], b"\0" * 13, {}, "1 byte of binary data"),
        ([fp32(parameters={"binary_data_size": 12})], b"\0" * 14, {}, "2 bytes of binary data"),
        ([fp32(parameters={"binary_data_size": -1})], b"\0", {}, "non-negative"),
        ([fp32(parameters={"binary_data_size": True})], b"\0", {}, "non-negative"),
        ([fp32(parameters={"binary_data_size": 8})], b"\0" * 8, {}, "needs 12"),
        ([fp32(data=[1, 2, 3], parameters={"binary_data_size": 12})], b"\0" * 12, {}, "one"),
        ([fp32()], b"", {}, "exactly one"),
        ([fp32(data=[1, 2, 3], parameters={"shared_memory_region": "r"})], b"", {}, "shared"),
        ([fp32(data=[1, 2, 3], parameters=[1])], b"", {}, "parameters must be a JSON object"),
        ([fp32(shape=[1, -3], data=[1, 2, 3])], b"", {}, "shape"),
        ([fp32(shape=[True], data=[1])], b"", {}, "shape"),
        ([fp32(shape=[0, 2**63], data=[])], b"", {}, "larger than"),
        ([fp32(shape=[0, 2**49], parameters={"binary_data_size": 0})], b"", {}, "larger than"),
        ([fp32(shape=[1] * 33, data=[1])], b"", {}, "33 dimensions, more than 32"),
        ([{"datatype": "FP32", "shape": [1], "data": [1]}], b"", {}, "name"),
        ([fp32(data=[1, 2, 3])], b"", {"id": 5}, "id must be a string"),
        ([fp32(data=[1, 2, 3])], b"", {"outputs": {"y": 1}}, "outputs must be a list"),
        ([fp32(data=[1, 2, 3])], b"", {"outputs": [{"name": "y"}, {"name": "y"}]}, "twice"),
        ([fp32(data=[1, 2, 3])], b"", {"outputs": [{}]}, "name"),
        ([fp32(data=[1, 2, 3])], b"",
         {"outputs": [{"name": "y", "parameters": {"classification": 0}}]}, "classification"),
        ([fp32(data=[1, 2, 3])], b"",
         {"outputs": [{"name": "y", "parameters": {"shared_memory_region": "r"}}]},
         "shared memory"),
        ([fp32(data=[1, 2, 3])], b"",
         {"outputs": [{"name": "y", "parameters": {"binary_data": "yes"}}]}, "boolean"),
        ([fp32(data=[1, 2, 3])], b"", {"parameters": {"binary_data_output": 1}}, "boolean"),
    ],
)  # fmt: skip
def test_malformed_requests(
    inputs: list[dict[str, Any]], blob: bytes, extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        request(inputs, blob, **extra)


@pytest.mark.parametrize(
    ("extra", "sentence"),
    [(1, "1 byte of binary data belongs to no input"), (2, "2 bytes of binary data belong to no")],
)
def test_left_over_bytes_are_counted_grammatically(extra: int, sentence: str) -> None:
    with pytest.raises(InvalidInput, match=sentence):
        request([fp32(parameters={"binary_data_size": 12})], b"\0" * (12 + extra))


def test_binary_input_without_the_header_is_refused() -> None:
    head = json.dumps({"inputs": [fp32(parameters={"binary_data_size": 12})]}).encode()
    with pytest.raises(InvalidInput, match=f"needs the {HEADER_LENGTH} header"):
        parse_request(head + b"\0" * 12, None)


# -- replies --------------------------------------------------------------------------------

OUTPUTS: list[tuple[str, np.ndarray]] = [
    ("sum", np.arange(6, dtype=np.float32).reshape(2, 3)),
    ("idx", np.array([[2], [0]], dtype=np.int64)),
]


def reply(
    req: InferRequest, outputs: list[tuple[str, np.ndarray]] = OUTPUTS
) -> tuple[dict[str, Any], bytes]:
    body, head = encode_response(req, outputs, model_name="m", model_version="v1")
    cut = len(body) if head is None else head
    return json.loads(body[:cut]), body[cut:]


def test_json_reply() -> None:
    doc, blobs = reply(InferRequest("r", [], None, False))
    assert blobs == b""
    assert doc == {
        "model_name": "m", "model_version": "v1", "id": "r",
        "outputs": [
            {"name": "sum", "datatype": "FP32", "shape": [2, 3], "data": [0, 1, 2, 3, 4, 5]},
            {"name": "idx", "datatype": "INT64", "shape": [2, 1], "data": [2, 0]},
        ],
    }  # fmt: skip


def test_binary_reply_for_all() -> None:
    doc, blobs = reply(InferRequest(None, [], None, True))
    assert "id" not in doc
    assert [o["parameters"] for o in doc["outputs"]] == [
        {"binary_data_size": 24},
        {"binary_data_size": 16},
    ]
    assert all("data" not in o for o in doc["outputs"])
    assert blobs == OUTPUTS[0][1].tobytes() + OUTPUTS[1][1].tobytes()


def test_requested_outputs_in_requested_order() -> None:
    # the data plane returns the outputs asked for, in that order; each keeps its own encoding
    wanted = [RequestedOutput("idx", True), RequestedOutput("sum", False)]
    doc, blobs = reply(InferRequest(None, [], wanted, False), OUTPUTS[::-1])
    assert [o["name"] for o in doc["outputs"]] == ["idx", "sum"]
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 16}
    assert doc["outputs"][1]["data"] == [0, 1, 2, 3, 4, 5]
    assert blobs == OUTPUTS[1][1].tobytes()


def test_non_finite_floats_in_json_replies() -> None:
    out = [("f", np.array([np.nan, np.inf, -np.inf], dtype=np.float32))]
    body, head = encode_response(InferRequest(None, [], None, False), out, model_name="m",
                                 model_version="v")  # fmt: skip
    assert head is None
    assert b"[NaN,Infinity,-Infinity]" in body  # as Python's json (and tritonclient) read them
    assert np.isnan(json.loads(body)["outputs"][0]["data"][0])


def test_bytes_output() -> None:
    out = [("s", np.array(["a", "bc"], dtype=object))]
    body, head = encode_response(InferRequest(None, [], None, True), out, model_name="m",
                                 model_version="v")  # fmt: skip
    assert head is not None and body[head:] == length_prefixed(b"a", b"bc")
    body, head = encode_response(InferRequest(None, [], None, False), out, model_name="m",
                                 model_version="v")  # fmt: skip
    assert head is None and json.loads(body)["outputs"][0]["data"] == ["a", "bc"]


# -- against tritonclient's own encoder and decoder ------------------------------------------


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_requests_and_replies(binary: bool) -> None:
    httpclient = pytest.importorskip("tritonclient.http")
    from tritonclient.http._utils import _get_inference_request

    arrays: dict[str, np.ndarray] = {
        name: (np.arange(6) % 2).astype(t).reshape(2, 3) for name, t in NUMERIC.items()
    }
    arrays["BYTES"] = np.array([[b"a", b"b", b"c"], [b"d", b"", b"f"]], dtype=object)
    inputs = []
    for name, array in arrays.items():
        tensor = httpclient.InferInput(name, [2, 3], name)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in arrays]
    body, json_size = _get_inference_request(inputs, "id-7", outputs, 0, False, False, 0,
                                             None, None)  # fmt: skip
    parsed = parse_request(body, None if json_size is None else str(json_size))
    assert parsed.id == "id-7"
    assert [o.binary for o in parsed.outputs or ()] == [binary] * len(arrays)
    echoed = [(n, a) for n, a in parsed.inputs]
    for (name, got), want in zip(echoed, arrays.values(), strict=True):
        assert got.shape == (2, 3)
        if name == "BYTES":
            assert got.tolist() == [[x.decode() for x in row] for row in want.tolist()]
        else:
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
    reply_body, head = encode_response(parsed, echoed, model_name="m", model_version="v")
    result = httpclient.InferResult.from_response_body(reply_body, header_length=head)
    assert result.get_response()["id"] == "id-7"
    for name, want in arrays.items():
        got = result.as_numpy(name)
        if name == "BYTES":
            assert [x if isinstance(x, bytes) else x.encode() for x in got.ravel()] == list(
                want.ravel()
            )
        else:
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)


def test_tritonclient_bf16_binary() -> None:
    httpclient = pytest.importorskip("tritonclient.http")
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from tritonclient.http._utils import _get_inference_request

    array = np.array([1.5, -2.0, 3.25], dtype=ml_dtypes.bfloat16)
    tensor = httpclient.InferInput("x", [3], "BF16")
    tensor.set_data_from_numpy(array, binary_data=True)
    body, json_size = _get_inference_request([tensor], "", None, 0, False, False, 0, None, None)
    parsed = parse_request(body, str(json_size))
    [(_, got)] = parsed.inputs
    assert got.dtype == array.dtype
    np.testing.assert_array_equal(got.astype(np.float32), array.astype(np.float32))
    reply_body, head = encode_response(parsed, parsed.inputs, model_name="m", model_version="v")
    result = httpclient.InferResult.from_response_body(reply_body, header_length=head)
    assert result.get_response()["outputs"][0]["datatype"] == "BF16"
    np.testing.assert_array_equal(result.as_numpy("x").astype(np.float32), array.astype(np.float32))


def test_classification_is_parsed() -> None:
    """The classification extension's count travels with the requested output."""
    doc = {"inputs": [fp32(data=[1, 2, 3])]}
    doc["outputs"] = [{"name": "y", "parameters": {"classification": 2}}, {"name": "z"}]
    parsed = parse_request(json.dumps(doc).encode(), None)
    assert [(o.name, o.classification) for o in parsed.outputs or ()] == [("y", 2), ("z", None)]


# -- orjson: the same values as the standard library's JSON -----------------------------------


@pytest.mark.parametrize("name", NUMERIC)
def test_json_replies_read_back_to_the_same_values_of_every_type(name: str) -> None:
    dtype = np.dtype(NUMERIC[name])
    rng = np.random.default_rng(3)
    if dtype.kind == "f":
        span = 4 if dtype.itemsize == 2 else 30
        scale = 10.0 ** rng.integers(-span, span, (4, 5))
        values = (rng.standard_normal((4, 5)) * scale).astype(dtype)
        values[0, :3] = [np.finfo(dtype).max, np.finfo(dtype).tiny, -0.0]
    elif dtype.kind == "b":
        values = rng.integers(0, 2, (4, 5)).astype(bool)
    else:
        info = np.iinfo(dtype)
        values = rng.integers(info.min, info.max, (4, 5), dtype=dtype, endpoint=True)
        values[0, :2] = [info.min, info.max]
    body, _ = encode_response(InferRequest(None, [], None, False), [("y", values)],
                              model_name="m", model_version="v")  # fmt: skip
    data = json.loads(body)["outputs"][0]["data"]
    back = np.array(data, dtype=dtype).reshape(values.shape)
    assert back.tobytes() == values.tobytes()
    assert data == values.ravel().tolist() or dtype.kind == "f"  # floats: shortest text


def test_json_requests_with_nan_tokens_and_big_integers_still_parse() -> None:
    # Python's json (tritonclient's) writes NaN and Infinity; orjson refuses them
    body = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[2],"data":[NaN,-Infinity]}]}'
    ((_, x),) = parse_request(body, None).inputs
    assert np.isnan(x[0]) and x[1] == -np.inf
    big = b'{"inputs":[{"name":"x","datatype":"UINT64","shape":[1],"data":[18446744073709551616]}]}'
    with pytest.raises(InvalidInput, match="out of range"):
        parse_request(big, None)
    with pytest.raises(InvalidInput, match="not valid JSON"):
        parse_request(b'{"inputs": [1,]}', None)


# -- input data read by simdjson, without a Python object per number -------------------------


def _by_list_path(data: list[Any], name: str, shape: list[int]) -> np.ndarray:
    return array_from_json(data, dtype_for(name), tuple(shape), "input 'x'")


@pytest.mark.parametrize("name", ["FP16", "FP32", "FP64"])
def test_flat_float_data_is_read_as_numbers_bit_for_bit(name: str) -> None:
    rng = np.random.default_rng(7)
    data = [*rng.standard_normal(300).tolist(), 0, -3, 65504, 1e-8, -0.0, 2.5e-5, 1]
    body = json.dumps(
        {"inputs": [{"name": "x", "datatype": name, "shape": [len(data)], "data": data}]}
    ).encode()
    parsed = _json.loads_request(body)["inputs"][0]["data"]
    assert isinstance(parsed, _json.Numbers)
    assert parsed.floats() is not None  # the fast path, not a fallback to Python lists
    got = parse_request(body, None).inputs[0][1]
    want = _by_list_path(data, name, [len(data)])
    assert got.dtype == want.dtype == np.dtype(NUMERIC[name])
    assert got.tobytes() == want.tobytes()


def test_nested_float_data_falls_back_to_lists() -> None:
    data = [[1.5, 2], [3, 4.25]]
    body = json.dumps({"inputs": [fp32(shape=[2, 2], data=data)]}).encode()
    assert _json.loads_request(body)["inputs"][0]["data"].floats() is None
    got = parse_request(body, None).inputs[0][1]
    np.testing.assert_array_equal(got, np.array(data, np.float32))


@pytest.mark.parametrize(
    ("data", "shape"),
    [
        ([[1, 2, 3], [4]], [2, 2]),  # ragged, with as many numbers as the shape needs
        ([1, [2, 3]], [3]),
        ([True, 1.0], [2]),  # numpy reads a mix as numbers: accepted, as before
        ([True, False], [2]),
        ([None, 1.0], [2]),
        (["1", 1.0], [2]),
        ([{"a": 1}, 1.0], [2]),
        ([70000.0], [1]),  # out of range for FP16
        ([1e39], [1]),  # out of range for FP32
        ([1, 2], [3]),
    ],
)
@pytest.mark.parametrize("name", ["FP16", "FP32"])
def test_odd_float_data_is_read_as_by_the_list_path(
    data: list[Any], shape: list[int], name: str
) -> None:
    body = json.dumps(
        {"inputs": [{"name": "x", "datatype": name, "shape": shape, "data": data}]}
    ).encode()
    try:
        want: np.ndarray | str = _by_list_path(data, name, shape)
    except InvalidInput as exc:
        want = str(exc)
    try:
        got: np.ndarray | str = parse_request(body, None).inputs[0][1]
    except InvalidInput as exc:
        got = str(exc)
    if isinstance(want, str):
        assert got == want
    else:
        assert isinstance(got, np.ndarray) and got.tobytes() == want.tobytes()


def test_integer_data_is_read_exactly() -> None:
    big = 2**63 - 1
    body = json.dumps(
        {"inputs": [{"name": "x", "datatype": "INT64", "shape": [2], "data": [big, -big]}]}
    ).encode()
    assert _json.loads_request(body)["inputs"][0]["data"].integers() is not None
    got = parse_request(body, None).inputs[0][1]
    assert got.dtype == np.int64 and got.tolist() == [big, -big]  # no detour through float64


LIVENESS_S = 60.0
"""A bound far above the linear parse (under a second here), far below the quadratic one."""


def _parsed_within(body: bytes, seconds: float) -> Any:
    found: list[Any] = []
    done = threading.Event()

    def parse() -> None:
        found.append(_json.loads_request(body))
        done.set()

    threading.Thread(target=parse, daemon=True).start()
    assert done.wait(seconds), "the request was still being parsed"
    return found[0]


@pytest.mark.parametrize(
    "doc",
    [
        # simdjson's Array[i] and Object[key] walk from the start: 500 000 inputs (31 MB)
        # ran for hours, 200 000 keys for minutes (more inputs than MAX_TENSORS are refused
        # before they are read, below)
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.5]}] * 4096},
        {**{f"k{i}": i for i in range(200_000)}, "inputs": [{"name": "x", "data": [1, 2]}]},
        {"inputs": [{**{f"k{i}": i for i in range(200_000)}, "name": "x", "data": [1, 2]}]},
    ],
    ids=["many-inputs", "many-keys", "many-tensor-keys"],
)
def test_requests_of_many_items_parse_in_linear_time(doc: dict[str, Any]) -> None:
    got = _parsed_within(json.dumps(doc).encode(), LIVENESS_S)
    for tensor in got["inputs"]:
        data = tensor["data"]
        tensor["data"] = data.as_list() if isinstance(data, _json.Numbers) else data
    assert got == doc


@pytest.mark.parametrize("nan", [False, True], ids=["simdjson", "standard-library"])
def test_a_request_lists_at_most_max_tensors_inputs_and_outputs(nan: bool) -> None:
    """Each input costs Python work to read and check: 200 000 of them (12 MB) took 2.6 s of a
    worker; now the count is refused before they are read (a NaN token sends the document
    through the standard library's parser, which the codec checks after)."""
    one = {"name": "x", "datatype": "FP32", "shape": [1], "data": ["NaN" if nan else 1.0]}
    many = [{**one, "name": f"x{i}"} for i in range(_json.MAX_TENSORS + 1)]

    def body(doc: dict[str, Any]) -> bytes:
        return json.dumps(doc).replace('"NaN"', "NaN").encode()

    with pytest.raises(InvalidInput, match=f"lists {_json.MAX_TENSORS + 1} inputs, more than"):
        parse_request(body({"inputs": many}), None)
    assert len(parse_request(body({"inputs": many[:-1]}), None).inputs) == _json.MAX_TENSORS
    outputs = [{"name": f"y{i}"} for i in range(_json.MAX_TENSORS + 1)]
    with pytest.raises(InvalidInput, match=f"lists {_json.MAX_TENSORS + 1} outputs, more than"):
        parse_request(body({"inputs": [one], "outputs": outputs}), None)


_SATURATING = """
import sys
from blindai.server.protocols.v2.codec import parse_request
n = 0xFFFFFF + 1  # one more than simdjson's 24-bit array length holds
body = b'{"inputs":[{"name":"x","datatype":"INT64","shape":[%d],"data":[' % n
body += b"0," * (n - 1) + b'7]}]}'
(name, array), = parse_request(body, None).inputs
print(array.size, int(array[-1]), int(array[:-1].max()))
"""


def test_a_json_array_longer_than_simdjsons_length_field_is_read_whole():
    """simdjson keeps an array's length in 24 bits; pysimdjson sized the list it converted an
    array to by that length and then wrote every element into it: past its end, a heap
    overflow (a 64 MiB request of 33 million numbers aborted the process, 'free(): invalid
    size'); this one came out as '16777215 elements given'. Run in a child process: before
    the fix, the overflow corrupted the heap of the process that parsed it."""
    import subprocess
    from pathlib import Path

    src = str(Path(__file__).resolve().parents[3] / "src")
    done = subprocess.run(
        [sys.executable, "-c", _SATURATING],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(0xFFFFFF + 1), "7", "0"]


def test_a_request_holds_at_most_max_strings_bytes_elements() -> None:
    """Each BYTES element becomes a Python object (about 70 bytes beside its characters): 64 MiB
    of two-character strings took 857 MB and 10 s of a worker to decode. A request's BYTES
    elements, all inputs together, are counted from their declared shapes first."""
    from blindai.server.protocols.v2.tensors import MAX_STRINGS

    half = MAX_STRINGS // 2
    head = {
        "inputs": [
            {
                "name": "a",
                "datatype": "BYTES",
                "shape": [half],
                "parameters": {"binary_data_size": 0},
            },
            {
                "name": "b",
                "datatype": "BYTES",
                "shape": [half + 1],
                "parameters": {"binary_data_size": 0},
            },
        ]
    }
    head["inputs"][0]["parameters"]["binary_data_size"] = 5 * half
    body = json.dumps(head).encode()
    blob = b"\x01\x00\x00\x00x" * half  # b's strings are refused before they are read
    with pytest.raises(InvalidInput, match=f"hold {2 * half + 1} BYTES elements, more than"):
        parse_request(body + blob, str(len(body)))
    doc = {
        "inputs": [{"name": "a", "datatype": "BYTES", "shape": [MAX_STRINGS + 1], "data": ["x"]}]
    }
    with pytest.raises(InvalidInput, match="BYTES elements, more than"):
        parse_request(json.dumps(doc).encode(), None)
    doc = {"inputs": [{"name": "a", "datatype": "BYTES", "shape": [2], "data": ["x", "y"]}]}
    assert list(parse_request(json.dumps(doc).encode(), None).inputs[0][1]) == ["x", "y"]


@pytest.mark.parametrize(
    "extra",
    [b',"\\u0000":1', b',"a\\u0000b":[1]', b',"inputs\\u0000":[]'],
    ids=["nul", "nul-inside", "inputs-and-nul"],
)
def test_a_key_holding_nul_is_read_like_any_unknown_key(extra: bytes) -> None:
    """simdjson listed such a key, then looked it up by name as a C string cut at the NUL
    (KeyError: the server's 500; or another key's value, for ``inputs\\u0000``)."""
    tensor = b'{"name":"x","shape":[2],"datatype":"FP32","data":[1,2]' + extra + b"}"
    parsed = parse_request(b'{"inputs":[' + tensor + b"]" + extra + b"}", None)
    assert [name for name, _ in parsed.inputs] == ["x"]
    np.testing.assert_array_equal(parsed.inputs[0][1], np.array([1, 2], np.float32))
