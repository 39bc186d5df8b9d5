"""Small models on the event loop: which graphs qualify, the gate, and runs through the plane.

The plane's runs are real onnxruntime runs; where a run happened shows in its timing: a run
in a worker waited some nanoseconds for it (``queue`` > 0), a run on the loop none.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from blindai.errors import InferenceFailed
from blindai.server._inline import (
    DEMOTE_FACTOR,
    MAX_BYTES,
    QUALIFYING_RUNS,
    SLOW_RUNS,
    WINDOW,
    InlineGate,
    inline_gate,
    shapes_of,
)
from blindai.server.access import ANONYMOUS
from blindai.server.dataplane import DataPlane
from blindai.server.registry import ModelRef, ModelRegistry
from blindai.server.settings import ServerSettings
from blindai.server.statistics import Timing
from tests.attacks import (
    constant_of_shape,
    reshaped_by_request,
    slow_loop,
    static_constant_of_shape,
)
from tests.models import matmul

LIMIT_NS = 100_000
SHAPES = shapes_of({"x": np.ones((1, 16), np.float32)})


def _one_node(op_type: str, domain: str = "", **attrs: object) -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    node = helper.make_node(op_type, ["x"], ["y"], domain=domain, **attrs)
    opsets = [helper.make_opsetid("", 17)]
    if domain:
        opsets.append(helper.make_opsetid(domain, 1))
    graph = helper.make_graph([node], "g", [x], [y])
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def _flatten_by(source: str) -> bytes:
    """y = Reshape(x, s), x [2, 3, 4], s a constant [2, 12] or Concat(Shape(x)[:1], [-1])."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 12])
    if source == "constant":
        nodes = [helper.make_node("Constant", [], ["s"], value_ints=[2, 12])]
    else:
        nodes = [
            helper.make_node("Shape", ["x"], ["full"]),
            helper.make_node("Slice", ["full", "zero", "one"], ["first"]),
            helper.make_node("Concat", ["first", "rest"], ["s"], axis=0),
        ]
    nodes.append(helper.make_node("Reshape", ["x", "s"], ["y"]))
    constants = [
        helper.make_tensor(name, TensorProto.INT64, [1], [value])
        for name, value in (("zero", 0), ("one", 1), ("rest", -1))
    ]
    graph = helper.make_graph(nodes, "flatten", [x], [y], constants)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


# -- which graphs may run on the loop -------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        matmul(16, 4),
        _one_node("Relu"),
        _one_node("Scaler", "ai.onnx.ml", offset=[0.0] * 4, scale=[2.0] * 4),
        _flatten_by("constant"),
        _flatten_by("shape"),
    ],
    ids=["matmul", "relu", "ml-scaler", "reshape-to-a-constant", "reshape-to-its-shape"],
)
def test_graphs_of_fixed_cost_qualify(model: bytes) -> None:
    gate = inline_gate(model, limit_us=100)
    assert gate is not None and gate.limit_ns == LIMIT_NS and not gate.allows(SHAPES)


@pytest.mark.parametrize(
    "model",
    [
        slow_loop(),  # a trip count read from the request
        constant_of_shape(),  # an output size read from the request
        static_constant_of_shape(8),
        _one_node("Custom", "com.example"),
        _one_node("FusedMatMul", "com.microsoft"),
        b"not an onnx model",
        reshaped_by_request(64),  # a shape read from the request's values
    ],
    ids=[
        "loop",
        "constant-of-shape",
        "static-constant-of-shape",
        "custom",
        "contrib",
        "junk",
        "reshaped-by-request",
    ],
)
def test_graphs_that_could_run_long_never_qualify(model: bytes) -> None:
    assert inline_gate(model, limit_us=100) is None


def test_a_model_local_function_never_qualifies() -> None:
    proto = onnx.load_model_from_string(matmul(4, 2))
    proto.functions.append(
        helper.make_function(
            "local",
            "f",
            ["a"],
            ["b"],
            [helper.make_node("Relu", ["a"], ["b"])],
            [helper.make_opsetid("", 17)],
        )
    )
    assert inline_gate(proto.SerializeToString(), limit_us=100) is None


