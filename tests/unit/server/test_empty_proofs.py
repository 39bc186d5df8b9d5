"""Operators whose onnxruntime kernels end the process on an empty tensor are admitted only
where the model proves the dimensions they fail on non-zero (``unsafe_kernels.EMPTY_PROOFS``).

A model could make such a tensor empty from non-empty request inputs (a ``Slice`` to a length
the request gives, ``NonZero``): the data plane's refusal of empty request inputs did not stop
it, and one request ended the server's process for every tenant. Each crash is shown in a
child process (never in the test's)."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from blindai.errors import InvalidInput
from blindai.server.admission import AdmissionLimits, Admitted, check_model, parse_model
from tests import attacks

LIMITS = AdmissionLimits(max_nodes=1000, max_subgraph_depth=4, max_tensor_bytes=64 << 20)
_CHILD = (
    "import pickle, sys, onnxruntime as ort\n"
    "model, feeds = pickle.loads(sys.stdin.buffer.read())\n"
    "ort.InferenceSession(model, providers=['CPUExecutionProvider']).run(None, feeds)\n"
)


def _admit(model: bytes, limits: AdmissionLimits = LIMITS) -> Admitted:
    return check_model(parse_model(model), limits=limits)


def _run_in_child(model: bytes, feeds: dict[str, object]) -> int:
    """The exit status of a child process that runs ``model`` on ``feeds`` (negative: the
    signal that ended it)."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=pickle.dumps((model, feeds)),
        capture_output=True,
        timeout=120,
    )
    return done.returncode


def _run(model: bytes, feeds: dict[str, object]) -> list[np.ndarray]:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@pytest.mark.parametrize("op_type", attacks.EMPTY_UNSAFE_OPS)
def test_a_model_that_empties_a_tensor_before_its_kernel_is_refused(op_type):
    """A Slice to a length the request gives, before the operator: the request's inputs are
    not empty (the data plane let it through), yet the run ended the process (std::terminate,
    SIGFPE or SIGSEGV, shown here in a child). Such a model was admitted; it is refused at
    upload now, naming the node and what to do."""
    model = attacks.empty_unsafe(op_type, made="slice")
    hostile = attacks.empty_unsafe_feeds(op_type, made="slice", empty=True)
    assert all(0 not in np.shape(v) for v in hostile.values())
    assert _run_in_child(model, hostile) < 0  # the process ended on a signal
    with pytest.raises(InvalidInput, match=rf"node '{op_type}' .* proven non-zero") as info:
        _admit(model)
    assert info.value.status_code == 400
    assert "static shapes" in info.value.message
    assert "dim_param of a main-graph input" in info.value.message


@pytest.mark.parametrize("made", ["slice", "nonzero"])
@pytest.mark.parametrize("op_type", attacks.EMPTY_UNSAFE_OPS)
def test_a_long_vector_input_that_turns_data_propagation_off_proves_nothing(op_type, made):
    """A main-graph input of more than 1 Mi elements in one dimension turns onnx's data
    propagation off (``admission._long_vector_input``): a model adding one, used or not, has
    fewer shapes inferred, so fewer dimensions proven non-zero, and is still refused."""
    model = onnx.load_from_string(attacks.empty_unsafe(op_type, made=made))
    long = helper.make_tensor_value_info("long", TensorProto.FLOAT, [(1 << 20) + 1])
    model.graph.input.append(long)
    model.graph.node.append(helper.make_node("Add", ["long", "long"], ["twice"]))
    model.graph.output.append(
        helper.make_tensor_value_info("twice", TensorProto.FLOAT, [(1 << 20) + 1])
    )
    with pytest.raises(InvalidInput, match=rf"node '{op_type}' .* proven non-zero"):
        _admit(model.SerializeToString())


