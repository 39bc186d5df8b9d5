"""Tiny ONNX models built in the tests with onnx.helper (no weights in the repository)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

OPSET = 17


def _model(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def identity(elem_type: int, shape: list[int | None] | None = None) -> bytes:
    """y = Identity(x) for one element type."""
    shape = shape if shape is not None else [None, 3]
    x = helper.make_tensor_value_info("x", elem_type, shape)
    y = helper.make_tensor_value_info("y", elem_type, shape)
    return _model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id", [x], [y]))


def two_in_two_out() -> bytes:
    """sum = a + b (float), idx = ArgMax(a) (int64), inputs a [N,4], b [N,4]."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, 4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [None, 4])
    s = helper.make_tensor_value_info("sum", TensorProto.FLOAT, [None, 4])
    i = helper.make_tensor_value_info("idx", TensorProto.INT64, [None, 1])
    nodes = [
        helper.make_node("Add", ["a", "b"], ["sum"]),
        helper.make_node("ArgMax", ["a"], ["idx"], axis=1, keepdims=1),
    ]
    return _model(helper.make_graph(nodes, "two", [a, b], [s, i]))


def matmul(n_in: int, n_out: int, seed: int = 0) -> bytes:
    """y = x @ W + b with random float weights: a dense layer."""
    rng = np.random.default_rng(seed)
    w = helper.make_tensor(
        "W",
        TensorProto.FLOAT,
        [n_in, n_out],
        rng.standard_normal((n_in, n_out)).astype(np.float32).ravel(),
    )
    bias = helper.make_tensor(
        "B", TensorProto.FLOAT, [n_out], rng.standard_normal(n_out).astype(np.float32)
    )
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, n_in])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n_out])
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "B"], ["y"]),
    ]
    return _model(helper.make_graph(nodes, "dense", [x], [y], initializer=[w, bias]))
