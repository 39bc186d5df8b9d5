"""Constant folding of small integer computations, for shape inference only.

onnx shape inference reads the values of initializers and ``Constant`` nodes (and, with data
propagation, of ``Shape`` arithmetic), but not those a chain of operators computes from
constants: PyTorch exports ``F.pad`` as ``ConstantOfShape -> Concat -> Reshape -> Slice ->
Transpose -> Reshape -> Cast`` of constants, after which every dimension of the padded value
is unknown (silero-vad's LSTM batch was). :func:`fold_constants` computes such chains with
onnx's reference implementation (the operators' specification, which onnxruntime follows) and
puts their results in as ``Constant`` nodes, in the model given to the inference only (never
the one onnxruntime loads).

Only the operators of :data:`FOLDED` are computed, each on inputs that are all known integer
tensors of at most :data:`MAX_ELEMENTS` elements, and only where the result is as small (sizes
are checked before anything is computed): folding costs the upload little, whatever the model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import GraphProto, NodeProto, TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

__all__ = ["FOLDED", "MAX_ELEMENTS", "fold_constants"]

MAX_ELEMENTS = 1 << 10
"""The largest input or result folded (elements)."""

FOLDED = frozenset(
    {"Cast", "Concat", "ConstantOfShape", "Gather", "Identity", "Neg", "Reshape", "Slice"}
    | {"Squeeze", "Transpose", "Unsqueeze", "Add", "Sub", "Mul", "Abs", "Max", "Min"}
)
"""Standard operators computed from constant inputs (integer values only; ``Div`` and ``Mod``
are left out, their rounding being where implementations differ)."""
_INTEGER = frozenset({TensorProto.INT64, TensorProto.INT32})
_MAX_FOLDS = 4096


def _constant_value(node: NodeProto) -> np.ndarray | None:
    for attr in node.attribute:
        if attr.name == "value" and attr.t.data_type in _INTEGER:
            try:
                return numpy_helper.to_array(attr.t)
            except (ValueError, TypeError):
                return None
        if attr.name == "value_ints":
            return np.array(list(attr.ints), np.int64)
        if attr.name == "value_int":
            return np.array(attr.i, np.int64)
    return None


def _known(graph: GraphProto, outer: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    known = dict(outer)
    fed = {i.name for i in graph.input}
    for init in graph.initializer:
        known.pop(init.name, None)
        if init.name in fed or init.data_type not in _INTEGER:
            continue
        if math.prod(init.dims) <= MAX_ELEMENTS:
            try:
                known[init.name] = numpy_helper.to_array(init)
            except (ValueError, TypeError):  # its data was dropped for the inference
                pass
    for name in fed:
        known.pop(name, None)
    return known


def _result_size(node: NodeProto, inputs: list[np.ndarray]) -> int | None:
    """The size of ``node``'s result, where it is known before computing it cheaply."""
    if node.op_type == "ConstantOfShape":
        shape = inputs[0].reshape(-1)
        if shape.size > 8 or (shape < 0).any():
            return None
        return int(math.prod(int(d) for d in shape))
    if node.op_type in ("Add", "Sub", "Mul", "Max", "Min"):
        try:
            return int(math.prod(np.broadcast_shapes(*(a.shape for a in inputs))))
        except ValueError:
            return None
    if node.op_type == "Gather":
        return int(inputs[1].size * max(1, inputs[0].size))
    return int(sum(a.size for a in inputs))  # Concat; the others no larger than their inputs


def _fold(node: NodeProto, inputs: list[np.ndarray], opset: int) -> list[np.ndarray] | None:
    if any(a.size > MAX_ELEMENTS for a in inputs):
        return None
    size = _result_size(node, inputs)
    if size is None or size > MAX_ELEMENTS:
        return None
    names = [f"i{k}" for k in range(len(inputs))]
    one = helper.make_node(node.op_type, names, [f"o{k}" for k in range(len(node.output))])
    one.attribute.extend(node.attribute)
    graph = helper.make_graph(
        [one],
        "fold",
        [helper.make_tensor_value_info(n, TensorProto.UNDEFINED, None) for n in names],
        [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in one.output],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    try:
        results = ReferenceEvaluator(model).run(None, dict(zip(names, inputs, strict=True)))
    except Exception:  # an inconsistent node is onnxruntime's to refuse
        return None
    arrays = [np.asarray(r) for r in results]
    if any(a.dtype.kind not in "iub" or a.size > MAX_ELEMENTS for a in arrays):
        return None
    return arrays


def fold_constants(model: onnx.ModelProto) -> None:
    """Replace, in place, each node of :data:`FOLDED` whose inputs are all known small integer
    tensors by ``Constant`` nodes of its results, in every graph (``model`` is the one shape
    inference gets)."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 1:
        return
    budget = _MAX_FOLDS
    pending: list[tuple[GraphProto, dict[str, np.ndarray]]] = [(model.graph, {})]
    while pending:
        graph, outer = pending.pop()
        known = _known(graph, outer)
        for index, node in enumerate(graph.node):
            folded = None
            standard = node.domain in ("", "ai.onnx")
            if standard and node.op_type == "Constant" and len(node.output) == 1:
                value = _constant_value(node)
                if value is not None and value.size <= MAX_ELEMENTS:
                    known[node.output[0]] = value
                continue
            if standard and node.op_type in FOLDED and len(node.output) == 1 and budget > 0:
                inputs = [known.get(name) for name in node.input]
                if node.input and all(a is not None for a in inputs):
                    budget -= 1
                    folded = _fold(node, [a for a in inputs if a is not None], opset)
            if folded is None:
                for name in node.output:
                    known.pop(name, None)
                for attr in node.attribute:
                    subgraphs = [attr.g] if attr.HasField("g") else list(attr.graphs)
                    pending += [(sub, known.copy()) for sub in subgraphs]
                continue
            (value,) = folded
            known[node.output[0]] = value
            tensor = numpy_helper.from_array(value)
            graph.node[index].CopyFrom(
                helper.make_node("Constant", [], [node.output[0]], value=tensor)
            )