@pytest.mark.parametrize("op_type", attacks.EMPTY_UNSAFE_OPS)
def test_a_model_that_gathers_no_index_before_its_kernel_is_refused(op_type):
    """The same with Gather at the indices NonZero finds (none, for a request of zeros)."""
    model = attacks.empty_unsafe(op_type, made="nonzero")
    with pytest.raises(InvalidInput, match=rf"node '{op_type}' .* proven non-zero"):
        _admit(model)


def test_the_operator_may_admit_them_unproven():
    """--no-empty-kernel-proofs (e.g. for models optimized by onnxruntime's transformers tools,
    whose contrib operators' shapes onnx does not infer): the model is admitted as before, named
    so that its runs refuse empty request inputs, inside a model-local function too."""
    relaxed = dataclasses.replace(LIMITS, empty_kernel_proofs=False)
    for op_type in attacks.EMPTY_UNSAFE_OPS:
        model = attacks.empty_unsafe(op_type, made="slice")
        assert _admit(model, relaxed).empty_unsafe == (op_type,)
    assert _admit(_in_function("GRU"), relaxed).empty_unsafe == ("GRU",)


@pytest.mark.parametrize("made", ["", "transpose"])
@pytest.mark.parametrize("op_type", attacks.EMPTY_UNSAFE_OPS)
def test_a_model_whose_dimensions_are_its_inputs_is_admitted_and_runs(op_type, made):
    """Dimensions that are a request input's own (the input itself, or through operators
    whose inference keeps its named dimensions) are proven: requests with an empty one are
    refused by the data plane, which the model is still named for."""
    model = attacks.empty_unsafe(op_type, made=made)
    assert _admit(model).empty_unsafe == (op_type,)
    (y, *_) = _run(model, attacks.empty_unsafe_feeds(op_type, made=made))
    assert y.size > 0


_CONTRIB_EMPTY_UNSAFE = [op for op in attacks.EMPTY_UNSAFE_OPS if op not in ("GRU", "LSTM")]


@pytest.mark.parametrize("through", attacks.THROUGH_OPS)
@pytest.mark.parametrize("op_type", attacks.EMPTY_UNSAFE_OPS)
def test_a_kernel_behind_a_contrib_operator_over_the_inputs_is_admitted_and_runs(op_type, through):
    """onnx infers no shape for com.microsoft operators: a kernel behind one (as in models
    optimized by onnxruntime's transformer tools) was refused, its input of an unknown shape.
    The contrib operators' rules (``contrib_shapes``) carry the inputs' dimensions through."""
    for made in ("", "transpose"):
        model = attacks.empty_unsafe(op_type, made=made, through=through)
        assert _admit(model).empty_unsafe == tuple(sorted({op_type, through} & _UNSAFE))
        (y, *_) = _run(model, attacks.empty_unsafe_feeds(op_type, made=made))
        assert y.size > 0


_UNSAFE = set(attacks.EMPTY_UNSAFE_OPS)


@pytest.mark.parametrize("made", ["slice", "nonzero"])
@pytest.mark.parametrize("through", attacks.THROUGH_OPS)
@pytest.mark.parametrize("op_type", _CONTRIB_EMPTY_UNSAFE)
def test_a_tensor_emptied_before_a_contrib_operator_is_still_refused(op_type, through, made):
    """Slice(x, 0, cut) with the request's cut, or Gather at NonZero's indices, then a contrib
    operator, then the kernel: the rule gives the kernel's input the emptied value's dimensions
    (unknown), not the request's."""
    model = attacks.empty_unsafe(op_type, made=made, through=through)
    with pytest.raises(InvalidInput, match=rf"{op_type} needs dimension.* proven non-zero"):
        _admit(model)


