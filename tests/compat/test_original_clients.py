"""The original BlindAI clients from PyPI against our server, in simulation mode.

Each test runs blindai-preview 0.0.8 and blindai 0.6.3 (the `client` fixture) through
tests/compat/drivers/blindai_client.py and compares what the client got back with onnxruntime
run in-process on the same model. See docs/compat.md for what each client sends and expects.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnx.numpy_helper")
ort = pytest.importorskip("onnxruntime")
helper = onnx.helper
TP = onnx.TensorProto

pytestmark = pytest.mark.compat

Driver = Callable[[dict[str, Any]], dict[str, Any]]

# numpy dtype -> (ONNX element type, BlindAI ModelDatumType name)
DATUM_TYPES: dict[str, tuple[int, str]] = {
    "float32": (TP.FLOAT, "F32"),
    "float64": (TP.DOUBLE, "F64"),
    "int32": (TP.INT32, "I32"),
    "int64": (TP.INT64, "I64"),
    "uint32": (TP.UINT32, "U32"),
    "uint64": (TP.UINT64, "U64"),
    "uint8": (TP.UINT8, "U8"),
    "uint16": (TP.UINT16, "U16"),
    "int8": (TP.INT8, "I8"),
    "int16": (TP.INT16, "I16"),
    "bool": (TP.BOOL, "Bool"),
}


def _save(graph: Any, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by any onnxruntime >= 1.10
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def add_f32_model(path: Path) -> Path:
    """y = x + 1.5, x: float32[2, 3]."""
    x = helper.make_tensor_value_info("x", TP.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TP.FLOAT, [2, 3])
    c = helper.make_tensor("c", TP.FLOAT, [1], [1.5])
    node = helper.make_node("Add", ["x", "c"], ["y"])
    return _save(helper.make_graph([node], "add_f32", [x], [y], [c]), path)


def two_input_i64_model(path: Path) -> Path:
    """diff = a - b, prod = a * b; a, b: int64[n] (dynamic n)."""
    a = helper.make_tensor_value_info("a", TP.INT64, ["n"])
    b = helper.make_tensor_value_info("b", TP.INT64, ["n"])
    diff = helper.make_tensor_value_info("diff", TP.INT64, ["n"])
    prod = helper.make_tensor_value_info("prod", TP.INT64, ["n"])
    nodes = [
        helper.make_node("Sub", ["a", "b"], ["diff"]),
        helper.make_node("Mul", ["a", "b"], ["prod"]),
    ]
    return _save(helper.make_graph(nodes, "two_i64", [a, b], [diff, prod]), path)


def identity_all_types_model(path: Path) -> Path:
    """out_<dtype> = Identity(in_<dtype>) for every BlindAI datum type, each of shape [2, 2]."""
    inputs, outputs, nodes = [], [], []
    for dtype, (elem, _) in DATUM_TYPES.items():
        inputs.append(helper.make_tensor_value_info(f"in_{dtype}", elem, [2, 2]))
        outputs.append(helper.make_tensor_value_info(f"out_{dtype}", elem, [2, 2]))
        nodes.append(helper.make_node("Identity", [f"in_{dtype}"], [f"out_{dtype}"]))
    return _save(helper.make_graph(nodes, "identity_all", inputs, outputs), path)


def large_f32_model(path: Path, size: int) -> Path:
    """y = x + w with a float32[size] initializer w: a model of about 4 * size bytes."""
    x = helper.make_tensor_value_info("x", TP.FLOAT, [size])
    y = helper.make_tensor_value_info("y", TP.FLOAT, [size])
    values = (np.arange(size, dtype=np.float32) % 251) / 7
    w = onnx.numpy_helper.from_array(values, "w")
    node = helper.make_node("Add", ["x", "w"], ["y"])
    return _save(helper.make_graph([node], "large_f32", [x], [y], [w]), path)


def tensor(name: str, array: np.ndarray) -> dict[str, Any]:
    """A driver input spec."""
    return {
        "name": name,
        "dtype": str(array.dtype),
        "shape": list(array.shape),
        "data": array.ravel().tolist(),
    }


def reference(model: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """onnxruntime in-process: output name -> array."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def check_outputs(result: dict[str, Any], expected: dict[str, np.ndarray]) -> None:
    """The client's decoded outputs equal onnxruntime's: names, order, datum types, values."""
    assert "error" not in result, result
    outputs = result["outputs"]
    assert [o["node_name"] for o in outputs] == list(expected)
    for out, (name, want) in zip(outputs, expected.items(), strict=True):
        assert out["datum_type"] == DATUM_TYPES[str(want.dtype)][1], name
        assert out["fact"] == list(want.shape), name
        got = np.array(out["data"], dtype=out["dtype"]).reshape(out["shape"])
        assert got.dtype == want.dtype, name
        if want.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)


