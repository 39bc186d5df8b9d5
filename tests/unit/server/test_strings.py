"""The characters of string values, bounded at upload (onnxruntime keeps them off the arena)."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
import sys
import textwrap

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, ValueInfoProto, helper

from blindai.errors import InvalidInput
from blindai.server.admission import AdmissionLimits, check_model, parse_model
from tests import attacks

MiB = 1 << 20
LIMITS = AdmissionLimits(
    max_nodes=1000,
    max_subgraph_depth=4,
    max_tensor_bytes=1 << 30,
    max_string_bytes=1 << 30,
    max_request_bytes=64 * MiB,
)
S = TensorProto.STRING


def _model(nodes, inputs, outputs, initializers=(), opset=20) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("ai.onnx.ml", 3)],
    )
    model.ir_version = 9
    return model.SerializeToString()


def _check(model: bytes, limits: AdmissionLimits = LIMITS) -> None:
    check_model(parse_model(model), limits=limits)


def _x(elem=S, name="x"):
    return helper.make_tensor_value_info(name, elem, [None])


def _y(elem=S):
    return helper.make_tensor_value_info("y", elem, None)


def _vocab(*words: str):
    return helper.make_tensor("v", S, [len(words)], [w.encode() for w in words])


def test_the_attack_is_real_string_characters_are_not_in_the_arena():
    """What the check prevents: a 1 MiB arena runs an Expand of a 100 KB string to 1000
    copies, and the process takes 100 MB more (its strings' characters are on the heap)."""
    script = textwrap.dedent(
        """
        import numpy as np
        from tests import attacks
        from blindai.server.run_guard import cap_arena
        from blindai.server.runtime import inference_session, providers_for, session_options

        def hwm():
            with open("/proc/self/status") as f:
                line = next(x for x in f if x.startswith("VmHWM:"))
            return int(line.split()[1]) * 1024

        cap_arena(1 << 20)
        options = session_options(optimize=True, shared_arena=True)
        session = inference_session(
            attacks.string_amplifier("Expand"), options=options, providers=providers_for("cpu")
        )
        before = hwm()
        x = np.array(["a" * 100_000], dtype=object)
        session.run(None, {"x": x, "n": np.array([1000], np.int64)})
        print(hwm() - before)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert int(done.stdout.split()[-1]) > 90 * MiB


@pytest.mark.parametrize("op", ["Expand", "Tile", "Gather", "Where"])
def test_operators_that_repeat_a_requests_string_are_refused(op):
    with pytest.raises(InvalidInput, match="--max-string-memory") as info:
        _check(attacks.string_amplifier(op, name="SECRET_NODE_NAME"))
    assert info.value.status_code == 400
    assert f"({op})" in info.value.message and "node " in info.value.message
    assert "SECRET" not in info.value.message  # a node by position, never by its name
    assert len(info.value.message) < 1024


def test_without_a_budget_nothing_is_checked():
    _check(attacks.string_amplifier("Expand"), dataclasses.replace(LIMITS, max_string_bytes=None))


@pytest.mark.parametrize(
    "nodes",
    [
        [helper.make_node("Identity", ["x"], ["y"])],
        [helper.make_node("Concat", ["x", "x"], ["y"], axis=0)],
        [helper.make_node("StringNormalizer", ["x"], ["y"], case_change_action="LOWER")],
        [
            helper.make_node("Reshape", ["x", "shape"], ["r"]),
            helper.make_node("Squeeze", ["r"], ["y"]),
        ],
    ],
    ids=["identity", "concat-self", "normalizer", "reshape-squeeze"],
)
def test_models_that_move_a_requests_strings_pass(nodes):
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, -1])
    _check(_model(nodes, [_x()], [_y()], [shape]))


def test_each_copy_counts_so_a_long_chain_of_copies_is_refused():
    """Every string value may hold the whole request (64 MiB): the input and 15 copies fit
    1 GiB, a 16th copy does not."""

    def chain(n: int) -> bytes:
        names = ["x"] + [f"c{i}" for i in range(n - 1)] + ["y"]
        nodes = [helper.make_node("Identity", [a], [b]) for a, b in itertools.pairwise(names)]
        return _model(nodes, [_x()], [_y()])

    _check(chain(15))
    with pytest.raises(InvalidInput, match=r"node 15 \(Identity\)"):
        _check(chain(16))


def test_the_parts_of_a_split_hold_what_their_input_held():
    """A string input split in 20 is 64 MiB in all, not 20 x 64 MiB; 20 copies are refused."""
    parts = [f"p{i}" for i in range(20)]
    outputs = [helper.make_tensor_value_info(p, S, None) for p in parts]
    split = helper.make_node("Split", ["x"], parts, axis=0, num_outputs=20)
    _check(_model([split], [_x()], outputs, opset=18))
    copies = [helper.make_node("Identity", ["x"], [p]) for p in parts]
    with pytest.raises(InvalidInput, match=r"\(Identity\)"):
        _check(_model(copies, [_x()], outputs, opset=18))


def test_a_vocabulary_of_short_words_may_be_gathered_a_long_one_is_bounded():
    """Strings of at most 15 bytes live inside their std::string (in the arena): free."""
    ids = _x(TensorProto.INT64, "ids")
    gather = [helper.make_node("Gather", ["v", "ids"], ["y"])]
    _check(_model(gather, [ids], [_y()], [_vocab("the", "a", "fifteen-letters")]))
    long_word = _vocab("the", "w" * 100)
    with pytest.raises(InvalidInput, match=r"node 0 \(Gather\)"):
        _check(_model(gather, [ids], [_y()], [long_word]))
    # 2**25 strings fit the 1 GiB arena: 100 bytes each are 3.4 GB, 10 GiB allows it
    _check(
        _model(gather, [ids], [_y()], [long_word]),
        dataclasses.replace(LIMITS, max_string_bytes=10 << 30),
    )


def test_a_constant_string_node_is_known_like_an_initializer():
    ids = _x(TensorProto.INT64, "ids")
    nodes = [
        helper.make_node("Constant", [], ["v"], value=_vocab("x" * 200)),
        helper.make_node("Expand", ["v", "ids"], ["y"]),
    ]
    with pytest.raises(InvalidInput, match=r"node 1 \(Expand\)"):
        _check(_model(nodes, [ids], [_y()]))


def test_an_input_with_a_default_is_the_requests_to_send():
    """A string initializer that is also a graph input: the request may replace it."""
    shape = _x(TensorProto.INT64, "n")
    nodes = [helper.make_node("Expand", ["v", "n"], ["y"])]
    model = _model(nodes, [_x(name="v"), shape], [_y()], [_vocab("a")])
    with pytest.raises(InvalidInput, match=r"node 0 \(Expand\)"):
        _check(model)


@pytest.mark.parametrize(
    ("label", "refused"), [("ten-chars!", False), ("x" * 1000, True)], ids=["short", "long"]
)
def test_label_encoders_are_bounded_by_their_longest_label(label, refused):
    ids = _x(TensorProto.INT64, "ids")
    node = helper.make_node(
        "LabelEncoder",
        ["ids"],
        ["y"],
        domain="ai.onnx.ml",
        keys_int64s=[1],
        values_strings=[label],
        default_string="?",
    )
    model = _model([node], [ids], [_y()])
    if refused:
        with pytest.raises(InvalidInput, match=r"node 0 \(LabelEncoder\)"):
            _check(model)
    else:
        _check(model)


def test_numbers_cast_to_strings_take_their_digits():
    """int64 makes up to 20 characters (on the heap); 1 GiB / 32 of them pass 512 MiB."""
    model = _model([helper.make_node("Cast", ["x"], ["y"], to=S)], [_x(TensorProto.INT64)], [_y()])
    _check(model)
    with pytest.raises(InvalidInput, match=r"node 0 \(Cast\)"):
        _check(model, dataclasses.replace(LIMITS, max_string_bytes=512 * MiB))
    floats = _model([helper.make_node("Cast", ["x"], ["y"], to=S)], [_x(TensorProto.FLOAT)], [_y()])
    _check(floats, dataclasses.replace(LIMITS, max_string_bytes=1))  # 15 characters at most


def test_string_concat_adds_lengths():
    """Seven bytes joined with themselves stay inline (14); fifteen make 30 on the heap for every
    element the arena holds (2**25: 1 GB)."""
    ids = _x(TensorProto.INT64, "ids")
    nodes = [
        helper.make_node("Gather", ["v", "ids"], ["w"]),
        helper.make_node("StringConcat", ["w", "w"], ["y"]),
    ]
    limits = dataclasses.replace(LIMITS, max_string_bytes=512 * MiB)
    _check(_model(nodes, [ids], [_y()], [_vocab("s" * 7)]), limits)
    with pytest.raises(InvalidInput, match=r"node 1 \(StringConcat\)"):
        _check(_model(nodes, [ids], [_y()], [_vocab("f" * 15)]), limits)


def test_strings_made_in_a_loop_are_refused():
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Identity", ["x"], ["piece"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("piece", S, [None]),
        ],
    )
    loop = helper.make_node("Loop", ["n", ""], ["y"], body=body)
    n = helper.make_tensor_value_info("n", TensorProto.INT64, [])
    with pytest.raises(InvalidInput, match=r"node 0 \(Loop\) .* subgraphs"):
        _check(_model([loop], [_x(), n], [_y()]))


def test_strings_made_in_an_untyped_subgraph_from_the_outer_graphs_are_refused():
    """Without shape inference, an If branch's Identity of the outer string is still found."""
    branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["piece"])],
        "branch",
        [],
        [helper.make_tensor_value_info("piece", TensorProto.UNDEFINED, None)],
    )
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)
    c = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    limits = dataclasses.replace(LIMITS, shape_inference=False)
    with pytest.raises(InvalidInput, match=r"node 0 \(If\) .* subgraphs"):
        _check(_model([node], [_x(), c], [helper.make_tensor_value_info("y", 0, None)]), limits)