@pytest.mark.parametrize("op_type", ["SkipLayerNormalization", "SkipSimplifiedLayerNormalization"])
def test_a_skip_layer_normalization_whose_skip_is_the_request_keeps_its_inputs_shape(op_type):
    """A rule-breaking attempt: SkipLayerNormalization(made, skip=the request's value) keeps
    its input's batch, not its skip's (onnxruntime gives [1, 3, 4] for an input [1, 3, 4] and a
    skip [2, 3, 4]): an input whose batch is sliced empty is not proven by the skip, and such a
    request ends the process at the next kernel (shown in a child)."""
    model = attacks.empty_unsafe(op_type, made="slice", through="SkipLayerNormalization")
    hostile = attacks.empty_unsafe_feeds(op_type, made="slice", empty=True)
    assert _run_in_child(model, hostile) < 0
    with pytest.raises(InvalidInput, match="proven non-zero"):
        _admit(model)


def _in_function(op_type: str) -> bytes:
    """The GRU model's node moved into a model-local function (no shape is inferred there)."""
    model = parse_model(attacks.empty_unsafe(op_type))
    node = model.graph.node[0]
    function = helper.make_function(
        "local", "f", list(node.input), ["y"], [node], [helper.make_opsetid("", attacks.OPSET)]
    )
    call = helper.make_node("f", list(node.input), ["y"], domain="local")
    model.graph.ClearField("node")
    model.graph.node.append(call)
    model.functions.append(function)
    model.opset_import.append(helper.make_opsetid("local", 1))
    return model.SerializeToString()


def test_an_empty_unsafe_operator_in_a_function_is_refused():
    with pytest.raises(InvalidInput, match="refused inside a model-local function"):
        _admit(_in_function("GRU"))


# What onnx shape inference (onnx 1.23, data_prop) gives a GRU's X, built from request
# inputs x float [seq, batch, 2], b bool [] and v = Slice(u, 0, cut) (u float [n], cut int64
# [1]: a value of an unknown length the model makes, 0 when cut is), and what admission makes
# of it. Each refused case has a request, none of its inputs empty, whose X is empty at run
# time (``test_each_refused_inference_case_can_be_emptied``).

_F, _I64 = TensorProto.FLOAT, TensorProto.INT64
_Case = Callable[[], tuple[list[onnx.NodeProto], list[onnx.TensorProto]]]


def _i64(name: str, values: list[int]) -> onnx.TensorProto:
    return helper.make_tensor(name, _I64, [len(values)], values)


def _broadcast_unknown() -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Add(x, Reshape(v, [1, -1, 1])): the batch broadcast against an unknown dimension,
    inferred unknown (x's 2 and v's 1 make 2, but x's 1 and v's 0 make 0)."""
    nodes = [
        helper.make_node("Reshape", ["v", "rs"], ["u3"]),
        helper.make_node("Add", ["x", "u3"], ["X"]),
    ]
    return nodes, [_i64("rs", [1, -1, 1])]


def _broadcast_one() -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Add(x, c), c a constant [1]: x's named dimensions."""
    return [helper.make_node("Add", ["x", "c"], ["X"])], [helper.make_tensor("c", _F, [1], [1])]


def _expand_unknown() -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Expand(Reshape(v, [1, -1, 1]), Shape(x)): broadcast, inferred unknown."""
    nodes = [
        helper.make_node("Reshape", ["v", "rs"], ["u3"]),
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Expand", ["u3", "s"], ["X"]),
    ]
    return nodes, [_i64("rs", [1, -1, 1])]


def _reshape_to_shape() -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Reshape(x, Shape(x)) (data propagation): x's named dimensions."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Reshape", ["x", "s"], ["X"]),
    ]
    return nodes, []


def _constant_of_shape() -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """ConstantOfShape(Concat(Shape(x)[0:2], [2])): x's named dimensions."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], end=2),
        helper.make_node("Concat", ["s", "two"], ["s3"], axis=0),
        helper.make_node(
            "ConstantOfShape", ["s3"], ["X"], value=helper.make_tensor("v", _F, [1], [1])
        ),
    ]
    return nodes, [_i64("two", [2])]


