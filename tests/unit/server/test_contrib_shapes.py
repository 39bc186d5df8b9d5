"""The output shapes ``blindai.server.contrib_shapes`` gives contrib operators (and the standard
operators onnx gives up on) are the ones onnxruntime's kernels really produce.

Each case is one operator over graph inputs. Its model is inferred as the admission does (the
stand-ins put in, onnx inference with data propagation), once with every input dimension named
(``i<k>_<axis>``) and once static; then onnxruntime runs it on those sizes. Every dimension the
inference gives must be the run's: a static size must equal it, and an input's named dimension
must be that input's size in the run (what the empty-tensor proofs rely on). The dimensions left
unknown are counted, so that a rule does not pass by proving nothing."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from blindai.server.contrib_shapes import (
    CONTRIB_SHAPES,
    MAX_STAND_INS,
    STANDARD_REFINEMENTS,
    add_stand_ins,
)

_F, _I32, _I64 = TensorProto.FLOAT, TensorProto.INT32, TensorProto.INT64
_U8 = TensorProto.UINT8
_MS = "com.microsoft"


@dataclass(frozen=True)
class _Case:
    op_type: str
    inputs: tuple[tuple[tuple[int, ...], int] | None, ...]
    """Each input's shape and element type (None: left out); ints are fed zeros."""
    outputs: tuple[int, ...]
    """Each output's element type."""
    unknown: tuple[int, ...]
    """How many dimensions of each output the rule leaves unknown (-1: the output has none)."""
    attrs: dict[str, object] = field(default_factory=dict)
    domain: str = _MS
    constants: dict[int, list[int]] = field(default_factory=dict)
    """Inputs given as int64 initializers of these values (not fed)."""
    fixed: tuple[int, ...] = ()
    """Inputs whose dimensions stay static (onnxruntime's own checks need them so)."""
    values: dict[int, list[int]] = field(default_factory=dict)
    """Fed integer inputs' values (else ones)."""


def _f(*shape: int) -> tuple[tuple[int, ...], int]:
    return shape, _F


def _i(*shape: int, t: int = _I32) -> tuple[tuple[int, ...], int]:
    return shape, t


