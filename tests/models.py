"""Tiny ONNX models built in the tests with onnx.helper (no weights in the repository)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

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


def token_embedder(vocab: int, dim: int = 4, seed: int = 0) -> bytes:
    """last_hidden_state [1, seq, dim] = E[input_ids] * attention_mask, E random: a text encoder."""
    return token_table_embedding(np.random.default_rng(seed).standard_normal((vocab, dim)))


def token_table_embedding(table: np.ndarray) -> bytes:
    """last_hidden_state [1, seq, dim] = table[input_ids] * attention_mask."""
    vocab, dim = table.shape
    e = helper.make_tensor("E", TensorProto.FLOAT, [vocab, dim], table.astype(np.float32).ravel())
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, None])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, None])
    out = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [1, None, dim])
    nodes = [
        helper.make_node("Gather", ["E", "input_ids"], ["g"]),
        helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mf", "axis"], ["m3"]),
        helper.make_node("Mul", ["g", "m3"], ["last_hidden_state"]),
    ]
    axis = helper.make_tensor("axis", TensorProto.INT64, [1], [-1])
    graph = helper.make_graph(nodes, "embed", [ids, mask], [out], initializer=[e, axis])
    return _model(graph)


def colour_classifier(size: int | None = None) -> bytes:
    """logits [1, 3] = mean over pixels of an NCHW image: the strongest channel wins."""
    x = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 3, size, size])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])
    nodes = [helper.make_node("ReduceMean", ["pixels"], ["logits"], axes=[2, 3], keepdims=0)]
    return _model(helper.make_graph(nodes, "colour", [x], [y]))


def sign_ctc() -> bytes:
    """logits [1, T, 3] = x * [0, 1, -1] + [0.1, 0, 0]: each sample votes <pad> (|x| < 0.1),
    A (x > 0.1) or B (x < -0.1)."""
    x = helper.make_tensor_value_info("input_values", TensorProto.FLOAT, [1, None])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, None, 3])
    w = helper.make_tensor("w", TensorProto.FLOAT, [3], [0.0, 1.0, -1.0])
    b = helper.make_tensor("b", TensorProto.FLOAT, [3], [0.1, 0.0, 0.0])
    axis = helper.make_tensor("axis", TensorProto.INT64, [1], [-1])
    nodes = [
        helper.make_node("Unsqueeze", ["input_values", "axis"], ["x3"]),
        helper.make_node("Mul", ["x3", "w"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["logits"]),
    ]
    return _model(helper.make_graph(nodes, "ctc", [x], [y], initializer=[w, b, axis]))


def next_token_lm(vocab: int) -> bytes:
    """logits [1, seq, vocab] = one-hot(input_ids + 1 mod vocab) * 10: predicts the next id."""
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, None])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, None])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, None, vocab])
    table = np.roll(np.eye(vocab, dtype=np.float32) * 10, 1, axis=1)
    e = helper.make_tensor("T", TensorProto.FLOAT, [vocab, vocab], table.ravel())
    nodes = [
        helper.make_node("Gather", ["T", "input_ids"], ["g"]),
        helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mf", "axis"], ["m3"]),
        helper.make_node("Mul", ["g", "m3"], ["logits"]),
    ]
    axis = helper.make_tensor("axis", TensorProto.INT64, [1], [-1])
    return _model(helper.make_graph(nodes, "lm", [ids, mask], [out], initializer=[e, axis]))


def scalar_identity(elem_type: int = TensorProto.FLOAT) -> bytes:
    """y = Identity(x) where x and y are scalars (ONNX shape [])."""
    return identity(elem_type, [])


def failing_add() -> bytes:
    """sum = a + b with fully dynamic shapes: inputs that do not broadcast fail at run time."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, None])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [None, None])
    s = helper.make_tensor_value_info("sum", TensorProto.FLOAT, [None, None])
    return _model(
        helper.make_graph([helper.make_node("Add", ["a", "b"], ["sum"])], "add", [a, b], [s])
    )


@dataclass(frozen=True)
class BackendCase:
    """A model from onnx's own backend test cases, with its first inputs and expected outputs."""

    name: str
    model: bytes
    inputs: list[np.ndarray]
    outputs: list[np.ndarray]


def backend_case(op_type: str, name: str) -> BackendCase:
    """The case ``name`` of ``onnx.backend.test.case.node`` (built from onnx's definitions).

    The onnx wheel does not ship the ``data/node`` folders; the cases it generates them from do.
    Slow (seconds): call it from a session-scoped fixture.
    """
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the collection warns about unrelated operators
        found = [c for c in collect_testcases(op_type) if c.name == name]
    if not found:
        raise LookupError(f"onnx has no backend test case {name}")
    case = found[0]
    inputs, outputs = case.data_sets[0]
    return BackendCase(name, case.model.SerializeToString(), list(inputs), list(outputs))