def _slice_to_its_length() -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Slice(x, 1, end) on the batch: inferred unknown (a batch of 1 makes 0)."""
    return [helper.make_node("Slice", ["x", "one", "end", "ax"], ["X"])], [
        _i64("one", [1]),
        _i64("end", [2**62]),
        _i64("ax", [1]),
    ]


def _einsum() -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Einsum('...,...->...', x, Reshape(v, [-1, 1, 1])): inferred [seq, batch, 2] (x's) but
    a v of 0 elements runs to [0, batch, 2]: onnx's Einsum inference does not broadcast, so a
    model with Einsum proves nothing by dim_params."""
    nodes = [
        helper.make_node("Reshape", ["v", "rs"], ["u3"]),
        helper.make_node("Einsum", ["x", "u3"], ["X"], equation="...,...->..."),
    ]
    return nodes, [_i64("rs", [-1, 1, 1])]


def _if_branch_slices() -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """If(b, x, Slice(x, 1, end)): the branches disagree, inferred unknown."""
    then = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["o1"])],
        "then",
        [],
        [helper.make_tensor_value_info("o1", _F, None)],
    )
    orelse = helper.make_graph(
        [helper.make_node("Slice", ["x", "one", "end", "ax"], ["o2"])],
        "else",
        [],
        [helper.make_tensor_value_info("o2", _F, None)],
    )
    node = helper.make_node("If", ["b"], ["X"], then_branch=then, else_branch=orelse)
    return [node], [_i64("one", [1]), _i64("end", [2**62]), _i64("ax", [1])]


_INFERENCE_CASES: dict[str, tuple[_Case, bool]] = {
    "broadcast-unknown": (_broadcast_unknown, False),
    "broadcast-one": (_broadcast_one, True),
    "expand-unknown": (_expand_unknown, False),
    "reshape-to-shape": (_reshape_to_shape, True),
    "constant-of-shape": (_constant_of_shape, True),
    "slice": (_slice_to_its_length, False),
    "einsum": (_einsum, False),
    "if-branch": (_if_branch_slices, False),
}


def _over(case: _Case, *, gru: bool = True) -> bytes:
    """GRU(X) with X made by ``case`` (or, without ``gru``, X as the output)."""
    nodes, inits = case()
    inputs = [
        helper.make_tensor_value_info("x", _F, ["seq", "batch", 2]),
        helper.make_tensor_value_info("u", _F, ["n"]),
        helper.make_tensor_value_info("cut", _I64, [1]),
        helper.make_tensor_value_info("b", TensorProto.BOOL, []),
    ]
    inits += [_i64("zero", [0]), *(helper.make_tensor(n, _F, [1, 6, 2], [0.5] * 12) for n in "wr")]
    nodes = [helper.make_node("Slice", ["u", "zero", "cut", "zero"], ["v"]), *nodes]
    if gru:
        nodes.append(helper.make_node("GRU", ["X", "w", "r"], ["y"], hidden_size=2))
    y = helper.make_tensor_value_info("y" if gru else "X", _F, None)
    model = helper.make_model(
        helper.make_graph(nodes, "g", inputs, [y], initializer=inits),
        opset_imports=[helper.make_opsetid("", attacks.OPSET)],
    )
    model.ir_version = 8
    return model.SerializeToString()


def _feeds(*, batch: int, cut: int) -> dict[str, object]:
    """A request none of whose inputs is empty (what the data plane lets through)."""
    return {
        "x": np.ones((1, batch, 2), np.float32),
        "u": np.ones(1, np.float32),
        "cut": np.array([cut], np.int64),
        "b": np.array(False),
    }


@pytest.mark.parametrize("name", list(_INFERENCE_CASES))
def test_what_inference_proves_of_values_made_from_inputs(name):
    case, proven = _INFERENCE_CASES[name]
    model = _over(case)
    if proven:
        _admit(model)
        assert _run(model, _feeds(batch=1, cut=0))[0].shape == (1, 1, 1, 2)
    else:
        with pytest.raises(InvalidInput, match="GRU needs every dimension"):
            _admit(model)


