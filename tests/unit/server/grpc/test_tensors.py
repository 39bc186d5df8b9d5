"""gRPC ModelInfer tensors: typed contents and raw_input_contents to numpy, and back."""

from __future__ import annotations

import numpy as np
import pytest

from blindai.errors import InvalidInput
from blindai.server._json import MAX_TENSORS
from blindai.server.protocols.grpc._generated import grpc_service_pb2 as pb
from blindai.server.protocols.grpc.tensors import GrpcRequest, decode, encode
from blindai.server.protocols.v2.tensors import array_to_binary

CONTENTS = {
    "BOOL": ("bool_contents", np.bool_, [True, False]),
    "INT8": ("int_contents", np.int8, [-128, 127]),
    "INT16": ("int_contents", np.int16, [-32768, 32767]),
    "INT32": ("int_contents", np.int32, [-(2**31), 2**31 - 1]),
    "INT64": ("int64_contents", np.int64, [-(2**63), 2**63 - 1]),
    "UINT8": ("uint_contents", np.uint8, [0, 255]),
    "UINT16": ("uint_contents", np.uint16, [0, 65535]),
    "UINT32": ("uint_contents", np.uint32, [0, 2**32 - 1]),
    "UINT64": ("uint64_contents", np.uint64, [0, 2**64 - 1]),
    "FP32": ("fp32_contents", np.float32, [1.5, -0.25]),
    "FP64": ("fp64_contents", np.float64, [1e300, -1e-300]),
}


def request(*tensors, raw=None, outputs=()):
    msg = pb.ModelInferRequest(model_name="m", id="req-1")
    for name, datatype, shape, field, values in tensors:
        t = msg.inputs.add(name=name, datatype=datatype)
        t.shape.extend(shape)
        if field:
            getattr(t.contents, field).extend(values)
    if raw is not None:
        msg.raw_input_contents.extend(raw)
    for name, params in outputs:
        o = msg.outputs.add(name=name)
        for key, value in params.items():
            o.parameters[key].int64_param = value
    return msg


@pytest.mark.parametrize("datatype", list(CONTENTS))
def test_typed_contents(datatype: str) -> None:
    field, dtype, values = CONTENTS[datatype]
    got = decode(request(("x", datatype, [2], field, values)))
    ((name, array),) = got.inputs
    assert name == "x"
    assert array.dtype == dtype
    np.testing.assert_array_equal(array, np.array(values, dtype=dtype))
    assert got.id == "req-1"
    assert got.outputs is None


@pytest.mark.parametrize("datatype", list(CONTENTS))
def test_raw_contents(datatype: str) -> None:
    _, dtype, values = CONTENTS[datatype]
    x = np.array(values, dtype=dtype).reshape(1, 2)
    got = decode(request(("x", datatype, [1, 2], None, None), raw=[bytes(array_to_binary(x))]))
    np.testing.assert_array_equal(got.inputs[0][1], x)


def test_bytes_and_half_precision() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    words = np.array(["héllo", ""], dtype=object)
    half = np.array([0.5, -2], dtype=np.float16)
    brain = np.array([1.5, 3], dtype=ml_dtypes.bfloat16)
    got = decode(
        request(
            ("w", "BYTES", [2], None, None),
            ("h", "FP16", [2], None, None),
            ("b", "BF16", [2], None, None),
            raw=[bytes(array_to_binary(a)) for a in (words, half, brain)],
        )
    )
    assert list(got.inputs[0][1]) == ["héllo", ""]
    np.testing.assert_array_equal(got.inputs[1][1], half)
    assert got.inputs[2][1].dtype == ml_dtypes.bfloat16
    typed = decode(request(("w", "BYTES", [1], "bytes_contents", [b"ok"])))
    assert list(typed.inputs[0][1]) == ["ok"]


