"""Admission checks: external data, graph size and depth, static shapes, before onnxruntime."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from blindai.errors import InvalidInput
from blindai.server.admission import AdmissionLimits, check_model, parse_model
from tests import attacks
from tests.models import identity, matmul

LIMITS = AdmissionLimits(max_nodes=1000, max_subgraph_depth=4, max_tensor_bytes=64 << 20)


def _check(model: bytes, limits: AdmissionLimits = LIMITS) -> None:
    check_model(parse_model(model), limits=limits)


def test_the_attack_is_real_onnxruntime_reads_a_relative_path(tmp_path, monkeypatch):
    """What the check prevents: onnxruntime alone reads the file named by the model."""
    monkeypatch.chdir(tmp_path)
    Path("secret.bin").write_bytes(b"sealed key bytes")
    session = ort.InferenceSession(
        attacks.external_initializer("secret.bin"), providers=["CPUExecutionProvider"]
    )
    assert bytes(session.run(None, {})[0]) == b"sealed key bytes"


@pytest.mark.parametrize(
    "location", ["secret.bin", "./secret.bin", "sub/dir/w.bin", "etc/passwd", "*/_ORT_MEM_ADDR_/*"]
)
def test_external_initializer_is_refused_whatever_the_location(location):
    with pytest.raises(InvalidInput, match="external data") as info:
        _check(attacks.external_initializer(location))
    assert info.value.status_code == 400
    assert "save_as_external_data=False" in info.value.message


@pytest.mark.parametrize(
    "where", ["constant", "if", "nested-if", "subgraph-initializer", "sparse", "function"]
)
def test_external_data_is_found_wherever_it_hides(where):
    with pytest.raises(InvalidInput, match="external data"):
        _check(attacks.external_in(where))


def test_external_data_entries_without_the_location_flag_are_refused_too():
    tensor = attacks.external_tensor("W", "secret.bin")
    tensor.ClearField("data_location")  # only the key/value entries remain
    model = parse_model(attacks.external_initializer("x"))
    model.graph.initializer[0].CopyFrom(tensor)
    with pytest.raises(InvalidInput, match="external data"):
        check_model(model, limits=LIMITS)


def test_ordinary_models_pass():
    for model in (identity(TensorProto.FLOAT), matmul(64, 8), attacks.slow_loop()):
        _check(model)
    _check(attacks.constant_of_shape())  # the shape comes from the request: checked at run time


def test_node_count_is_bounded_across_subgraphs():
    _check(attacks.chain(900))
    with pytest.raises(InvalidInput, match="more than 1000 nodes"):
        _check(attacks.chain(1001))
    # 400 Ifs: 401 nodes in the main graph, 800 more in the branches
    with pytest.raises(InvalidInput, match="more than 1000 nodes"):
        _check(attacks.wide_ifs(400))


def test_subgraph_depth_is_bounded():
    _check(attacks.nested_ifs(4))
    with pytest.raises(InvalidInput, match="nest more than 4 deep"):
        _check(attacks.nested_ifs(5))


def test_nesting_beyond_what_protobuf_parses_is_a_clean_refusal():
    graph = b""  # an empty GraphProto, wrapped in 60 levels of If by hand (raw protobuf)
    for _ in range(60):
        # GraphProto.node (1) = NodeProto{op_type (4) "If", attribute (5) =
        #   AttributeProto{name (1) "then_branch", g (6) = graph, type (20) = GRAPH (5)}}
        attr = _field(1, b"then_branch") + _field(6, graph) + _varint(20 << 3) + _varint(5)
        graph = _field(1, _field(4, b"If") + _field(5, attr))
    with pytest.raises(InvalidInput, match="not a valid ONNX model"):
        parse_model(_field(7, graph))  # ModelProto.graph (7)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_static_shape_over_the_limit_is_refused():
    _check(attacks.static_constant_of_shape(1 << 20))  # 4 MiB: fine
    with pytest.raises(InvalidInput, match="static shape of 1073741824 bytes"):
        _check(attacks.static_constant_of_shape(1 << 28))  # 1 GiB of floats


def test_large_weights_are_not_mistaken_for_run_time_values():
    limits = dataclasses.replace(LIMITS, max_tensor_bytes=1 << 20)
    _check(matmul(1024, 512), limits)  # 2 MiB of weights, 2 KiB of activations


def test_garbage_is_not_a_model():
    for data in (b"", b"\xff" * 64, os.urandom(256)):
        with pytest.raises(InvalidInput):
            _check(data)


def test_the_checked_model_still_runs():
    model = attacks.static_constant_of_shape(16)
    _check(model)
    out = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(
        None, {"x": np.ones(1, np.float32)}
    )
    assert out[0].tolist() == [17.0]


@pytest.mark.parametrize("where", ["initializer", "declared", "constant", "if", "function"])
@pytest.mark.parametrize("elem_type", [TensorProto.FLOAT, TensorProto.INT64])
def test_weights_keep_their_shapes_for_the_check_wherever_they_are(where, elem_type):
    """Large weights lose their data for the inference, never their type and dims: a value
    they imply past the limit is still found."""
    model = attacks.doubled_weight(where, 1 << 19, elem_type)  # w + w: 2 or 4 MiB
    with pytest.raises(InvalidInput, match=r"static shape of (2097152|4194304) bytes"):
        _check(model, dataclasses.replace(LIMITS, max_tensor_bytes=1 << 20))
    _check(model)  # under 64 MiB: fine


def test_the_check_drops_large_float_weights_data_in_place_and_keeps_their_shapes():
    """check_model consumes the parsed model: no copy of the weights is made for the inference
    (a 500 MB model of one-dimensional weights took 9.6 GB and 25 s to infer as graph inputs)."""
    model = parse_model(attacks.doubled_weight("initializer", 1 << 12))
    check_model(model, limits=LIMITS)
    (w,) = model.graph.initializer
    assert (w.name, list(w.dims), w.data_type) == ("w", [1 << 12], TensorProto.FLOAT)
    assert not w.raw_data and not w.float_data


def test_large_integer_weights_are_unknown_values_not_data_copies():
    """An integer weight could be read as a shape: past 1 KiB it is a graph input of its type
    and shape for the inference (its values unknown), as before."""
    model = parse_model(attacks.doubled_weight("initializer", 1 << 12, TensorProto.INT64))
    check_model(model, limits=LIMITS)
    assert not model.graph.initializer
    assert [i.name for i in model.graph.input] == ["x", "w"]


def test_an_operator_whose_kernel_ends_the_process_is_refused():
    """onnxruntime 1.32.0's com.microsoft AttnLSTM crashed the server on any run without its
    attention inputs, and with them on an empty sequence: refused wherever it is."""
    with pytest.raises(InvalidInput, match=r"com\.microsoft AttnLSTM is refused"):
        _check(attacks.attn_lstm())


@pytest.mark.parametrize(
    ("build", "op"),
    [(attacks.split_to_empty_pieces, "SplitToSequence"), (attacks.unique_of_a_range, "Unique")],
)
@pytest.mark.parametrize("where", ["graph", "loop body"])
def test_an_operator_whose_memory_the_arena_does_not_bound_is_refused(build, op, where):
    """onnxruntime 1.32.0's SplitToSequence takes heap outside the capped arena for each piece
    (an empty piece nothing from the arena: a [4 000 000, 0] tensor took a server with a
    64 MiB arena 550 MiB more), Unique for each distinct value (600 MiB more for 32 MB of
    floats): refused wherever they are, a Loop's body included."""
    model = onnx.load_model_from_string(build())
    if where == "loop body":
        _into_loop_body(model)
    with pytest.raises(InvalidInput, match=rf"{op} is refused: its kernel takes onnxruntime's"):
        _check(model.SerializeToString())