@pytest.mark.parametrize("name", [n for n, (_, proven) in _INFERENCE_CASES.items() if not proven])
def test_each_refused_inference_case_can_be_emptied(name):
    """A request with no empty input makes each refused case's X empty (so GRU's kernel would
    end the process: shown for the slice in a child above)."""
    case, _ = _INFERENCE_CASES[name]
    (made,) = _run(_over(case, gru=False), _feeds(batch=1, cut=0))
    assert 0 in made.shape


def _gru_model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    inits: list[onnx.TensorProto],
    x: str = "x",
    op_type: str = "GRU",
) -> bytes:
    """GRU (or LSTM) of (``x``, w, r) after ``nodes``, hidden size 2 (input size 2)."""
    gates = {"GRU": 3, "LSTM": 4}[op_type]
    inits = [
        *inits,
        *(helper.make_tensor(n, _F, [1, gates * 2, 2], [0.5] * gates * 4) for n in "wr"),
    ]
    nodes = [*nodes, helper.make_node(op_type, [x, "w", "r"], ["y"], hidden_size=2)]
    y = helper.make_tensor_value_info("y", _F, None)
    model = helper.make_model(
        helper.make_graph(nodes, "g", inputs, [y], initializer=inits),
        opset_imports=[helper.make_opsetid("", attacks.OPSET)],
    )
    model.ir_version = 8
    return model.SerializeToString()


def test_an_input_with_an_initializer_of_its_name_proves_by_the_initializer():
    """A main-graph input declared [seq, batch, 2] that has an initializer of its name, of
    [1, 0, 2]: a request cannot feed it (onnxruntime lists it apart), so every run has the
    initializer's empty batch (std::terminate, shown in a child), while onnx inference took
    the declared [seq, batch, 2] and the named dimensions proved it. Its dims are the
    initializer's now."""
    inputs = [
        helper.make_tensor_value_info("x", _F, ["seq", "batch", 2]),
        helper.make_tensor_value_info("h", _F, ["seq", "batch", 2]),
    ]
    model = _gru_model([], inputs, [helper.make_tensor("h", _F, [1, 0, 2], [])], x="h")
    assert _run_in_child(model, {"x": np.ones((1, 1, 2), np.float32)}) < 0
    with pytest.raises(InvalidInput, match=r"GRU needs every dimension.* of shape \[1, 0, 2\]"):
        _admit(model)


def test_a_dimension_named_like_inference_symbols_proves_nothing_made():
    """An author may name an input's dimension as onnx inference names the ones it makes up
    (unk__0, ...): onnx picks other names then, so what NonZero makes is not taken for the
    input's dimension."""
    inputs = [
        helper.make_tensor_value_info("x", _F, ["unk__0", "unk__1", 2]),
        helper.make_tensor_value_info("m", _F, [3]),
    ]
    nodes = [
        helper.make_node("NonZero", ["m"], ["nz"]),
        helper.make_node("Squeeze", ["nz", "zero"], ["idx"]),
        helper.make_node("Gather", ["x", "idx"], ["X"], axis=1),
    ]
    model = _gru_model(nodes, inputs, [_i64("zero", [0])], x="X")
    with pytest.raises(InvalidInput, match=r"GRU needs every dimension.* of shape \['unk__0', '"):
        _admit(model)