_SKIP_OUTS = (_F, _F, _F, _F)
_SLICE = (_f(2, 5, 4), _i(1, t=_I64), _i(1, t=_I64), _i(1, t=_I64))
"""Slice's data, starts, ends (a request's) and axes."""
CASES: dict[str, _Case] = {
    "BiasGelu": _Case("BiasGelu", (_f(2, 3, 4), _f(4)), (_F,), (0,)),
    "BiasGelu-batch1": _Case("BiasGelu", (_f(1, 5, 4), _f(4)), (_F,), (0,)),
    "BiasGelu-2d": _Case("BiasGelu", (_f(3, 1), _f(1)), (_F,), (0,)),
    "FastGelu": _Case("FastGelu", (_f(2, 3, 4),), (_F,), (0,)),
    "FastGelu-bias": _Case("FastGelu", (_f(1, 3, 4), _f(4)), (_F,), (0,)),
    "Gelu": _Case("Gelu", (_f(2, 1, 4),), (_F,), (0,)),
    "Gelu-4d": _Case("Gelu", (_f(1, 2, 3, 4),), (_F,), (0,)),
    "QuickGelu": _Case("QuickGelu", (_f(2, 3, 1),), (_F,), (0,), {"alpha": 1.5}),
    "SkipLayerNormalization": _Case(
        "SkipLayerNormalization", (_f(2, 3, 4), _f(2, 3, 4), _f(4), _f(4)), _SKIP_OUTS, (0,) * 4
    ),
    "SkipLayerNormalization-skip-batch1": _Case(
        "SkipLayerNormalization", (_f(2, 3, 4), _f(1, 3, 4), _f(4), _f(4)), _SKIP_OUTS, (0,) * 4
    ),
    "SkipLayerNormalization-skip-2d": _Case(
        "SkipLayerNormalization", (_f(2, 3, 4), _f(3, 4), _f(4)), _SKIP_OUTS, (0,) * 4
    ),
    # the skip's batch (2) is not the output's: the input's (1) is
    "SkipLayerNormalization-skip-larger": _Case(
        "SkipLayerNormalization", (_f(1, 3, 4), _f(2, 3, 4), _f(4), _f(4)), _SKIP_OUTS, (0,) * 4
    ),
    "SkipLayerNormalization-2d-bias": _Case(
        "SkipLayerNormalization", (_f(3, 4), _f(3, 4), _f(4), None, _f(4)), _SKIP_OUTS, (0,) * 4
    ),
    "SkipSimplifiedLayerNormalization": _Case(
        "SkipSimplifiedLayerNormalization", (_f(2, 3, 4), _f(2, 3, 4), _f(4)), _SKIP_OUTS, (0,) * 4
    ),
    "SkipSimplifiedLayerNormalization-skip-larger": _Case(
        "SkipSimplifiedLayerNormalization", (_f(1, 3, 4), _f(2, 3, 4), _f(4)), _SKIP_OUTS, (0,) * 4
    ),
    "SimplifiedLayerNormalization": _Case(
        "SimplifiedLayerNormalization", (_f(2, 3, 4), _f(4)), (_F,), (0,), domain=""
    ),
    "RotaryEmbedding": _Case(
        "RotaryEmbedding", (_f(2, 3, 8), _i(2, 3, t=_I64), _f(16, 2), _f(16, 2)), (_F,), (0,)
    ),
    "RotaryEmbedding-4d": _Case(
        "RotaryEmbedding", (_f(2, 2, 3, 4), _i(2, 3, t=_I64), _f(16, 2), _f(16, 2)), (_F,), (0,)
    ),
    "Attention": _Case(
        "Attention", (_f(2, 3, 8), _f(8, 24), _f(24)), (_F,), (1,), {"num_heads": 2}
    ),
    # the output's hidden size (8) is the weights' third, not the input's (6): left unknown
    "Attention-narrow-input": _Case(
        "Attention", (_f(2, 3, 6), _f(6, 24), _f(24)), (_F,), (1,), {"num_heads": 2}
    ),
    "Attention-qkv-sizes": _Case(
        "Attention",
        (_f(1, 3, 8), _f(8, 20), _f(20)),
        (_F,),
        (0,),
        {"num_heads": 2, "qkv_hidden_sizes": [8, 8, 4]},
    ),
    "Attention-mask": _Case(
        "Attention", (_f(2, 1, 8), _f(8, 24), _f(24), _i(2, 1)), (_F,), (1,), {"num_heads": 2}
    ),
    "MultiHeadAttention": _Case(
        "MultiHeadAttention", (_f(2, 3, 8), _f(2, 5, 8), _f(2, 5, 6)), (_F,), (1,), {"num_heads": 2}
    ),
    "MultiHeadAttention-bnsh-kv": _Case(
        "MultiHeadAttention",
        (_f(1, 3, 8), _f(1, 2, 5, 4), _f(1, 2, 5, 4)),
        (_F,),
        (1,),
        {"num_heads": 2},
    ),
    "GroupQueryAttention": _Case(
        "GroupQueryAttention",
        (_f(2, 3, 16), _f(2, 3, 8), _f(2, 3, 8), None, None, _i(2), _i()),
        (_F, _F, _F),
        (1, -1, -1),
        {"num_heads": 2, "kv_num_heads": 1},
        values={5: [2, 2], 6: [3]},
    ),
    "GroupQueryAttention-packed-one-token": _Case(
        "GroupQueryAttention",
        (_f(1, 1, 32), None, None, None, None, _i(1), _i()),
        (_F, _F, _F),
        (1, -1, -1),
        {"num_heads": 2, "kv_num_heads": 1},
        values={5: [0], 6: [1]},
    ),
    "MatMulNBits": _Case(
        "MatMulNBits",
        (_f(2, 3, 16), _i(8, 1, 8, t=_U8), _f(8)),
        (_F,),
        (0,),
        {"K": 16, "N": 8, "bits": 4, "block_size": 16},
        fixed=(1, 2),
    ),
    "MatMulNBits-1d": _Case(
        "MatMulNBits",
        (_f(16), _i(8, 1, 8, t=_U8), _f(8)),
        (_F,),
        (0,),
        {"K": 16, "N": 8, "bits": 4, "block_size": 16},
        fixed=(1, 2),
    ),
    "EmbedLayerNormalization": _Case(
        "EmbedLayerNormalization",
        (_i(2, 3), _i(2, 3), _f(10, 4), _f(7, 4), _f(2, 4), _f(4), _f(4)),
        (_F, _I32, _F),
        (0, -1, 0),
        fixed=(2, 3, 4, 5, 6),
    ),
    "EmbedLayerNormalization-mask": _Case(
        "EmbedLayerNormalization",
        (_i(1, 5), _i(1, 5), _f(10, 6), _f(7, 6), _f(2, 6), _f(6), _f(6), _i(1, 5)),
        (_F, _I32, _F),
        (0, -1, 0),
        fixed=(2, 3, 4, 5, 6),
    ),
    "EmbedLayerNormalization-no-segment": _Case(
        "EmbedLayerNormalization",
        (_i(2, 3), None, _f(10, 6), _f(7, 6), None, _f(6), _f(6)),
        (_F, _I32),
        (0, -1),
        fixed=(2, 3, 5, 6),
    ),
    # standard operators onnx gives up on
    "Slice-request-end": _Case("Slice", _SLICE, (_F,), (1,), domain="", constants={1: [0], 3: [1]}),
    "Slice-request-end-negative-axis": _Case(
        "Slice", _SLICE, (_F,), (1,), domain="", constants={1: [0], 3: [-2]}
    ),
    "Slice-request-end-last-axis": _Case(
        "Slice", _SLICE, (_F,), (1,), domain="", constants={1: [1], 3: [-1]}
    ),
    "Slice-request-end-steps": _Case(
        "Slice",
        (*_SLICE, _i(1, t=_I64)),
        (_F,),
        (1,),
        domain="",
        constants={1: [0], 3: [0], 4: [2]},
    ),
}
"""Each rule on shapes where a dimension is 1, or where the inputs differ."""