def test_size_and_limit(tmp_path: Path) -> None:
    small = matmul(16, 4)
    path = tmp_path / "m.onnx"
    path.write_bytes(small)
    assert inline_gate(path, limit_us=100) is not None  # the server's file of the bytes
    assert inline_gate(small, limit_us=0) is None  # --inline-run-us 0: never on the loop
    big = matmul(600, 600)  # 1.4 MB of weights
    assert len(big) > MAX_BYTES and inline_gate(big, limit_us=100) is None
    path.write_bytes(big)
    assert inline_gate(path, limit_us=100) is None


# -- the gate -------------------------------------------------------------------------------


def test_qualifying_takes_runs_in_a_row_within_the_limit() -> None:
    gate = InlineGate(LIMIT_NS)
    for _ in range(QUALIFYING_RUNS - 1):
        gate.observe(LIMIT_NS, SHAPES, on_loop=False)
    gate.observe(LIMIT_NS + 1, SHAPES, on_loop=False)  # one slow run: start again
    for _ in range(QUALIFYING_RUNS - 1):
        gate.observe(1, SHAPES, on_loop=False)
    assert not gate.allows(SHAPES)
    gate.observe(1, SHAPES, on_loop=False)
    assert gate.allows(SHAPES)


def _qualified() -> InlineGate:
    gate = InlineGate(LIMIT_NS)
    for _ in range(QUALIFYING_RUNS):
        gate.observe(1, SHAPES, on_loop=False)
    assert gate.allows(SHAPES)
    return gate


def test_only_the_shapes_that_qualified_run_on_the_loop() -> None:
    gate = _qualified()
    batch = shapes_of({"x": np.ones((4096, 16), np.float32)})  # a bigger batch: more work
    other_dtype = shapes_of({"x": np.ones((1, 16), np.float64)})
    assert not gate.allows(batch) and not gate.allows(other_dtype)
    gate.observe(1, batch, on_loop=False)  # it ran in a worker: qualifying starts anew
    assert not gate.allows(SHAPES) and not gate.allows(batch)
    strings = shapes_of({"x": np.array(["a" * 10_000], dtype=object)})
    assert strings is None  # the work of strings grows with their length
    for _ in range(2 * QUALIFYING_RUNS):
        gate.observe(1, strings, on_loop=False)
    assert not gate.allows(strings)


def test_a_few_slow_runs_on_the_loop_are_tolerated_many_are_not() -> None:
    gate = _qualified()
    for _ in range(3):  # windows with SLOW_RUNS slow runs each: it stays
        for i in range(WINDOW):
            gate.observe(2 * LIMIT_NS if i < SLOW_RUNS else 1, SHAPES, on_loop=True)
        assert gate.allows(SHAPES)
    for _ in range(SLOW_RUNS + 1):
        gate.observe(2 * LIMIT_NS, SHAPES, on_loop=True)
    assert not gate.allows(SHAPES) and not gate.demoted  # back to the workers, to qualify again
    for _ in range(QUALIFYING_RUNS):
        gate.observe(1, SHAPES, on_loop=False)
    assert gate.allows(SHAPES)


def test_one_very_slow_run_on_the_loop_sends_the_model_back_for_good() -> None:
    gate = _qualified()
    gate.observe(DEMOTE_FACTOR * LIMIT_NS, SHAPES, on_loop=True)
    assert gate.allows(SHAPES)
    gate.observe(DEMOTE_FACTOR * LIMIT_NS + 1, SHAPES, on_loop=True)
    assert gate.demoted and not gate.allows(SHAPES)
    for _ in range(10 * QUALIFYING_RUNS):
        gate.observe(1, SHAPES, on_loop=False)
    assert not gate.allows(SHAPES)


# -- runs through the data plane ------------------------------------------------------------


@pytest.fixture
def plane():
    # a generous limit: qualifying must not depend on how busy the machine is
    p = DataPlane(ServerSettings(tee="simulation", inline_run_us=10_000), ModelRegistry())
    yield p
    p.close()