@pytest.mark.parametrize("inference", [True, False])
def test_a_local_function_making_strings_is_refused_even_untyped(inference):
    """A function whose body Expands a long constant: refused whether or not shape inference
    typed its output (an attacker may make the inference fail)."""
    amp = helper.make_function(
        "local",
        "Amp",
        ["n"],
        ["o"],
        [
            helper.make_node("Constant", [], ["c"], value=_vocab("z" * 1000)),
            helper.make_node("Expand", ["c", "n"], ["o"]),
        ],
        [helper.make_opsetid("", 17)],
    )
    calls = helper.make_function(  # and a function that calls it
        "local",
        "Outer",
        ["n"],
        ["o"],
        [helper.make_node("Amp", ["n"], ["o"], domain="local")],
        [helper.make_opsetid("local", 1)],
    )
    graph = helper.make_graph(
        [helper.make_node("Outer", ["n"], ["y"], domain="local")],
        "g",
        [_x(TensorProto.INT64, "n")],
        [helper.make_tensor_value_info("y", TensorProto.UNDEFINED, None)],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
        functions=[amp, calls],
    )
    limits = dataclasses.replace(LIMITS, shape_inference=inference)
    with pytest.raises(InvalidInput, match=r"node 0 \(Outer\) .* model-local function"):
        _check(model.SerializeToString(), limits)