def results(driver_out: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-op results, after checking the driver used the client it was asked for."""
    assert driver_out["version"] in ("0.0.8", "0.6.3")
    assert "/.venv-compat/" in driver_out["module_file"]
    return list(driver_out["results"])


def is_client_http_error(result: dict[str, Any]) -> bool:
    return result.get("error") == "HTTPError" and 400 <= result.get("status", 0) < 500


def test_connect_upload_run_delete(
    client: str, blindai_server: Any, driver: Driver, tmp_path: Path
) -> None:
    model = add_f32_model(tmp_path / "add.onnx")
    x = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
    run = {"op": "run", "inputs": [tensor("x", x)]}
    ops = [
        {"op": "connect"},
        {"op": "upload", "path": str(model), "name": "add"},
        run,
        {"op": "delete"},
        run,
    ]
    out = driver(blindai_server.plan(client, ops))
    connect, upload, first, delete, after_delete = results(out)

    assert connect == {"ok": True, "warnings": ["SimulationModeWarning"]}
    assert uuid.UUID(upload["model_id"]).version == 4
    if client == "v063":  # 0.6.3 surfaces the reply's hash; preview ignores it
        assert upload["hash_type"] == "bytes"
        assert upload["hash"] == hashlib.sha256(model.read_bytes()).hexdigest()
    check_outputs(first, reference(model, {"x": x}))
    assert delete == {"ok": True}
    assert is_client_http_error(after_delete), after_delete

    # What went over the wire: the routes and ports docs/compat.md describes, all answered 2xx
    # except the run after the delete.
    server = blindai_server
    management = server.management_port if client == "v063" else server.attested_port
    attested = f"https://{server.host}:{server.attested_port}"
    trace = out["trace"]
    assert [(t["method"], t["url"]) for t in trace] == [
        ("GET", f"http://{server.host}:{server.unattested_port}/"),
        ("GET", f"{attested}/"),  # TLS probe: any status will do, the handshake is the check
        ("POST", f"https://{server.host}:{management}/upload"),
        ("POST", f"{attested}/run"),
        ("POST", f"https://{server.host}:{management}/delete"),
        ("POST", f"{attested}/run"),
    ]
    assert [t["status"] < 300 for t in trace] == [
        True,
        trace[1]["status"] < 300,
        True,
        True,
        True,
        False,
    ]
    upload_body = out["trace"][2]["body"]
    assert upload_body["model"] == {"type": "array", "items": "int", "len": model.stat().st_size}


def test_two_inputs_every_form(
    client: str, blindai_server: Any, driver: Driver, tmp_path: Path
) -> None:
    model = two_input_i64_model(tmp_path / "two.onnx")
    a = np.array([1, 2, 3, -(2**40)], dtype=np.int64)
    b = np.array([5, 7, -9, 3], dtype=np.int64)
    in_order = [tensor("a", a), tensor("b", b)]
    ops = [
        {"op": "connect"},
        {"op": "upload", "path": str(model)},
        {"op": "run", "form": "numpy", "inputs": in_order},
        {"op": "run", "form": "dict", "inputs": in_order},
        {"op": "run", "form": "dict", "inputs": in_order[::-1]},  # named, out of model order
        {"op": "run", "form": "flat", "inputs": in_order},
        {"op": "delete"},
    ]
    outcome = results(driver(blindai_server.plan(client, ops)))
    expected = reference(model, {"a": a, "b": b})
    for result in outcome[2:6]:
        check_outputs(result, expected)
    assert outcome[6] == {"ok": True}


def test_every_datum_type(client: str, blindai_server: Any, driver: Driver, tmp_path: Path) -> None:
    model = identity_all_types_model(tmp_path / "identity.onnx")
    rng = np.random.default_rng(7)
    feeds: dict[str, np.ndarray] = {}
    for dtype in DATUM_TYPES:
        if dtype == "bool":
            feeds[f"in_{dtype}"] = np.array([[True, False], [False, True]])
        elif dtype.startswith("float"):
            feeds[f"in_{dtype}"] = rng.standard_normal((2, 2)).astype(dtype)
        else:
            info = np.iinfo(dtype)
            feeds[f"in_{dtype}"] = np.array([[info.min, info.max], [0, 1]], dtype=dtype)
    ops = [
        {"op": "connect"},
        {"op": "upload", "path": str(model)},
        {"op": "run", "form": "dict", "inputs": [tensor(n, v) for n, v in feeds.items()]},
        {"op": "delete"},
    ]
    outcome = results(driver(blindai_server.plan(client, ops)))
    check_outputs(outcome[2], reference(model, feeds))


def test_scalar_tensors_keep_their_empty_shape(
    client: str, blindai_server: Any, driver: Driver, tmp_path: Path, scalar_case: Any
) -> None:
    """onnx's backend test case BitCast float32 [] -> int32 []: both clients send a 0-d numpy
    array as fact [] and rebuild a 0-d output from fact []."""
    case = scalar_case
    model = tmp_path / "bitcast_scalar.onnx"
    model.write_bytes(case.model)
    (x,) = case.inputs
    ops = [
        {"op": "connect"},
        {"op": "upload", "path": str(model)},
        {"op": "run", "form": "numpy", "inputs": [tensor("x", x)]},
        {"op": "run", "form": "dict", "inputs": [tensor("x", x)]},
        {"op": "run", "form": "flat", "inputs": [tensor("x", x)]},  # shapes=[[]]
        {"op": "delete"},
    ]
    outcome = results(driver(blindai_server.plan(client, ops)))
    expected = dict(zip(["y"], case.outputs, strict=True))
    for result in outcome[2:5]:
        check_outputs(result, expected)
        assert result["outputs"][0]["shape"] == []


def test_multi_megabyte_model(
    client: str, blindai_server: Any, driver: Driver, tmp_path: Path
) -> None:
    """An 8 MB model travels as a CBOR array of 8 M ints (about 15 MB of body) and still works."""
    size = 2_000_000
    model = large_f32_model(tmp_path / "large.onnx", size)
    x = np.linspace(-1, 1, size, dtype=np.float32)
    ops = [
        {"op": "connect"},
        {"op": "upload", "path": str(model)},
        {"op": "run", "inputs": [tensor("x", x)]},
        {"op": "delete"},
    ]
    out = driver(blindai_server.plan(client, ops, trace=False))
    outcome = results(out)
    assert "error" not in outcome[1], outcome[1]
    check_outputs(outcome[2], reference(model, {"x": x}))
    assert outcome[3] == {"ok": True}


def test_unknown_model_is_a_client_error(
    client: str, blindai_server: Any, driver: Driver, tmp_path: Path
) -> None:
    x = np.zeros((2, 3), dtype=np.float32)
    ops = [
        {"op": "connect"},
        {"op": "run", "model_id": str(uuid.uuid4()), "inputs": [tensor("x", x)]},
    ]
    outcome = results(driver(blindai_server.plan(client, ops)))
    assert is_client_http_error(outcome[1]), outcome[1]


def test_refused_outside_simulation_mode(
    client: str, blindai_server: Any, driver: Driver, tmp_path: Path
) -> None:
    """A simulation server says `mock` in its Server header; a client not in simulation refuses."""
    ops = [{"op": "connect", "simulation_mode": False}]
    (connect,) = results(driver(blindai_server.plan(client, ops)))
    assert connect["error"] == "AttestationError", connect
    assert "mock" in connect["message"]


def test_v063_runs_by_model_hash(blindai_server: Any, driver: Driver, tmp_path: Path) -> None:
    """blindai 0.6.3 can name the model by the SHA-256 hex of its bytes instead of its id."""
    model = two_input_i64_model(tmp_path / "two.onnx")
    a = np.array([4, 5], dtype=np.int64)
    b = np.array([6, -7], dtype=np.int64)
    ops = [
        {"op": "connect"},
        {"op": "upload", "path": str(model)},
        {"op": "run", "by": "hash", "inputs": [tensor("a", a), tensor("b", b)]},
        {"op": "delete"},
    ]
    out = driver(blindai_server.plan("v063", ops))
    outcome = results(out)
    check_outputs(outcome[2], reference(model, {"a": a, "b": b}))
    run_body = out["trace"][3]["body"]
    assert run_body["model_id"] == {"type": "str", "len": 0}
    assert run_body["model_hash"] == {"type": "str", "len": 64}
