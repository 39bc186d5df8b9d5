"""Constant folding for shape inference: what it computes is what onnxruntime computes, and
it computes nothing large or unknown."""

from __future__ import annotations

import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from blindai.server._fold import fold_constants
from tests import attacks


def _i64(name: str, values: list[int]) -> onnx.TensorProto:
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)


def torch_pad_chain(out: str = "pads") -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """How PyTorch exports F.pad(x, (0, 0, 0, 0, 1, 1)) of a rank-3 x (as silero-vad's model
    has it): ConstantOfShape -> Concat -> Reshape -> Slice (reversed) -> Transpose -> Reshape
    -> Cast of constants; the pads are [1, 0, 0, 1, 0, 0] (one step of sequence on each
    side)."""
    nodes = [
        helper.make_node(
            "ConstantOfShape",
            ["four"],
            ["z"],
            value=helper.make_tensor("v", TensorProto.INT64, [1], [0]),
        ),
        helper.make_node("Concat", ["z", "given"], ["all"], axis=0),
        helper.make_node("Reshape", ["all", "pairs"], ["p2"]),
        helper.make_node("Slice", ["p2", "minus1", "lowest", "zero", "minus1"], ["rev"]),
        helper.make_node("Transpose", ["rev"], ["tr"], perm=[1, 0]),
        helper.make_node("Reshape", ["tr", "flat"], ["flatp"]),
        helper.make_node("Cast", ["flatp"], [out], to=TensorProto.INT64),
    ]
    inits = [
        _i64("four", [4]),
        _i64("given", [1, 1]),
        _i64("pairs", [-1, 2]),
        _i64("minus1", [-1]),
        _i64("lowest", [-(2**62)]),
        _i64("zero", [0]),
        _i64("flat", [-1]),
    ]
    return nodes, inits


def _model(nodes, inits, inputs, outputs) -> onnx.ModelProto:
    model = helper.make_model(
        helper.make_graph(nodes, "g", inputs, outputs, initializer=inits),
        opset_imports=[helper.make_opsetid("", attacks.OPSET)],
    )
    model.ir_version = 8
    return model


def test_what_is_folded_is_what_onnxruntime_computes():
    nodes, inits = torch_pad_chain()
    pads = helper.make_tensor_value_info("pads", TensorProto.INT64, None)
    model = _model(nodes, inits, [], [pads])
    (ran,) = ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    ).run(None, {})
    fold_constants(model)
    assert [n.op_type for n in model.graph.node] == ["Constant"] * len(nodes)
    folded = onnx.numpy_helper.to_array(model.graph.node[-1].attribute[0].t)
    np.testing.assert_array_equal(folded, ran)
    np.testing.assert_array_equal(folded, [1, 0, 0, 1, 0, 0])


def test_nothing_large_unknown_or_rounded_is_folded():
    """A ConstantOfShape of 2**40 elements (it would take the upload's memory), a value made
    from a request input, and Div (rounding) stay as they are; folding takes no time."""
    x = helper.make_tensor_value_info("x", TensorProto.INT64, [1])
    outs = [
        helper.make_tensor_value_info(n, TensorProto.INT64, None) for n in ("big", "fed", "div")
    ]
    nodes = [
        helper.make_node("ConstantOfShape", ["huge"], ["big"]),
        helper.make_node("Add", ["x", "one"], ["fed"]),
        helper.make_node("Div", ["one", "two"], ["div"]),
    ]
    model = _model(nodes, [_i64("huge", [2**40]), _i64("one", [1]), _i64("two", [2])], [x], outs)
    started = time.perf_counter()
    fold_constants(model)
    assert time.perf_counter() - started < 1
    assert [n.op_type for n in model.graph.node] == ["ConstantOfShape", "Add", "Div"]