def _maps(name: str) -> ValueInfoProto:
    return helper.make_value_info(
        name,
        helper.make_sequence_type_proto(
            helper.make_map_type_proto(S, helper.make_tensor_type_proto(TensorProto.FLOAT, []))
        ),
    )


def test_a_zipmap_the_server_does_is_bounded_at_each_run():
    """skl2onnx's classifiers end in a ZipMap whose output is the model's: the server makes
    those maps itself, bounded by each run's rows (``_zipmap``): admitted at the defaults."""
    node = helper.make_node(
        "ZipMap", ["x"], ["y"], domain="ai.onnx.ml", classlabels_strings=["a", "b"]
    )
    rows = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
    _check(_model([node], [rows], [_maps("y")], opset=17))


def test_zipmap_is_bounded_by_its_maps_entries():
    """A ZipMap whose maps another node reads is onnxruntime's: 100 000 rows of 10 classes (4 MB
    of floats) made 245 MB of maps outside the arena; with 1 GiB of arena, 2**28 entries could
    take 64 GiB: refused, saying how to export instead."""
    node = helper.make_node(
        "ZipMap", ["x"], ["y"], domain="ai.onnx.ml", classlabels_strings=["a", "b"]
    )
    read = helper.make_node("Identity", ["y"], ["z"])
    rows = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
    model = _model([node, read], [rows], [_maps("z")], opset=17)
    with pytest.raises(InvalidInput, match=r"node 0 \(ZipMap\) .*'zipmap': False"):
        _check(model)
    small = dataclasses.replace(LIMITS, max_tensor_bytes=1 << 20)  # 2**18 entries: 64 MiB
    _check(model, dataclasses.replace(small, max_string_bytes=128 << 20))  # and the Identity's
    with pytest.raises(InvalidInput, match=r"node 0 \(ZipMap\)"):
        _check(model, dataclasses.replace(small, max_string_bytes=(64 << 20) - 1))
    integers = helper.make_node(
        "ZipMap", ["x"], ["y"], domain="ai.onnx.ml", classlabels_int64s=[0, 1]
    )
    with pytest.raises(InvalidInput, match=r"node 0 \(ZipMap\)"):  # int64 keys: maps too
        _check(_model([integers, read], [rows], [_maps("z")], opset=17))


def test_an_operator_it_does_not_know_is_refused():
    node = helper.make_node("Mystery", ["x"], ["y"], domain="com.example")
    model = helper.make_model(
        helper.make_graph([node], "g", [_x()], [_y()]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
    )
    with pytest.raises(InvalidInput, match=r"node 0 \(Mystery\) .* cannot bound"):
        _check(model.SerializeToString())


def test_nodes_out_of_order_are_bounded_in_the_order_they_run():
    shape = _x(TensorProto.INT64, "n")
    nodes = [
        helper.make_node("Expand", ["c", "n"], ["y"]),  # listed first, runs second
        helper.make_node("Identity", ["x"], ["c"]),
    ]
    with pytest.raises(InvalidInput, match=r"node 0 \(Expand\)"):
        _check(_model(nodes, [_x(), shape], [_y()]), dataclasses.replace(LIMITS))


def test_untyped_values_are_followed_without_shape_inference():
    limits = dataclasses.replace(LIMITS, shape_inference=False)
    with pytest.raises(InvalidInput, match=r"node 0 \(Expand\)"):
        _check(attacks.string_amplifier("Expand"), limits)


def test_a_model_that_passes_still_runs():
    model = _model([helper.make_node("Concat", ["x", "x"], ["y"], axis=0)], [_x()], [_y()])
    _check(model)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    out = session.run(None, {"x": np.array(["ab"], dtype=object)})[0]
    assert list(out) == ["ab", "ab"]