def _body_gru(kind: str) -> bytes:
    """A GRU in a Loop body over the outer x (trip count 2), or in a Scan body over the rows
    of x [steps, seq, batch, 2] (what the silero-vad example does with an LSTM)."""
    gru = helper.make_node("GRU", ["xb", "w", "r"], ["yb"], hidden_size=2)
    out = helper.make_tensor_value_info("yb", _F, None)
    inits = [helper.make_tensor(n, _F, [1, 6, 2], [0.5] * 12) for n in "wr"]
    if kind == "loop":
        flag = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
        body = helper.make_graph(
            [
                helper.make_node("Identity", ["x"], ["xb"]),
                helper.make_node("Identity", ["c"], ["c2"]),
                gru,
            ],
            "body",
            [helper.make_tensor_value_info("i", _I64, []), flag],
            [helper.make_tensor_value_info("c2", TensorProto.BOOL, []), out],
        )
        node = helper.make_node("Loop", ["trip", ""], ["y"], body=body)
        x = helper.make_tensor_value_info("x", _F, ["seq", "batch", 2])
        inits.append(helper.make_tensor("trip", _I64, [], [2]))
    else:
        body = helper.make_graph(
            [gru], "body", [helper.make_tensor_value_info("xb", _F, None)], [out]
        )
        node = helper.make_node("Scan", ["x"], ["y"], body=body, num_scan_inputs=1)
        x = helper.make_tensor_value_info("x", _F, ["steps", "seq", "batch", 2])
    y = helper.make_tensor_value_info("y", _F, None)
    model = helper.make_model(
        helper.make_graph([node], "g", [x], [y], initializer=inits),
        opset_imports=[helper.make_opsetid("", attacks.OPSET)],
    )
    model.ir_version = 8
    return model.SerializeToString()


@pytest.mark.parametrize("kind", ["loop", "scan"])
def test_a_gru_in_a_body_over_the_inputs_dimensions_is_admitted_and_runs(kind):
    """onnx inference gives a Loop body's outer values and a Scan body's rows the input's
    named dimensions (a Loop's carried values get no shape; onnxruntime's Scan keeps its
    states' shapes): measured sound, so they prove."""
    model = _body_gru(kind)
    _admit(model)
    shape = (1, 1, 2) if kind == "loop" else (2, 1, 1, 2)
    (y,) = _run(model, {"x": np.ones(shape, np.float32)})
    assert y.size > 0


def test_without_shape_inference_only_inputs_and_initializers_prove():
    """With shape inference off, the request's input itself proves (the data plane refuses
    it empty), what the model makes of it does not."""
    limits = dataclasses.replace(LIMITS, shape_inference=False)
    _admit(attacks.empty_unsafe("GRU"), limits)
    with pytest.raises(InvalidInput, match=r"GRU needs every dimension.* unknown shape"):
        _admit(attacks.empty_unsafe("GRU", made="transpose"), limits)


def test_a_pad_of_constants_before_the_kernel_is_folded_and_proves():
    """PyTorch's F.pad computes its pads from constants through ConstantOfShape, Concat,
    Reshape, Slice, Transpose and Cast, which onnx inference does not read: every dimension of
    the padded value was unknown, and silero-vad's LSTM (in the examples) was refused. The
    chain is folded for the inference: the batch is x's again (the padded sequence, unknown,
    is not one LSTM's kernel fails on)."""
    from tests.unit.server.test_fold import torch_pad_chain

    nodes, inits = torch_pad_chain()
    nodes.append(helper.make_node("Pad", ["x", "pads"], ["X"]))
    inputs = [helper.make_tensor_value_info("x", _F, ["seq", "batch", 2])]
    model = _gru_model(nodes, inputs, inits, x="X", op_type="LSTM")
    _admit(model)
    (y,) = _run(model, {"x": np.ones((1, 1, 2), np.float32)})
    assert y.shape == (3, 1, 1, 2)