def _runs(plane: DataPlane, model: bytes, feeds: list[list[tuple[str, np.ndarray]]]):
    """Upload ``model``, then run it on each of ``feeds``: (outputs or error, queue ns)."""

    async def scenario():
        entry = await plane.upload(model, name=None, optimize=True, caller=ANONYMOUS)
        out = []
        for inputs in feeds:
            timing = Timing()
            try:
                result = await plane.infer(
                    ModelRef(entry.model_id), inputs, caller=ANONYMOUS, timing=timing
                )
                out.append((result.outputs, timing.ns["queue"]))
            except InferenceFailed as exc:
                out.append((exc, timing.ns.get("queue")))
        return out

    return asyncio.run(scenario())


def test_a_small_model_moves_to_the_loop_with_the_same_results(plane: DataPlane) -> None:
    x = np.random.default_rng(3).standard_normal((1, 16), dtype=np.float32)
    runs = _runs(plane, matmul(16, 4), [[("x", x)]] * (QUALIFYING_RUNS + 10))
    queued = [q for _, q in runs]
    assert all(q > 0 for q in queued[:QUALIFYING_RUNS])  # in a worker while qualifying
    assert all(q == 0 for q in queued[QUALIFYING_RUNS:])  # then on the loop
    first = runs[0][0][0][1]
    for outputs, _ in runs:
        assert outputs[0][1].tobytes() == first.tobytes()


def _row_lookup() -> bytes:
    """y = table[i]: an index out of range fails at run time, with the shapes of a good one."""
    i = helper.make_tensor_value_info("i", TensorProto.INT64, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    table = helper.make_tensor("table", TensorProto.FLOAT, [4, 2], list(range(8)))
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "i"], ["y"])], "rows", [i], [y], [table]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


def test_a_failing_run_on_the_loop_is_answered_as_in_a_worker(plane: DataPlane) -> None:
    good, bad = [("i", np.array([2], np.int64))], [("i", np.array([7], np.int64))]
    runs = _runs(plane, _row_lookup(), [bad] + [good] * QUALIFYING_RUNS + [bad, good])
    in_worker, on_loop, after = runs[0], runs[-2], runs[-1]
    assert in_worker[1] > 0 and on_loop[1] == 0  # where each ran
    assert isinstance(in_worker[0], InferenceFailed) and isinstance(on_loop[0], InferenceFailed)
    assert str(on_loop[0]) == str(in_worker[0])
    assert after[1] == 0  # the failure did not send it back
    np.testing.assert_array_equal(after[0][0][1], [[4.0, 5.0]])


def test_a_bigger_batch_runs_in_a_worker(plane: DataPlane) -> None:
    one, many = np.ones((1, 16), np.float32), np.ones((64, 16), np.float32)
    runs = _runs(
        plane, matmul(16, 4), [[("x", one)]] * QUALIFYING_RUNS + [[("x", many)], [("x", one)]]
    )
    assert runs[-2][1] > 0  # the batch of 64: not the shapes that qualified
    assert runs[-1][1] > 0  # and batch 1 must qualify again
    assert runs[-2][0][0][1].shape == (64, 4)


def test_a_loop_model_always_runs_in_a_worker(plane: DataPlane) -> None:
    m = np.array(3, np.int64)
    runs = _runs(plane, slow_loop(), [[("M", m)]] * (QUALIFYING_RUNS + 5))
    assert all(q > 0 for _, q in runs)
    assert runs[-1][0][0][1].tolist() == [3.0]


def test_a_model_whose_shapes_a_request_chooses_always_runs_in_a_worker(plane: DataPlane) -> None:
    """Reshape(x, s), s a request input: with s = [1, n] each run is a dot product and
    qualified for the loop; s = [n, 1], the same input shapes, then ran two n x n products
    on the event loop (n = 4096 on a real server: 3.6 s, past --run-timeout, every client
    waiting). Such a model never qualifies: every run goes to a worker."""
    n = 64
    x = ("x", np.ones(n, np.float32))
    cheap, costly = ("s", np.array([1, n], np.int64)), ("s", np.array([n, 1], np.int64))
    runs = _runs(plane, reshaped_by_request(n), [[x, cheap]] * QUALIFYING_RUNS + [[x, costly]])
    assert all(q > 0 for _, q in runs)
    assert runs[-1][0][0][1] == pytest.approx(float(n) ** 3)