@pytest.mark.parametrize(
    ("msg", "fragment"),
    [
        (request(("x", "INT8", [1], "int_contents", [128])), "out of range"),
        (request(("x", "UINT8", [1], "uint_contents", [256])), "out of range"),
        (
            request(("x", "FP32", [3], "fp32_contents", [1.0])),
            "1 element given, shape \\[3\\] needs 3",
        ),
        (request(("x", "FP32", [1], "fp64_contents", [1.0])), "fp64_contents"),
        (request(("x", "FP16", [1], None, None)), "raw_input_contents"),
        (request(("x", "NOPE", [1], None, None)), "unknown datatype"),
        (request(("x", "FP32", [2], None, None), raw=[b"\0" * 4]), "binary_data_size"),
        (
            request(("x", "FP32", [1], None, None), ("y", "FP32", [1], None, None), raw=[b"1234"]),
            "holds 1 blob for 2 inputs; when used, it carries every input",
        ),
        (request(("x", "FP32", [1 << 30, 1 << 30], None, None)), "larger"),
        (request(("x", "BYTES", [1], "bytes_contents", [b"\xff"])), "UTF-8"),
        (request(("", "FP32", [1], "fp32_contents", [1.0])), "name"),
        (pb.ModelInferRequest(model_name="m"), "non-empty"),
        (
            request(
                ("x", "FP32", [1], "fp32_contents", [1.0]), outputs=[("y", {"classification": 0})]
            ),
            "positive",
        ),
        (
            request(("x", "FP32", [1], "fp32_contents", [1.0]), outputs=[("y", {}), ("y", {})]),
            "twice",
        ),
    ],
)
def test_bad_requests_are_protocol_errors(msg, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        decode(msg)


def test_requested_outputs_and_classification() -> None:
    got = decode(
        request(
            ("x", "FP32", [1], "fp32_contents", [1.0]),
            outputs=[("y", {"classification": 3}), ("z", {})],
        )
    )
    assert [(o.name, o.classification) for o in got.outputs or ()] == [("y", 3), ("z", None)]


def test_encode_writes_raw_outputs_in_order() -> None:
    y = np.arange(6, dtype=np.int64).reshape(2, 3)
    s = np.array(["a", "bc"], dtype=object)
    reply = encode(
        GrpcRequest("id-9", [], None), [("y", y), ("s", s)], model_name="m", model_version="1"
    )
    assert (reply.model_name, reply.model_version, reply.id) == ("m", "1", "id-9")
    assert [(o.name, o.datatype, list(o.shape)) for o in reply.outputs] == [
        ("y", "INT64", [2, 3]),
        ("s", "BYTES", [2]),
    ]
    assert reply.raw_output_contents[0] == y.tobytes()
    assert reply.raw_output_contents[1] == b"\x01\0\0\0a\x02\0\0\0bc"


def test_a_shape_of_too_many_dimensions_is_counted_not_quoted() -> None:
    """The refusal quoted the whole shape: 200 000 dimensions made a 600 KB message, over the
    client's metadata limit, so the client got RESOURCE_EXHAUSTED instead of the reason."""
    with pytest.raises(InvalidInput, match="200000 dimensions, more than 32") as info:
        decode(request(("x", "FP32", [1] * 200_000, "fp32_contents", [1.0])))
    assert len(str(info.value)) < 100


def test_a_request_lists_at_most_max_tensors_inputs_and_outputs() -> None:
    """Each input costs Python work to check: 200 000 of them (12 MB) took seconds of a worker."""
    one = ("x", "FP32", [1], "fp32_contents", [1.0])
    many = [(f"x{i}", *one[1:]) for i in range(MAX_TENSORS + 1)]
    with pytest.raises(InvalidInput, match=f"lists {MAX_TENSORS + 1} inputs, more than"):
        decode(request(*many))
    assert len(decode(request(*many[:MAX_TENSORS])).inputs) == MAX_TENSORS
    outputs = [(f"y{i}", {}) for i in range(MAX_TENSORS + 1)]
    with pytest.raises(InvalidInput, match=f"lists {MAX_TENSORS + 1} outputs, more than"):
        decode(request(one, outputs=outputs))


def test_a_request_holds_at_most_max_strings_bytes_elements() -> None:
    """Each BYTES element becomes a Python object (about 70 bytes): they are counted from the
    declared shapes, all inputs together, before any is decoded."""
    from blindai.server.protocols.v2.tensors import MAX_STRINGS

    half = MAX_STRINGS // 2
    raw = [b"\x01\x00\x00\x00x" * half, b""]  # b's strings are refused before they are read
    with pytest.raises(InvalidInput, match=f"hold {2 * half + 1} BYTES elements, more than"):
        decode(
            request(("a", "BYTES", [half], None, []), ("b", "BYTES", [half + 1], None, []), raw=raw)
        )
    with pytest.raises(InvalidInput, match="BYTES elements, more than"):
        decode(request(("a", "BYTES", [MAX_STRINGS + 1], "bytes_contents", [b"x"])))
    # numbers do not count, and a request at the bound is decoded
    blob = b"\x01\x00\x00\x00x" * 2
    got = decode(
        request(
            ("a", "FP32", [MAX_STRINGS + 1], None, []),
            ("b", "BYTES", [2], None, []),
            raw=[np.zeros(MAX_STRINGS + 1, np.float32).tobytes(), blob],
        )
    )
    assert list(got.inputs[1][1]) == ["x", "x"]