def concat_pair(elem_type: int) -> bytes:
    """y = Concat(x, x) along axis 1 and z = Identity(x), x [batch, None]: any element type."""
    x = helper.make_tensor_value_info("x", elem_type, ["batch", None])
    y = helper.make_tensor_value_info("y", elem_type, ["batch", None])
    z = helper.make_tensor_value_info("z", elem_type, ["batch", None])
    nodes = [
        helper.make_node("Concat", ["x", "x"], ["y"], axis=1),
        helper.make_node("Identity", ["x"], ["z"]),
    ]
    return _model(helper.make_graph(nodes, "pair", [x], [y, z]))


def gather_rows(vocab: int, dim: int = 4, seed: int = 0) -> bytes:
    """y [batch, seq, dim] = E[ids] * scale[batch, 1, 1]: an index >= vocab makes the run fail."""
    table = np.random.default_rng(seed).standard_normal((vocab, dim)).astype(np.float32)
    e = helper.make_tensor("E", TensorProto.FLOAT, [vocab, dim], table.ravel())
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])
    scale = helper.make_tensor_value_info("scale", TensorProto.FLOAT, ["batch", 1, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", dim])
    nodes = [
        helper.make_node("Gather", ["E", "ids"], ["g"]),
        helper.make_node("Mul", ["g", "scale"], ["y"]),
    ]
    return _model(helper.make_graph(nodes, "gather", [ids, scale], [y], initializer=[e]))


def mixes_rows() -> bytes:
    """y [batch, 3] = x - mean of x over the batch: rows interact (batching would change them)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[0], keepdims=1),
        helper.make_node("Sub", ["x", "m"], ["y"]),
    ]
    return _model(helper.make_graph(nodes, "mix", [x], [y]))


def leaks_rows(trigger: float) -> bytes:
    """y [batch, 2] = x, but when any row of the batch holds ``trigger``, x + the sum of all
    rows: a model that passes the batching probe (its rows do not interact on the probe's
    data) and shows a caller who sends the trigger the other rows of its batch."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])
    t = helper.make_tensor("T", TensorProto.FLOAT, [], [trigger])
    axis = helper.make_tensor("A", TensorProto.INT64, [1], [0])
    nodes = [
        helper.make_node("Equal", ["x", "T"], ["hit"]),
        helper.make_node("Cast", ["hit"], ["hits"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMax", ["hits"], ["any"], keepdims=1),
        helper.make_node("ReduceSum", ["x", "A"], ["all"], keepdims=1),
        helper.make_node("Mul", ["all", "any"], ["shown"]),
        helper.make_node("Add", ["x", "shown"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "leak", [x], [y], initializer=[t, axis])
    return _model(graph)


def slow_add(value: float, size: int = 1536) -> bytes:
    """y = x + value (float, [1, 2]), after a [size, size] MatMul made from x (tens of ms at
    1536: a run that lasts, without a sleep onnxruntime lacks; not folded away at compile)."""
    c = helper.make_tensor("C", TensorProto.FLOAT, [1], [value])
    zero = helper.make_tensor("Z", TensorProto.FLOAT, [], [0.0])
    reps = helper.make_tensor("R", TensorProto.INT64, [2], [size, size // 2])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    nodes = [
        helper.make_node("Tile", ["x", "R"], ["big"]),
        helper.make_node("MatMul", ["big", "big"], ["square"]),
        helper.make_node("ReduceMean", ["square"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "Z"], ["nothing"]),
        helper.make_node("Add", ["x", "C"], ["sum"]),
        helper.make_node("Add", ["sum", "nothing"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "slow", [x], [y], initializer=[c, zero, reps])
    return _model(graph)


def add_constant(value: float) -> bytes:
    """y = x + value (float, [N, 2]): distinct bytes and answers for each value."""
    c = helper.make_tensor("C", TensorProto.FLOAT, [1], [value])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])
    node = helper.make_node("Add", ["x", "C"], ["y"])
    return _model(helper.make_graph([node], "add", [x], [y], initializer=[c]))


def empty_optional_output() -> bytes:
    """o = an empty optional(tensor(float)), whatever x [N, 3] is: no array holds it."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])
    float_type = helper.make_tensor_type_proto(TensorProto.FLOAT, None)
    o = helper.make_value_info("o", helper.make_optional_type_proto(float_type))
    node = helper.make_node("Optional", [], ["o"], type=float_type)
    return _model_at(helper.make_graph([node], "empty-optional", [x], [o]), 18)


def ragged_sequence_output() -> bytes:
    """o = the sequence [x[:, :1], x[:, 1:]] for x [N, 3]: tensors of different shapes."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])
    o = helper.make_tensor_sequence_value_info("o", TensorProto.FLOAT, None)
    sizes = helper.make_tensor("sizes", TensorProto.INT64, [2], [1, 2])
    nodes = [
        helper.make_node("Split", ["x", "sizes"], ["a", "b"], axis=1),
        helper.make_node("SequenceConstruct", ["a", "b"], ["o"]),
    ]
    graph = helper.make_graph(nodes, "ragged", [x], [o], initializer=[sizes])
    return _model_at(graph, 18)


def _model_at(graph: onnx.GraphProto, opset: int) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()