@pytest.mark.parametrize(
    ("sampling_ratio", "output", "problem"),
    [(0, 1, "needs a positive sampling_ratio"), (64, 128, "samples 67108864 points a region")],
)
def test_a_roi_align_whose_samples_a_request_chooses_is_refused(sampling_ratio, output, problem):
    """onnxruntime 1.32.0's RoiAlign with sampling_ratio 0 (adaptive, the default) keeps
    ceil(region / output)^2 points a bin on its heap, outside the arena: a 16-byte region of
    3000 x 3000 took 411 MiB past a 64 MiB arena. Refused unless the model fixes the points
    a region (a positive sampling_ratio, at most 2**20 points a region)."""
    model = attacks.roi_align(sampling_ratio=sampling_ratio, output=output)
    with pytest.raises(InvalidInput, match=rf"RoiAlign {problem}"):
        _check(model)


def test_a_roi_align_with_a_fixed_sampling_ratio_passes_and_runs():
    model = attacks.roi_align(sampling_ratio=2, output=7)
    _check(model)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    huge = {
        "x": np.ones((1, 1, 4, 4), np.float32),
        "rois": np.array([[0, 0, 3e6, 3e6]], np.float32),
    }
    assert session.run(None, huge)[0].tolist() == [1, 1, 7, 7]


def _into_loop_body(model: onnx.ModelProto) -> None:
    """Move the graph's nodes into a Loop body run once (its inputs from the outer scope)."""
    graph = model.graph
    body = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["cond_in"], ["cond_out"]), *graph.node],
        "body",
        [
            onnx.helper.make_tensor_value_info("i", TensorProto.INT64, []),
            onnx.helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
        ],
        [
            onnx.helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            *graph.output,
        ],
    )
    out = graph.output[0].name
    loop = onnx.helper.make_node("Loop", ["trips", ""], [f"{out}_all"], body=body)
    trips = onnx.helper.make_tensor("trips", TensorProto.INT64, [], [1])
    del graph.node[:]
    graph.node.append(loop)
    graph.initializer.append(trips)
    graph.output[0].name = f"{out}_all"
    graph.output[0].type.tensor_type.ClearField("shape")