def _torch_rnn(kind: str, *, batch_first: bool, dynamo: bool) -> bytes:
    import io
    import warnings

    torch = pytest.importorskip("torch")

    class Rnn(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.rnn = getattr(torch.nn, kind)(4, 8, num_layers=2, batch_first=batch_first)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.rnn(x)[0]

    x = torch.ones(2, 3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            dims = {"x": {0: torch.export.Dim("a"), 1: torch.export.Dim("b")}}
            program = torch.onnx.export(Rnn(), (x,), input_names=["x"], dynamic_shapes=dims)
            return program.model_proto.SerializeToString()
        names = ("batch", "seq") if batch_first else ("seq", "batch")
        buffer = io.BytesIO()
        axes = {"x": dict(enumerate(names))}
        torch.onnx.export(Rnn(), (x,), buffer, input_names=["x"], dynamic_axes=axes, dynamo=False)
        return buffer.getvalue()


@pytest.mark.torch
@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["seq-first", "batch-first"])
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_a_pytorch_rnn_with_dynamic_batch_and_sequence_is_admitted(kind, batch_first, dynamo):
    """torch 2.13.0's exports of a two-layer nn.LSTM / nn.GRU, batch and sequence dynamic
    (named on the model input): admitted (the second layer's GRU input size, which inference
    leaves unknown after a Reshape to [b, a, -1], is checked by onnxruntime against the
    weights'), and they run."""
    model = _torch_rnn(kind, batch_first=batch_first, dynamo=dynamo)
    assert _admit(model).empty_unsafe == (kind,)
    (y, *_) = _run(model, {"x": np.ones((2, 3, 4), np.float32)})  # the exported shape
    assert y.size == 2 * 3 * 8


# Models that make a stand-in of blindai.server.contrib_shapes claim what a run does not give


@pytest.mark.parametrize("kind", ["scalar", "matrix"])
def test_a_where_of_another_rank_than_its_operand_is_left_to_onnx(kind):
    """Where(Equal(s, c), a, s) of 0-D constants is 0-D, and over sizes Unsqueezed on two axes
    (s [2, 1], c [2]) is [2, 2]: the Where refinement gave it s's as a 1-D Concat ([1], [2, 1]),
    so Shape(Shape(w)), or 2 - Shape(w)[1], was inferred 1 and ran 0; a skip of that batch
    passed as proven and ended the process (SIGFPE, shown in a child). Only a 1-D s of 1-D sizes
    and constants is refined now (onnx itself infers these right: the skip's batch is 0)."""
    model = attacks.where_of_another_rank(kind)
    feeds = {"x": np.ones((2, 3, 4), np.float32)}
    assert _run_in_child(model, feeds) < 0
    with pytest.raises(InvalidInput, match=r"SkipLayerNormalization needs dimension.* \[0, 3, 4\]"):
        _admit(model)


@pytest.mark.parametrize("op_type", ["Trilu", "ScaledSiLU", "Gelu"])
def test_a_function_named_like_a_kernel_infers_nothing(op_type):
    """A model-local function com.microsoft.Trilu (an operator onnxruntime has a kernel of):
    onnx inferred the node through the function's body (a static [2, 3, 2]), onnxruntime ran
    its kernel on a Slice the request emptied, and the GRU behind it ended the process
    (std::terminate, shown in a child). Such a function is left out of the inference now: the
    node's shape is unknown, and the GRU refused."""
    model = attacks.function_named_like_a_kernel(op_type, version=1)
    feeds = {**attacks.empty_unsafe_feeds("GRU"), "cut": np.array([0], np.int64)}
    assert _run_in_child(model, feeds) < 0
    with pytest.raises(InvalidInput, match=r"GRU needs every dimension"):
        _admit(model)


@pytest.mark.parametrize("op_type", ["Gelu", "FastGelu", "QuickGelu"])
def test_a_function_run_instead_of_a_ruled_kernel_gets_no_stand_in(op_type):
    """com.microsoft imported at version 0, and a model-local function com.microsoft.Gelu:
    onnxruntime knows no Gelu of that version and runs the function (its body empties x),
    where the stand-in of the kernel's rule gave the node x's shape; the GRU behind it ended
    the process (std::terminate, shown in a child). An operator the model defines a function
    of gets no stand-in now."""
    model = attacks.function_named_like_a_kernel(op_type, version=0)
    assert _run_in_child(model, attacks.empty_unsafe_feeds("GRU")) < 0
    with pytest.raises(InvalidInput, match=r"GRU needs every dimension"):
        _admit(model)


def test_a_function_importing_another_opset_infers_nothing():
    """A model-local function whose body is Add, importing opset 6 (the model: 17): onnx
    inferred the body with opset 6's Add (no broadcasting: its first input's static [1, 3, 4]),
    onnxruntime ran it with opset 17's (broadcast with an emptied [0, 3, 4]: [0, 3, 4]), and
    the skip of that batch ended the process (SIGFPE, shown in a child). Such a function is
    left out of the inference now; one importing the model's own opset still proves."""
    model = attacks.function_of_another_opset(6)
    feeds = {"x": np.ones((2, 3, 4), np.float32), "cut": np.array([0], np.int64)}
    assert _run_in_child(model, feeds) < 0
    with pytest.raises(InvalidInput, match=r"SkipLayerNormalization needs dimension"):
        _admit(model)
    sound = attacks.function_of_another_opset(attacks.OPSET, emptied=False)
    assert _admit(sound).empty_unsafe == ("SkipLayerNormalization",)
    (y,) = _run(sound, {"x": np.ones((2, 3, 4), np.float32)})
    assert y.shape == (2, 3, 4)


def test_a_multi_head_attention_of_an_emptied_query_is_refused():
    """MultiHeadAttention divides by zero on an empty query (and key) hidden size too, the
    value's not empty: only the value's was asked to be proven, so a query and key sliced to
    the request's 0 on their last axis passed, and ended the process (SIGFPE, in a child)."""
    model = attacks.multi_head_attention_of_an_emptied_query()
    feeds: dict[str, object] = {
        "q0": np.ones((1, 3, 4), np.float32),
        "k0": np.ones((1, 5, 4), np.float32),
        "v": np.ones((1, 5, 6), np.float32),
        "cut": np.array([0], np.int64),
    }
    assert _run_in_child(model, feeds) < 0
    with pytest.raises(InvalidInput, match=r"MultiHeadAttention needs .* empty query hidden"):
        _admit(model)
    (y,) = _run(model, {**feeds, "cut": np.array([4], np.int64)})
    assert y.shape == (1, 3, 6)


def test_group_query_attention_needs_its_query_proven_and_refuses_empty_requests():
    """GroupQueryAttention divides by zero on an empty query batch or hidden size (SIGFPE, in
    a child: a request of batch 0, or a query sliced to the request's 0): it was admitted
    unproven, and its runs took empty requests. It is an EMPTY_UNSAFE operator now: a query of
    the request's dimensions is admitted (and named, so that empty requests are refused), a
    sliced one refused."""
    model = attacks.group_query_attention()
    assert _run_in_child(model, attacks.group_query_attention_feeds(batch=0)) < 0
    assert _admit(model).empty_unsafe == ("GroupQueryAttention",)
    (y, *_) = _run(model, attacks.group_query_attention_feeds())
    assert y.shape == (1, 1, 16)
    sliced = attacks.group_query_attention(made="slice")
    assert _run_in_child(sliced, attacks.group_query_attention_feeds(cut=0)) < 0
    with pytest.raises(InvalidInput, match=r"GroupQueryAttention needs dimension\(s\) \[0, 2\]"):
        _admit(sliced)


@pytest.mark.parametrize("op_type", ["QAttention", "DecoderMaskedMultiHeadAttention"])
def test_attention_kernels_that_divide_by_an_empty_axis_need_it_proven(op_type):
    """QAttention divides by zero on an empty batch, DecoderMaskedMultiHeadAttention on an
    empty query hidden size (SIGFPE, in a child): both were admitted unproven, and a Slice to
    the request's 0 there ended the process. They are EMPTY_UNSAFE operators now."""
    model = attacks.sliced_attention(op_type)
    if op_type == "QAttention":
        feeds: dict[str, object] = {"x": np.ones((2, 3, 8), np.uint8)}
    else:
        feeds = {n: np.ones((2, 1, 8), np.float32) for n in ("q", "k", "v")}
    assert _run_in_child(model, {**feeds, "cut": np.array([0], np.int64)}) < 0
    with pytest.raises(InvalidInput, match=rf"{op_type} needs dimension"):
        _admit(model)