def _model(case: _Case, *, named: bool) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    names, inputs, inits, feeds = [], [], [], {}
    for k, spec in enumerate(case.inputs):
        if spec is None:
            names.append("")
            continue
        names.append(f"i{k}")
        if k in case.constants:
            inits.append(
                helper.make_tensor(f"i{k}", _I64, [len(case.constants[k])], case.constants[k])
            )
            continue
        shape, elem = spec
        named_here = named and k not in case.fixed
        dims = [f"i{k}_{a}" for a in range(len(shape))] if named_here else list(shape)
        inputs.append(helper.make_tensor_value_info(f"i{k}", elem, dims))
        dtype = helper.tensor_dtype_to_np_dtype(elem)
        rng = np.random.default_rng(k)
        feeds[f"i{k}"] = rng.random(shape).astype(dtype) if elem == _F else np.full(shape, 1, dtype)
        if k in case.values:
            feeds[f"i{k}"] = np.array(case.values[k], dtype).reshape(shape)
    while names and not names[-1]:
        names.pop()
    outs = [f"o{k}" for k in range(len(case.outputs))]
    node = helper.make_node(case.op_type, names, outs, domain=case.domain, **case.attrs)
    graph = helper.make_graph(
        [node],
        "one",
        inputs,
        [
            helper.make_tensor_value_info(o, t, None)
            for o, t in zip(outs, case.outputs, strict=True)
        ],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(_MS, 1)]
    )
    model.ir_version = 8
    return model, feeds


