"""Models quantized by onnxruntime's own tools are admitted and served, with onnxruntime's
results: int4 weights (``MatMulNBits``, how LLMs are shipped for CPUs), int8 dynamic
quantization (``DynamicQuantizeLinear`` + ``MatMulInteger``) and int8 static QDQ.

The float model is a real trained one (a two-layer MLP fitted by numpy on a small regression),
quantized here by ``onnxruntime.quantization``; the reference is onnxruntime in-process with the
server's own session options. The slow tier does the same with GPT-2 (124M, random weights;
``make examples`` exports it) in int4.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

from blindai.server.runtime import session_options
from tests._server import REPO

HIDDEN = 128  # MatMulNBits quantizes weights whose input dimension is a multiple of its block


def _trained_mlp() -> onnx.ModelProto:
    """y = relu(x W1 + b1) W2 + b2, fitted to y = sin(x . a) by a few steps of gradient descent."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(512, 64)).astype(np.float32)
    target = np.sin(x @ rng.normal(size=(64, 1)).astype(np.float32) / 8)
    w1 = (rng.normal(size=(64, HIDDEN)) / 8).astype(np.float32)
    b1 = np.zeros(HIDDEN, np.float32)
    w2 = (rng.normal(size=(HIDDEN, 1)) / 11).astype(np.float32)
    b2 = np.zeros(1, np.float32)
    for _ in range(200):
        h = np.maximum(x @ w1 + b1, 0)
        err = h @ w2 + b2 - target
        grad_h = (err @ w2.T) * (h > 0)
        w2 -= 0.05 * h.T @ err / len(x)
        b2 -= 0.05 * err.mean(0)
        w1 -= 0.05 * x.T @ grad_h / len(x)
        b1 -= 0.05 * grad_h.mean(0)
    init = [
        numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["xw"]),
        helper.make_node("Add", ["xw", "b1"], ["pre"]),
        helper.make_node("Relu", ["pre"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["hw"]),
        helper.make_node("Add", ["hw", "b2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1])],
        init,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


class _Calibration(CalibrationDataReader):
    def __init__(self) -> None:
        rng = np.random.default_rng(3)
        self._batches: Iterator[dict[str, np.ndarray]] = iter(
            [{"x": rng.normal(size=(16, 64)).astype(np.float32)} for _ in range(8)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


@pytest.fixture(scope="module")
def float_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("quantized") / "mlp.onnx"
    onnx.save(_trained_mlp(), path)
    return path


def _int4(src: Path, dst: Path) -> None:
    quantizer = MatMulNBitsQuantizer(onnx.load(src), block_size=32, is_symmetric=True)
    quantizer.process()
    onnx.save(quantizer.model.model, dst)


def _int8_dynamic(src: Path, dst: Path) -> None:
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8)


def _int8_static_qdq(src: Path, dst: Path) -> None:
    quantize_static(src, dst, _Calibration(), quant_format=QuantFormat.QDQ)


@pytest.mark.parametrize(
    ("quantize", "op"),
    [
        (_int4, "MatMulNBits"),
        (_int8_dynamic, "MatMulInteger"),
        (_int8_static_qdq, "QuantizeLinear"),
    ],
    ids=["int4-matmulnbits", "int8-dynamic", "int8-static-qdq"],
)
def test_a_quantized_model_is_served_with_onnxruntimes_results(conn, float_model, quantize, op):
    path = float_model.with_name(f"{quantize.__name__}.onnx")
    quantize(float_model, path)
    quantized = onnx.load(path)
    assert op in {node.op_type for node in quantized.graph.node}
    x = np.random.default_rng(11).normal(size=(5, 64)).astype(np.float32)
    reference = ort.InferenceSession(
        str(path), session_options(optimize=True), providers=["CPUExecutionProvider"]
    )
    expected = reference.run(None, {"x": x})[0]
    exact = ort.InferenceSession(
        str(float_model), session_options(optimize=True), providers=["CPUExecutionProvider"]
    ).run(None, {"x": x})[0]
    # quantized, not the float model by another name: near it, not equal
    assert not np.array_equal(expected, exact)
    assert np.abs(expected - exact).max() < 0.3 * np.abs(exact).max()
    model_id = conn.upload_model(path.read_bytes(), model_name=path.stem).model_id
    try:
        np.testing.assert_array_equal(conn.predict(model_id, [x])["y"], expected)
    finally:
        conn.delete_model(model_id)


def _gemm_as_matmul(model: onnx.ModelProto) -> onnx.ModelProto:
    """Each ``Gemm`` (alpha = beta = 1, no transposes: how the TorchScript exporter writes
    GPT-2's Conv1D layers) as ``MatMul`` + ``Add``, the form MatMulNBitsQuantizer quantizes."""
    nodes = []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type != "Gemm":
            nodes.append(node)
            continue
        assert attrs.get("alpha", 1.0) == attrs.get("beta", 1.0) == 1.0
        assert not attrs.get("transA", 0) and not attrs.get("transB", 0)
        a, b, c = node.input
        product = f"{node.output[0]}/matmul"
        nodes.append(helper.make_node("MatMul", [a, b], [product]))
        nodes.append(helper.make_node("Add", [product, c], list(node.output)))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


@pytest.mark.slow
def test_gpt2_in_int4_is_served_with_onnxruntimes_logits(conn, tmp_path):
    source = REPO / "examples" / "build" / "gpt2" / "model.onnx"
    if not source.exists():
        pytest.skip("examples/build/gpt2 is not built: run make examples")
    matmul, path = tmp_path / "gpt2.onnx", tmp_path / "gpt2-int4.onnx"
    onnx.save(_gemm_as_matmul(onnx.load(source)), matmul)
    _int4(matmul, path)
    assert sum(node.op_type == "MatMulNBits" for node in onnx.load(path).graph.node) >= 48
    ids = np.array([[101, 1996, 3007, 1997, 2605, 2003, 3000, 102]], np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    reference = ort.InferenceSession(
        str(path), session_options(optimize=True), providers=["CPUExecutionProvider"]
    )
    name = reference.get_outputs()[0].name
    expected = reference.run([name], feeds)[0]
    model_id = conn.upload_model(str(path), model_name="gpt2-int4").model_id
    try:
        got = conn.predict(model_id, feeds)[name]
    finally:
        conn.delete_model(model_id)
    np.testing.assert_array_equal(got, expected)
    assert path.stat().st_size < 0.5 * source.stat().st_size