@pytest.mark.parametrize(
    ("shape", "declared"),
    [
        ([None, None], ""),
        ([64, 2], ""),
        ([3, None], ""),
        ([None, 2, 2], "value_info"),
        ([None, 2, 2], "output"),
        ([None, None], "if"),
        ([4], ""),
    ],
)
def test_an_inverse_of_what_may_not_be_square_is_refused(shape, declared):
    """com.microsoft Inverse reads and writes out of bounds on a matrix that is not square (a
    [64, 2] input crashed the server): its input must be proven square, and a shape the model
    only declares (value_info, an output's, a subgraph's) proves nothing."""
    with pytest.raises(InvalidInput, match="needs an input whose last two dimensions are static"):
        _check(attacks.inverse(shape, declared=declared))


@pytest.mark.parametrize(("shape", "declared"), [([3, 3], ""), ([None, 2, 2], ""), ([2, 2], "if")])
def test_an_inverse_of_square_matrices_passes_and_runs(shape, declared):
    model = attacks.inverse(shape, declared=declared)
    _check(model)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    x = np.eye(shape[-1], dtype=np.float32) * 2
    x = np.broadcast_to(x, [d or 5 for d in shape]).copy()
    feeds: dict[str, np.ndarray] = {"x": x}
    if declared == "if":
        feeds["c"] = np.array(True)
    (y,) = session.run(None, feeds)
    np.testing.assert_allclose(y, x / 4)


def test_operators_that_end_the_process_on_an_empty_tensor_are_named():
    """LSTM and GRU end onnxruntime's process on an empty input (std::terminate); they are
    admitted, and named, so that the data plane refuses empty inputs for their models."""
    assert _admitted(attacks.recurrent("GRU")).empty_unsafe == ("GRU",)
    assert _admitted(attacks.recurrent("LSTM")).empty_unsafe == ("LSTM",)
    assert _admitted(attacks.skip_layer_norm()).empty_unsafe == ("SkipLayerNormalization",)
    assert _admitted(identity(TensorProto.FLOAT)).empty_unsafe == ()


def _admitted(model: bytes):
    return check_model(parse_model(model), limits=LIMITS)


@pytest.mark.parametrize("shape", [[None, None, None, None], [1, 2, 0, 2], [1, 2, None, 2]])
def test_a_conv_whose_kernel_may_be_empty_is_refused(shape):
    """onnxruntime's Conv never ends (a worker held for good, the run timeout cannot stop
    one kernel) on weights with a kernel dimension of 0: weights a request gives must have
    static, positive kernel dimensions, or the node a kernel_shape (which onnxruntime checks
    the weights against)."""
    with pytest.raises(InvalidInput, match="needs a kernel_shape attribute, or weights"):
        _check(attacks.conv_weights(shape))


@pytest.mark.parametrize(
    ("shape", "kernel_shape"), [([1, 2, 2, 2], None), ([None, None, None, None], [2, 2])]
)
def test_a_conv_with_a_proven_kernel_passes(shape, kernel_shape):
    _check(attacks.conv_weights(shape, kernel_shape=kernel_shape))
    _check(matmul(3, 2))  # ordinary weights (initializers) need no proof


@pytest.mark.parametrize(
    ("window", "frame_length"),
    [("input", ""), ("", "input"), ("", "zero"), ("hann", "input"), ("input", "four")],
)
def test_an_stft_that_may_divide_by_zero_is_refused(window, frame_length):
    """onnxruntime's STFT divides by its window's length and by frame_length (SIGFPE on 0,
    which ended the server): the window must have a static, positive length and frame_length
    be a positive constant."""
    with pytest.raises(InvalidInput, match="STFT needs a"):
        _check(attacks.stft(window=window, frame_length=frame_length))


@pytest.mark.parametrize(("window", "frame_length"), [("hann", ""), ("", "four"), ("hann", "four")])
def test_an_stft_with_a_proven_window_passes_and_runs(window, frame_length):
    model = attacks.stft(window=window, frame_length=frame_length)
    _check(model)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"s": np.ones((1, 16, 1), np.float32)})
    assert y.shape[0] == 1 and y.shape[-1] == 2


_CREATE = (
    "import sys, onnxruntime as ort\n"
    "ort.InferenceSession(sys.stdin.buffer.read(), providers=['CPUExecutionProvider'])\n"
)


@pytest.mark.parametrize("op_type", ["QLinearSigmoid", "QLinearLeakyRelu"])
def test_a_qlinear_lookup_without_its_fifth_input_is_refused(op_type):
    """QLinearSigmoid and QLinearLeakyRelu of four inputs (the optional Y_zero_point not named
    at all): onnxruntime reads a fifth when it creates the session, and an assertion aborts the
    process (SIGABRT, in a child). The compile guard's child caught it, but where it is off
    (Gramine-SGX) the server created the session itself. Refused now; named empty, it runs."""
    model = attacks.qlinear_lookup(op_type, inputs=4)
    done = subprocess.run([sys.executable, "-c", _CREATE], input=model, capture_output=True)
    assert done.returncode < 0
    with pytest.raises(InvalidInput, match=r"needs its fifth input"):
        _check(model)
    sound = attacks.qlinear_lookup(op_type, inputs=5)
    _check(sound)
    session = ort.InferenceSession(sound, providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": np.ones((2, 4), np.uint8)})
    assert y.shape == (2, 4)