def _inferred(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    add_stand_ins(copy)
    inferred = onnx.shape_inference.infer_shapes(
        copy, check_type=False, strict_mode=False, data_prop=True
    )
    return {v.name: v.type for v in [*inferred.graph.value_info, *inferred.graph.output]}


def _check(case: _Case, *, named: bool) -> None:
    model, feeds = _model(case, named=named)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ran = session.run(None, feeds)
    sizes = {f"{n}_{a}": d for n, v in feeds.items() for a, d in enumerate(v.shape)}
    types = _inferred(model)
    for k, (real, unknown) in enumerate(zip(ran, case.unknown, strict=True)):
        value = types.get(f"o{k}")
        if unknown < 0:
            continue
        assert value is not None and value.tensor_type.HasField("shape"), f"output {k}"
        dims = value.tensor_type.shape.dim
        assert len(dims) == real.ndim, (k, dims, real.shape)
        left = 0
        for d, size in zip(dims, real.shape, strict=True):
            if d.HasField("dim_value"):
                assert d.dim_value == size, (k, d, real.shape)
            elif d.dim_param in sizes:
                assert sizes[d.dim_param] == size, (k, d.dim_param, real.shape)
            else:
                left += 1
        assert left == unknown, (k, dims, real.shape)


@pytest.mark.parametrize("named", [True, False], ids=["named", "static"])
@pytest.mark.parametrize("name", list(CASES))
def test_each_rule_gives_what_onnxruntime_gives(name, named):
    _check(CASES[name], named=named)


def test_every_rule_is_checked_against_onnxruntime():
    checked = {(c.domain, c.op_type) for c in CASES.values()}
    assert set(CONTRIB_SHAPES) - {("ai.onnx", "SimplifiedLayerNormalization")} <= checked
    assert ("", "Slice") in checked  # Range and Where: their own tests below
    assert set(STANDARD_REFINEMENTS) == {"Slice", "Range", "Where"}


def test_an_unknown_part_is_a_new_symbol_for_each_output():
    """The unknown hidden sizes of two MultiHeadAttention outputs are never the same symbol
    (onnx would take them for equal), nor an input's."""
    case = CASES["MultiHeadAttention"]
    model, _ = _model(case, named=True)
    node = model.graph.node[0]
    second = helper.make_node(node.op_type, list(node.input), ["o1"], domain=_MS, num_heads=2)
    model.graph.node.append(second)
    model.graph.output.append(helper.make_tensor_value_info("o1", _F, None))
    types = _inferred(model)
    last = [types[o].tensor_type.shape.dim[2] for o in ("o0", "o1")]
    assert not last[0].HasField("dim_value")
    assert last[0].dim_param != last[1].dim_param
    assert not any(d.dim_param.startswith("i") for d in last)


# Range(0, n, 1) and Where(Equal(s, -1), ones, s), as PyTorch exports position ids and masks


def _range_where(limit: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """r = Range(0, n, 1) with n ``size`` (x's dimension 1) or ``request`` (a request's
    scalar); y = Expand(r [1, n], Where(Equal(s, -1), ones, s)), s = [x's 0, -1]."""
    x = helper.make_tensor_value_info("x", _F, ["b", "t"])
    inputs = [x]
    c = lambda n, v: helper.make_tensor(n, _I64, [len(v)], v)  # noqa: E731
    inits = [c("one", [1]), c("zero", [0]), c("minus", [-1]), c("ones", [1, 1])]
    inits += [helper.make_tensor(n, _I64, [], [v]) for n, v in (("s0", 0), ("s1", 1))]
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "s0"], ["b0"], axis=0),
        helper.make_node("Unsqueeze", ["b0", "zero"], ["b1"]),
    ]
    if limit == "size":
        nodes.append(helper.make_node("Gather", ["shape", "s1"], ["n"], axis=0))
    else:
        inputs.append(helper.make_tensor_value_info("n", _I64, []))
    nodes += [
        helper.make_node("Range", ["s0", "n", "s1"], ["r"]),
        helper.make_node("Unsqueeze", ["r", "zero"], ["r2"]),
        helper.make_node("Concat", ["b1", "minus"], ["s"], axis=0),
        helper.make_node("Equal", ["s", "minus"], ["eq"]),
        helper.make_node("Where", ["eq", "ones", "s"], ["target"]),
        helper.make_node("Expand", ["r2", "target"], ["y"]),
    ]
    y = helper.make_tensor_value_info("y", _I64, None)
    model = helper.make_model(
        helper.make_graph(nodes, "g", inputs, [y], initializer=inits),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    feeds: dict[str, np.ndarray] = {"x": np.ones((3, 5), np.float32)}
    if limit == "request":
        feeds["n"] = np.array(5, np.int64)
    return model, feeds


def _dims(value: onnx.TypeProto | None) -> list[int | str | None]:
    assert value is not None and value.tensor_type.HasField("shape")
    return [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
        for d in value.tensor_type.shape.dim
    ]


def test_range_of_a_size_and_where_over_sizes_give_onnxruntime_shapes():
    """Range(0, x's t, 1) has t elements; Where(Equal([b, -1], -1), [1, 1], [b, -1]) is [b, 1]:
    the expanded mask is [b, t], as onnxruntime runs it (onnx alone: unknown)."""
    model, feeds = _range_where("size")
    (y,) = ort.InferenceSession(model.SerializeToString()).run(None, feeds)
    assert y.shape == (3, 5)
    types = _inferred(model)
    assert _dims(types["r"]) == ["t"]
    assert _dims(types["y"]) == ["b", "t"]
    plain = onnx.shape_inference.infer_shapes(model, data_prop=True)
    assert _dims(plain.graph.output[0].type) != ["b", "t"]


def test_range_to_a_request_value_stays_unknown():
    """A limit that is no dimension (a request's value: it may be negative, and the Range
    empty) is not refined."""
    model, feeds = _range_where("request")
    ort.InferenceSession(model.SerializeToString()).run(None, feeds)
    types = _inferred(model)
    (length,) = _dims(types["r"])
    assert length is None or not str(length).startswith(("b", "t"))


def test_where_over_a_value_that_could_be_minus_one_is_left_to_onnx():
    """s = Concat(b, m) with m a request's value (it may be -1, and Where make it 1): not
    refined, so the expanded value's dimensions stay unknown."""
    model, _ = _range_where("size")
    model.graph.input.append(helper.make_tensor_value_info("m", _I64, [1]))
    concat = next(n for n in model.graph.node if n.op_type == "Concat")
    concat.input[1] = "m"
    assert _dims(_inferred(model)["y"])[0] != "b"


def test_where_with_a_two_dimensional_operand_is_left_to_onnx():
    """Equal(s, [[-1]]) broadcasts Where's result to [1, 2], not s's [2]: a stand-in of s's
    shape would be wrong (Shape of it, gathered, could then name a size it does not hold)."""
    model, _ = _range_where("size")
    minus = next(i for i in model.graph.initializer if i.name == "minus")
    model.graph.initializer.append(helper.make_tensor("minus2", _I64, [1, 1], [-1]))
    equal = next(n for n in model.graph.node if n.op_type == "Equal")
    equal.input[1] = "minus2"
    assert minus.dims == [1]
    assert len(_dims(_inferred(model)["target"])) == 2


def test_constant_bounds_leave_slice_to_onnx():
    """A Slice whose bounds are constants is onnx's own to infer (it reads them)."""
    case = CASES["Slice-request-end"]
    constant = _Case(**{**case.__dict__, "constants": {1: [0], 2: [2], 3: [1]}})
    model, _ = _model(constant, named=False)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    assert add_stand_ins(copy) == 0
    assert _dims(_inferred(model)["o0"]) == [2, 2, 4]


def test_stand_ins_are_bounded():
    """A model of more contrib nodes than MAX_STAND_INS: the others stay unknown."""
    nodes = [
        helper.make_node("Gelu", [f"v{k}"], [f"v{k + 1}"], domain=_MS)
        for k in range(MAX_STAND_INS + 2)
    ]
    x = helper.make_tensor_value_info("v0", _F, ["n"])
    y = helper.make_tensor_value_info(f"v{MAX_STAND_INS + 2}", _F, None)
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(_MS, 1)],
    )
    assert add_stand_ins(model) == MAX_STAND_INS


def test_a_contrib_node_in_a_branch_gets_its_stand_in():
    """A GRU after a Gelu inside an If branch, over the outer x: the branch's Gelu output has
    x's named dimensions, so the GRU there is proven (and a Slice to a request's length is
    not)."""
    from blindai.errors import InvalidInput
    from blindai.server.admission import AdmissionLimits, check_model, parse_model

    limits = AdmissionLimits(max_nodes=100, max_subgraph_depth=4, max_tensor_bytes=1 << 20)
    for made, admitted in (("x", True), ("cut_x", False)):
        weights = [helper.make_tensor(n, _F, [1, 6, 2], [0.5] * 12) for n in "wr"]
        branch = helper.make_graph(
            [
                helper.make_node("Gelu", [made], ["g"], domain=_MS),
                helper.make_node("GRU", ["g", "w", "r"], ["yb"], hidden_size=2),
            ],
            "branch",
            [],
            [helper.make_tensor_value_info("yb", _F, None)],
        )
        inputs = [
            helper.make_tensor_value_info("x", _F, ["seq", "batch", 2]),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
            helper.make_tensor_value_info("cut", _I64, [1]),
        ]
        consts = [helper.make_tensor(n, _I64, [1], [v]) for n, v in (("zero", 0), ("one", 1))]
        nodes = [
            helper.make_node("Slice", ["x", "zero", "cut", "one"], ["cut_x"]),
            helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch),
        ]
        model = helper.make_model(
            helper.make_graph(
                nodes,
                "g",
                inputs,
                [helper.make_tensor_value_info("y", _F, None)],
                initializer=[*weights, *consts],
            ),
            opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(_MS, 1)],
        )
        model.ir_version = 8
        data = model.SerializeToString()
        if admitted:
            assert check_model(parse_model(data), limits=limits).empty_unsafe == ("GRU",)
            feeds = {
                "x": np.ones((3, 2, 2), np.float32),
                "c": np.array(True),
                "cut": np.array([1], np.int64),
            }
            (y,) = ort.InferenceSession(data).run(None, feeds)
            assert y.shape == (3, 1, 2, 2)
        else:
            with pytest.raises(InvalidInput, match="GRU needs every dimension"):
                check_model(parse_model(data), limits=limits)


def test_a_loop_of_unsqueezes_ends():
    """Where's refinement follows Unsqueeze and Squeeze back to a Shape, a bounded number of
    steps: a graph whose nodes feed each other in a loop (onnxruntime refuses it) ends."""
    nodes = [
        helper.make_node("Unsqueeze", ["b", "zero"], ["a"]),
        helper.make_node("Unsqueeze", ["a", "zero"], ["b"]),
        helper.make_node("Concat", ["a", "minus"], ["s"], axis=0),
        helper.make_node("Equal", ["s", "minus"], ["eq"]),
        helper.make_node("Where", ["eq", "minus", "s"], ["y"]),
    ]
    inits = [helper.make_tensor(n, _I64, [1], [v]) for n, v in (("zero", 0), ("minus", -1))]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [], [helper.make_tensor_value_info("y", _I64, None)], inits),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    assert add_stand_ins(model) == 0


def test_onnxruntimes_symbolic_shape_inference_would_prove_an_emptied_value():
    """Why the rules are hand-written data and not onnxruntime.tools.symbolic_shape_infer
    (which knows the contrib operators): it merges an unknown size with another to make
    shapes agree. x [batch, 4] + Reshape(Slice(u, 0, cut), [-1, 1]) is inferred [batch, 4]
    with the slice named 'batch' too, while a request with cut 0 runs it to [0, 4]: its
    named dimension does not mean "that input's size in the run", which the proofs need."""
    pytest.importorskip("sympy", reason="symbolic_shape_infer needs sympy (torch brings it)")
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    nodes = [
        helper.make_node("Slice", ["u", "zero", "cut", "zero"], ["v"]),
        helper.make_node("Reshape", ["v", "column"], ["v2"]),
        helper.make_node("Add", ["x", "v2"], ["y"]),
    ]
    inputs = [
        helper.make_tensor_value_info("x", _F, ["batch", 4]),
        helper.make_tensor_value_info("u", _F, ["n"]),
        helper.make_tensor_value_info("cut", _I64, [1]),
    ]
    inits = [
        helper.make_tensor("zero", _I64, [1], [0]),
        helper.make_tensor("column", _I64, [2], [-1, 1]),
    ]
    model = helper.make_model(
        helper.make_graph(
            nodes, "g", inputs, [helper.make_tensor_value_info("y", _F, None)], inits
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    assert _dims(inferred.graph.output[0].type) == ["batch", 4]
    feeds = {"x": np.ones((1, 4), np.float32), "u": np.ones(3, np.float32), "cut": np.array([0])}
    (y,) = ort.InferenceSession(model.SerializeToString()).run(None, feeds)
    assert y.shape == (0, 4)
    assert _dims(_inferred(model)["y"])[0] != "batch"  # ours: unknown


@pytest.mark.parametrize("index", [([0], []), ([-1], []), ([0], [1])], ids=["0", "-1", "[0]"])
@pytest.mark.parametrize("attrs", [{}, {"start": 1}, {"start": -2, "end": -1}, {"end": 2}])
def test_range_of_a_shape_with_start_and_end_names_onnxruntimes_length(attrs, index):
    """Range(0, Gather(Shape(x, start, end), i), 1), the index negative or a 1-element 1-D
    tensor: the dimension the stand-in names is the one onnxruntime's Range runs to."""
    values, dims = index
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], **attrs),
        helper.make_node("Gather", ["shape", "i"], ["n"]),
        helper.make_node("Range", ["zero", "n", "one"], ["r"]),
    ]
    inits = [helper.make_tensor("i", _I64, dims, values)]
    inits += [helper.make_tensor(n, _I64, [], [v]) for n, v in (("zero", 0), ("one", 1))]
    x = helper.make_tensor_value_info("x", _F, ["a", "b", "c"])
    r = helper.make_tensor_value_info("r", _I64, None)
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [r], initializer=inits),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    (run,) = ort.InferenceSession(model.SerializeToString()).run(
        None, {"x": np.ones((2, 3, 5), np.float32)}
    )
    (named,) = _dims(_inferred(model)["r"])
    assert {"a": 2, "b": 3, "c": 5}[str(named)] == run.shape[0]
