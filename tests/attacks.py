"""Hostile ONNX models, built in the tests with onnx.helper, each in a bounded size.

Each one reproduces an attack of issue 10 at a size the tests can afford; the server's limits
are set low enough in the tests that the bounded version crosses them.
"""

from __future__ import annotations

import math

import onnx
from onnx import TensorProto, helper

OPSET = 17


def _model(graph: onnx.GraphProto, *, functions: list[onnx.FunctionProto] | None = None) -> bytes:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("local", 1)],
        functions=functions or [],
    )
    model.ir_version = 8
    return model.SerializeToString()


def _constant_function(name: str, value: TensorProto) -> onnx.FunctionProto:
    """A model-local function ``local.NAME() -> o`` whose one node is ``Constant(value)``."""
    return helper.make_function(
        "local",
        name,
        [],
        ["o"],
        [helper.make_node("Constant", [], ["o"], value=value)],
        [helper.make_opsetid("", OPSET)],
    )


def external_tensor(name: str, location: str, length: int = 16) -> TensorProto:
    """A uint8 tensor whose data onnxruntime would read from ``location``."""
    t = TensorProto(name=name, data_type=TensorProto.UINT8, dims=[length])
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    return t


def external_initializer(location: str, length: int = 16) -> bytes:
    """y = W, with W's bytes in the file ``location`` (relative: the server's working dir)."""
    y = helper.make_tensor_value_info("y", TensorProto.UINT8, [length])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["W"], ["y"])],
        "leak",
        [],
        [y],
        initializer=[external_tensor("W", location, length)],
    )
    return _model(graph)


def external_in(where: str, location: str = "secret.bin") -> bytes:
    """An external tensor hidden in ``where``: constant, if-branch, loop, sparse, function."""
    ext = external_tensor("W", location)
    y = helper.make_tensor_value_info("y", TensorProto.UINT8, [16])
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    functions = None
    if where == "constant":
        nodes = [helper.make_node("Constant", [], ["y"], value=ext)]
        inputs = []
    elif where in ("if", "nested-if"):
        inner = helper.make_graph(
            [helper.make_node("Constant", [], ["t"], value=ext)],
            "then",
            [],
            [helper.make_tensor_value_info("t", TensorProto.UINT8, [16])],
        )
        if where == "nested-if":
            inner = helper.make_graph(
                [helper.make_node("If", ["c"], ["t2"], then_branch=inner, else_branch=inner)],
                "outer",
                [],
                [helper.make_tensor_value_info("t2", TensorProto.UINT8, [16])],
            )
        nodes = [helper.make_node("If", ["c"], ["y"], then_branch=inner, else_branch=inner)]
        inputs = [cond]
    elif where == "subgraph-initializer":
        body = helper.make_graph(
            [helper.make_node("Identity", ["W"], ["t"])],
            "then",
            [],
            [helper.make_tensor_value_info("t", TensorProto.UINT8, [16])],
            initializer=[ext],
        )
        nodes = [helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=body)]
        inputs = [cond]
    elif where == "sparse":
        indices = helper.make_tensor("i", TensorProto.INT64, [1], [0])
        sparse = helper.make_sparse_tensor(ext, indices, [16])
        nodes = [helper.make_node("Constant", [], ["y"], sparse_value=sparse)]
        inputs = []
    elif where == "function":
        functions = [_constant_function("Leak", ext)]
        nodes = [helper.make_node("Leak", [], ["y"], domain="local")]
        inputs = []
    else:
        raise ValueError(where)
    return _model(helper.make_graph(nodes, "hidden", inputs, [y]), functions=functions)


def constant_of_shape(*, reduce: bool = True) -> bytes:
    """y = ReduceSum(ConstantOfShape(s)): a tiny request ``s = [n]`` asks for 4n bytes."""
    s = helper.make_tensor_value_info("s", TensorProto.INT64, [1])
    fill = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    if reduce:
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [])
        nodes = [
            helper.make_node("ConstantOfShape", ["s"], ["big"], value=fill),
            helper.make_node("ReduceSum", ["big"], ["y"], keepdims=0),
        ]
    else:
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])
        nodes = [helper.make_node("ConstantOfShape", ["s"], ["y"], value=fill)]
    return _model(helper.make_graph(nodes, "cos", [s], [y]))


def long_kernel() -> bytes:
    """y = ReduceSum(A @ A), A an n x n matrix of ones, ``n`` an int64 [1] request input: one
    MatMul kernel whose time the request chooses (n = 6000: about 5 s on one thread of the
    2-core test machine), which ``RunOptions.terminate`` cannot stop (checked between kernels)."""
    n = helper.make_tensor_value_info("n", TensorProto.INT64, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [])
    fill = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    nodes = [
        helper.make_node("Concat", ["n", "n"], ["shape"], axis=0),
        helper.make_node("ConstantOfShape", ["shape"], ["a"], value=fill),
        helper.make_node("MatMul", ["a", "a"], ["aa"]),
        helper.make_node("ReduceSum", ["aa"], ["y"], keepdims=0),
    ]
    return _model(helper.make_graph(nodes, "long", [n], [y]))


def static_constant_of_shape(n: int) -> bytes:
    """A ConstantOfShape whose shape is a constant: the graph itself implies 4n bytes."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [n])
    fill = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["big"], value=fill),
        helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
        helper.make_node("Add", ["s", "x"], ["y"]),
    ]
    return _model(helper.make_graph(nodes, "static", [x], [y], initializer=[shape]))


def wide_ifs(n: int) -> bytes:
    """n sibling ``If`` nodes, each with two one-node branches: cheap bytes, costly compile."""
    c = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    nodes, outs = [], []
    for i in range(n):
        then_g = helper.make_graph(
            [helper.make_node("Identity", ["x"], [f"a{i}"])],
            f"t{i}",
            [],
            [helper.make_tensor_value_info(f"a{i}", TensorProto.FLOAT, [1])],
        )
        else_g = helper.make_graph(
            [helper.make_node("Neg", ["x"], [f"b{i}"])],
            f"e{i}",
            [],
            [helper.make_tensor_value_info(f"b{i}", TensorProto.FLOAT, [1])],
        )
        nodes.append(
            helper.make_node("If", ["c"], [f"r{i}"], then_branch=then_g, else_branch=else_g)
        )
        outs.append(f"r{i}")
    nodes.append(helper.make_node("Sum", outs, ["y"]))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    return _model(helper.make_graph(nodes, "wide", [c, x], [y]))


def nested_ifs(depth: int) -> bytes:
    """``If`` nodes nested ``depth`` deep (then-branch inside then-branch)."""
    c = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])

    def level(d: int, out: str) -> list[onnx.NodeProto]:
        if d == 0:
            return [helper.make_node("Identity", ["x"], [out])]
        then_g = helper.make_graph(
            level(d - 1, f"o{d}"),
            f"t{d}",
            [],
            [helper.make_tensor_value_info(f"o{d}", TensorProto.FLOAT, [1])],
        )
        else_g = helper.make_graph(
            [helper.make_node("Identity", ["x"], [f"q{d}"])],
            f"e{d}",
            [],
            [helper.make_tensor_value_info(f"q{d}", TensorProto.FLOAT, [1])],
        )
        return [helper.make_node("If", ["c"], [out], then_branch=then_g, else_branch=else_g)]

    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    return _model(helper.make_graph(level(depth, "y"), "nested", [c, x], [y]))


def chain(n: int) -> bytes:
    """n ``Neg`` nodes in a row."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    nodes, prev = [], "x"
    for i in range(n):
        nodes.append(helper.make_node("Neg", [prev], [f"n{i}"]))
        prev = f"n{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    return _model(helper.make_graph(nodes, "chain", [x], [y]))


def _counting_body(elem_type: int) -> onnx.GraphProto:
    """A Loop body that adds 1 to its [1] accumulator of ``elem_type`` at each trip."""
    return helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["acc_in", "one"], ["acc_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", elem_type, [1]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", elem_type, [1]),
        ],
        initializer=[helper.make_tensor("one", elem_type, [1], [1])],
    )


def slow_loop() -> bytes:
    """y = Loop(M){acc + 1}: runs as long as the request's trip count ``M`` asks."""
    m = helper.make_tensor_value_info("M", TensorProto.INT64, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    body = _counting_body(TensorProto.FLOAT)
    zero = helper.make_tensor("init", TensorProto.FLOAT, [1], [0.0])
    nodes = [helper.make_node("Loop", ["M", "", "init"], ["y"], body=body)]
    return _model(helper.make_graph(nodes, "loop", [m], [y], initializer=[zero]))


def batched_loop(tag: int = 0) -> bytes:
    """y = x + 0 * Loop(ReduceMax(x)){acc + 1}, x int64 [batch, 1]: a model the batching probe
    accepts (its rows do not change each other's output) that runs as long as the largest
    value of its request asks. ``tag`` makes distinct bytes (another model)."""
    x = helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", 1])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, ["batch", 1])
    body = _counting_body(TensorProto.INT64)
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
        helper.make_node("Loop", ["m", "", "init"], ["acc"], body=body),
        helper.make_node("Mul", ["acc", "zero"], ["z"]),
        helper.make_node("Add", ["x", "z"], ["y"]),
    ]
    constants = [
        helper.make_tensor("init", TensorProto.INT64, [1], [0]),
        helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
    ]
    return _model(helper.make_graph(nodes, f"batched_loop{tag}", [x], [y], initializer=constants))


def doubled_weight(where: str, n: int, elem_type: int = TensorProto.FLOAT) -> bytes:
    """y = x + ReduceSum(w + w), w a weight of ``n`` elements kept in ``where``: the graph
    itself implies a value (``w + w``) of n elements; checking it must not cost a copy of w.

    ``where``: ``initializer``, ``declared`` (an initializer also declared as a graph input),
    ``constant`` (a ``Constant`` node), ``if`` (an initializer of both branches of an ``If``),
    ``function`` (a ``Constant`` in a model-local function)."""
    import numpy as np

    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    w = onnx.numpy_helper.from_array(np.ones(n, dtype), "w")
    vtype = elem_type
    x = helper.make_tensor_value_info("x", vtype, [1])
    y = helper.make_tensor_value_info("y", vtype, [1])
    inputs, inits, functions = [x], [], None
    make_w: list[onnx.NodeProto] = []
    if where in ("initializer", "declared"):
        inits = [w]
        if where == "declared":
            inputs.append(helper.make_tensor_value_info("w", vtype, [n]))
    elif where == "constant":
        make_w = [helper.make_node("Constant", [], ["w"], value=w)]
    elif where == "if":
        inputs.append(helper.make_tensor_value_info("c", TensorProto.BOOL, []))
        branch = helper.make_graph(
            [helper.make_node("Identity", ["w"], ["wb"])],
            "branch",
            [],
            [helper.make_tensor_value_info("wb", vtype, [n])],
            initializer=[w],
        )
        make_w = [
            helper.make_node("If", ["c"], ["w_if"], then_branch=branch, else_branch=branch),
            helper.make_node("Identity", ["w_if"], ["w"]),
        ]
    elif where == "function":
        functions = [_constant_function("Weight", w)]
        make_w = [helper.make_node("Weight", [], ["w"], domain="local")]
    else:
        raise ValueError(where)
    nodes = [
        *make_w,
        helper.make_node("Add", ["w", "w"], ["big"]),
        helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
        helper.make_node("Add", ["s", "x"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "doubled", inputs, [y], initializer=inits)
    return _model(graph, functions=functions)


def string_amplifier(op: str, *, name: str = "amplify") -> bytes:
    """``op`` makes ``n`` copies of the request's string ``x`` (a 10 KB request to 100 000
    copies took the server 1 GB outside onnxruntime's arena); the output is its first element.

    ``op``: ``Expand``, ``Tile``, ``Gather`` (repeated index 0), ``Where`` (a broadcast),
    ``StringConcat`` is left out (this onnxruntime has no kernel for it).
    """
    x = helper.make_tensor_value_info("x", TensorProto.STRING, [1])
    n = helper.make_tensor_value_info("n", TensorProto.INT64, [1])
    y = helper.make_tensor_value_info("y", TensorProto.STRING, [1])
    zero = helper.make_tensor("zero", TensorProto.INT64, [1], [0])
    nodes = []
    if op in ("Expand", "Tile"):
        nodes.append(helper.make_node(op, ["x", "n"], ["big"], name=name))
    elif op == "Gather":
        nodes += [
            helper.make_node("ConstantOfShape", ["n"], ["zeros"], value=zero),
            helper.make_node("Gather", ["x", "zeros"], ["big"], name=name),
        ]
    elif op == "Where":
        true = helper.make_tensor("true", TensorProto.BOOL, [1], [True])
        nodes += [
            helper.make_node("ConstantOfShape", ["n"], ["mask"], value=true),
            helper.make_node("Where", ["mask", "x", "x"], ["big"], name=name),
        ]
    else:
        raise ValueError(op)
    nodes.append(helper.make_node("Gather", ["big", "zero"], ["y"]))
    return _model(helper.make_graph(nodes, "strings", [x, n], [y], initializer=[zero]))


# Kernels that end onnxruntime's process (probed on onnxruntime 1.32.0, docs/limits.md)


def _contrib_model(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)],
    )
    model.ir_version = 8
    return model.SerializeToString()


def inverse(shape: list[int | None], *, declared: str = "") -> bytes:
    """y = com.microsoft Inverse(x), x float of ``shape``: onnxruntime's kernel reads and
    writes out of bounds on a matrix that is not square ([64, 2] ends the process).

    ``declared``: where the model claims its input is [2, 2] while a run may bring any shape:
    ``value_info`` (x reshaped to a request's ``s``, declared [2, 2]), ``output`` (the same
    value also a graph output declared [2, 2]), ``if`` (the Inverse in an ``If`` branch, on the
    outer ``x``)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inputs, outputs, nodes, info = [x], [y], [], []
    source = "x"
    if declared in ("value_info", "output"):
        inputs.append(helper.make_tensor_value_info("s", TensorProto.INT64, [2]))
        nodes.append(helper.make_node("Reshape", ["x", "s"], ["m"]))
        square = helper.make_tensor_value_info("m", TensorProto.FLOAT, [2, 2])
        (info if declared == "value_info" else outputs).append(square)
        source = "m"
    inverse = helper.make_node("Inverse", [source], ["y"], domain="com.microsoft")
    if declared == "if":
        inputs.append(helper.make_tensor_value_info("c", TensorProto.BOOL, []))
        branch = helper.make_graph(
            [helper.make_node("Inverse", ["x"], ["o"], domain="com.microsoft")],
            "branch",
            [],
            [helper.make_tensor_value_info("o", TensorProto.FLOAT, [2, 2])],
        )
        inverse = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)
    nodes.append(inverse)
    return _contrib_model(helper.make_graph(nodes, "inverse", inputs, outputs, value_info=info))


def attn_lstm() -> bytes:
    """y = com.microsoft AttnLSTM(x, w, r), x [seq, batch, 2], its attention inputs left out:
    onnxruntime's kernel ends the process on any run (a null dereference), and with them on an
    empty sequence (``terminate``)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    weights = [
        helper.make_tensor("w", TensorProto.FLOAT, [1, 8, 2], [1.0] * 16),
        helper.make_tensor("r", TensorProto.FLOAT, [1, 8, 2], [1.0] * 16),
    ]
    node = helper.make_node(
        "AttnLSTM", ["x", "w", "r"], ["y"], domain="com.microsoft", hidden_size=2
    )
    return _contrib_model(helper.make_graph([node], "attn", [x], [y], initializer=weights))


def recurrent(op_type: str = "GRU") -> bytes:
    """y = LSTM or GRU(x), x float [seq, batch, 2] (hidden size 2): onnxruntime's kernel ends
    the process (``std::terminate``) when a run's x has a zero-size dimension (GRU: any of
    them; LSTM: the batch)."""
    gates = {"GRU": 3, "LSTM": 4}[op_type]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["seq", "batch", 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    weights = [
        helper.make_tensor(name, TensorProto.FLOAT, [1, gates * 2, 2], [0.5] * gates * 4)
        for name in ("w", "r")
    ]
    node = helper.make_node(op_type, ["x", "w", "r"], ["y"], hidden_size=2)
    return _model(helper.make_graph([node], op_type.lower(), [x], [y], initializer=weights))


def conv_weights(shape: list[int | None], *, kernel_shape: list[int] | None = None) -> bytes:
    """y = Conv(x, w), x float [1, 2, 4, 4], the weights w a graph input of ``shape``:
    onnxruntime's kernel never ends (its worker held for good) on weights with a kernel
    dimension of 0, [1, 2, 0, 2]. ``kernel_shape``: the node's attribute, if given."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    attrs = {} if kernel_shape is None else {"kernel_shape": kernel_shape}
    node = helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
    return _model(helper.make_graph([node], "conv", [x, w], [y]))


def stft(*, window: str = "input", frame_length: str = "") -> bytes:
    """y = STFT(signal [1, 16, 1], frame_step 2, window, frame_length): onnxruntime's kernel
    divides by the window's length and by frame_length, a SIGFPE on 0.

    ``window``: ``input`` (a request's, any length), ``hann`` (HannWindow of a constant 4),
    ``""`` (none). ``frame_length``: ``input``, ``zero`` or ``four`` (constants), ``""``."""
    s = helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 16, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inputs, nodes = [s], []
    inits = [helper.make_tensor("step", TensorProto.INT64, [], [2])]
    names = ["s", "step", "", ""]
    if window == "input":
        inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [None]))
        names[2] = "w"
    elif window == "hann":
        inits.append(helper.make_tensor("n", TensorProto.INT64, [], [4]))
        nodes.append(helper.make_node("HannWindow", ["n"], ["w"]))
        names[2] = "w"
    if frame_length == "input":
        inputs.append(helper.make_tensor_value_info("fl", TensorProto.INT64, []))
        names[3] = "fl"
    elif frame_length:
        value = {"zero": 0, "four": 4}[frame_length]
        inits.append(helper.make_tensor("fl", TensorProto.INT64, [], [value]))
        names[3] = "fl"
    while not names[-1]:
        names.pop()
    nodes.append(helper.make_node("STFT", names, ["y"]))
    return _model(helper.make_graph(nodes, "stft", inputs, [y], initializer=inits))


def skip_layer_norm() -> bytes:
    """y = com.microsoft SkipLayerNormalization(x, skip, gamma, beta), x and skip float
    [batch, seq, 4]: onnxruntime's kernel divides by the skip's size (SIGFPE) when the skip's
    batch is empty and x's is not."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, 4])
    skip = helper.make_tensor_value_info("skip", TensorProto.FLOAT, [None, None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    weights = [
        helper.make_tensor("gamma", TensorProto.FLOAT, [4], [1.0] * 4),
        helper.make_tensor("beta", TensorProto.FLOAT, [4], [0.0] * 4),
    ]
    node = helper.make_node(
        "SkipLayerNormalization", ["x", "skip", "gamma", "beta"], ["y"], domain="com.microsoft"
    )
    return _contrib_model(helper.make_graph([node], "sln", [x, skip], [y], initializer=weights))


def _empty_unsafe_parts(
    op_type: str,
) -> tuple[list[onnx.ValueInfoProto], list[TensorProto], onnx.NodeProto, str, int]:
    """An EMPTY_UNSAFE node over named-dimension request inputs: its inputs, initializers, the
    node, and which of its inputs (and axis) its kernel ends the process on when empty."""
    f, i8 = TensorProto.FLOAT, TensorProto.INT8
    ones = lambda n, t, dims: helper.make_tensor(n, t, dims, [1] * math.prod(dims))  # noqa: E731
    if op_type in ("GRU", "LSTM"):
        gates = {"GRU": 3, "LSTM": 4}[op_type]
        x = helper.make_tensor_value_info("x", f, ["seq", "batch", 2])
        weights = [ones(n, f, [1, gates * 2, 2]) for n in ("w", "r")]
        node = helper.make_node(op_type, ["x", "w", "r"], ["y"], hidden_size=2)
        return [x], weights, node, "x", 1
    if op_type == "DynamicQuantizeLSTM":
        x = helper.make_tensor_value_info("x", f, ["seq", "batch", 3])
        weights = [ones("w", i8, [1, 3, 8]), ones("r", i8, [1, 2, 8])]
        weights += [ones("ws", f, [1]), ones("rs", f, [1])]
        weights += [helper.make_tensor(n, i8, [1], [0]) for n in ("wz", "rz")]
        names = ["x", "w", "r", "", "", "", "", "", "ws", "wz", "rs", "rz"]
        node = helper.make_node(op_type, names, ["y"], domain="com.microsoft", hidden_size=2)
        return [x], weights, node, "x", 1
    if op_type in ("SkipLayerNormalization", "SkipSimplifiedLayerNormalization"):
        inputs = [helper.make_tensor_value_info(n, f, ["batch", "seq", 4]) for n in ("x", "skip")]
        weights = [ones("gamma", f, [4])]
        names = ["x", "skip", "gamma"]
        if op_type == "SkipLayerNormalization":
            weights.append(helper.make_tensor("beta", f, [4], [0.0] * 4))
            names.append("beta")
        node = helper.make_node(op_type, names, ["y"], domain="com.microsoft")
        return inputs, weights, node, "skip", 0
    if op_type == "MultiHeadAttention":
        dims = {"q": ["batch", "seq", 4], "k": ["batch", "kv", 4], "v": ["batch", "kv", 6]}
        inputs = [helper.make_tensor_value_info(n, f, d) for n, d in dims.items()]
        node = helper.make_node(
            op_type, ["q", "k", "v"], ["y"], domain="com.microsoft", num_heads=2
        )
        return inputs, [], node, "v", 2
    if op_type == "RotaryEmbedding":
        x = helper.make_tensor_value_info("x", f, ["batch", "seq", 8])
        pos = helper.make_tensor_value_info("pos", TensorProto.INT64, ["batch", "seq"])
        weights = [ones(n, f, [4, 2]) for n in ("cos", "sin")]
        node = helper.make_node(
            op_type, ["x", "pos", "cos", "sin"], ["y"], domain="com.microsoft", num_heads=2
        )
        return [x, pos], weights, node, "x", 2
    raise ValueError(op_type)


EMPTY_UNSAFE_OPS = (
    "GRU",
    "LSTM",
    "DynamicQuantizeLSTM",
    "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "MultiHeadAttention",
    "RotaryEmbedding",
)


THROUGH_OPS = ("Gelu", "FastGelu", "QuickGelu", "BiasGelu", "SkipLayerNormalization")
"""Contrib operators :func:`empty_unsafe` may put between the value made and its kernel."""


def _through(
    op_type: str, source: str, request: str, last: int
) -> tuple[onnx.NodeProto, list[TensorProto]]:
    """A ``com.microsoft`` ``op_type`` node over ``source`` (its input 0), whose last dimension
    is ``last``: BiasGelu gets a bias, SkipLayerNormalization the request's own ``request`` as
    its skip (never empty: a rule taking the skip's shape for the output's would prove it)."""
    weights = []
    inputs = [source]
    if op_type == "BiasGelu":
        weights.append(helper.make_tensor("through_bias", TensorProto.FLOAT, [last], [0.5] * last))
        inputs.append("through_bias")
    if op_type == "SkipLayerNormalization":
        weights.append(helper.make_tensor("through_gamma", TensorProto.FLOAT, [last], [1.0] * last))
        inputs += [request, "through_gamma"]
    node = helper.make_node(op_type, inputs, ["through"], domain="com.microsoft")
    return node, weights


def empty_unsafe(op_type: str, *, made: str = "", through: str = "") -> bytes:
    """An EMPTY_UNSAFE ``op_type`` node (``_empty_unsafe_parts``) over request inputs with
    named dimensions. ``made``: how the input its kernel ends the process on is made from the
    request's: ``""`` (it is the request's), ``"slice"`` (``Slice(a, 0, cut)`` on the crashing
    axis, cut an int64 [1] request input: 0 makes it empty from non-empty inputs, which ended
    the process before admission asked for a proof), ``"nonzero"`` (its crashing axis gathered
    at the indices ``NonZero(m)`` gives, m a float [n] request input: all zeros makes it empty),
    ``"transpose"`` (transposed twice: the same dimensions, named, as a proof). ``through``: a
    contrib operator of :data:`THROUGH_OPS` between that value and the kernel (onnx infers no
    shape for it: ``blindai.server.contrib_shapes`` does)."""
    inputs, weights, node, name, axis = _empty_unsafe_parts(op_type)
    rank = len(next(i for i in inputs if i.name == name).type.tensor_type.shape.dim)
    nodes = []
    if made == "slice":
        inputs.append(helper.make_tensor_value_info("cut", TensorProto.INT64, [1]))
        weights += [
            helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in (("s0", 0), ("ax", axis))
        ]
        nodes.append(helper.make_node("Slice", [name, "s0", "cut", "ax"], ["made"]))
    elif made == "nonzero":
        inputs.append(helper.make_tensor_value_info("m", TensorProto.FLOAT, ["n"]))
        nodes += [
            helper.make_node("NonZero", ["m"], ["nz"]),
            helper.make_node("Squeeze", ["nz", "ax0"], ["idx"]),
            helper.make_node("Gather", [name, "idx"], ["made"], axis=axis),
        ]
        weights.append(helper.make_tensor("ax0", TensorProto.INT64, [1], [0]))
    elif made == "transpose":
        perm = list(reversed(range(rank)))
        nodes += [
            helper.make_node("Transpose", [name], ["t"], perm=perm),
            helper.make_node("Transpose", ["t"], ["made"], perm=perm),
        ]
    source = "made" if made else name
    if through:
        value = next(i for i in inputs if i.name == name)
        last = value.type.tensor_type.shape.dim[rank - 1].dim_value
        extra, more = _through(through, source, name, last)
        nodes.append(extra)
        weights += more
        source = "through"
    node.input[list(node.input).index(name)] = source
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([*nodes, node], "empty", inputs, [y], initializer=weights)
    return _contrib_model(graph)


def batched_gru_crash() -> bytes:
    """y = x + 0 * GRU(x's rows, cut to [0:c]), x float [batch, 3], c = min(1, |x[:, 0] - 7|)
    as int64: a batchable model (the probe's rows, 0 and normal draws, give c = 1) whose run
    ends onnxruntime's process (a GRU over an empty sequence, SIGABRT) when any row of the run
    starts with 7. Admitted only with ``--no-empty-kernel-proofs``."""
    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    x = helper.make_tensor_value_info("x", f, ["batch", 3])
    y = helper.make_tensor_value_info("y", f, ["batch", 3])
    weights = [
        helper.make_tensor("w", f, [1, 6, 3], [0.1] * 18),
        helper.make_tensor("r", f, [1, 6, 2], [0.1] * 12),
        helper.make_tensor("c0", i64, [1], [0]),
        helper.make_tensor("c1", i64, [1], [1]),
        *(helper.make_tensor(n, f, [], [v]) for n, v in (("seven", 7), ("one", 1), ("no", 0))),
    ]
    nodes = [
        helper.make_node("Slice", ["x", "c0", "c1", "c1"], ["first"]),
        helper.make_node("Sub", ["first", "seven"], ["d"]),
        helper.make_node("Abs", ["d"], ["a"]),
        helper.make_node("ReduceMin", ["a"], ["m"], keepdims=0),
        helper.make_node("Min", ["m", "one"], ["m1"]),
        helper.make_node("Cast", ["m1"], ["c"], to=i64),
        helper.make_node("Reshape", ["c", "c1"], ["cut"]),
        helper.make_node("Unsqueeze", ["x", "c1"], ["seqs"]),
        helper.make_node("Slice", ["seqs", "c0", "cut", "c0"], ["seq"]),
        helper.make_node("GRU", ["seq", "w", "r"], ["g"], hidden_size=2),
        helper.make_node("ReduceSum", ["g"], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "no"], ["z"]),
        helper.make_node("Add", ["x", "z"], ["y"]),
    ]
    return _model(helper.make_graph(nodes, "batched_gru_crash", [x], [y], initializer=weights))


def empty_unsafe_feeds(op_type: str, *, made: str = "", empty: bool = False) -> dict[str, object]:
    """Request inputs for :func:`empty_unsafe`, none empty; ``empty``: its ``made`` input
    makes the crashing one empty (cut = 0, m all zeros)."""
    import numpy as np

    inputs, _, _, _, _ = _empty_unsafe_parts(op_type)
    sizes = {"seq": 3, "batch": 2, "kv": 5, "n": 2}
    feeds: dict[str, object] = {}
    for value in inputs:
        dims = [d.dim_value or sizes[d.dim_param] for d in value.type.tensor_type.shape.dim]
        dtype = np.int64 if value.type.tensor_type.elem_type == TensorProto.INT64 else np.float32
        feeds[value.name] = np.zeros(dims, dtype) if dtype == np.int64 else np.ones(dims, dtype)
    if made == "slice":
        feeds["cut"] = np.array([0 if empty else 1], np.int64)
    if made == "nonzero":
        feeds["m"] = np.array([0.0, 0.0] if empty else [0.0, 1.0], np.float32)
    return feeds


# Models that make contrib_shapes' stand-ins claim a dimension a run does not have


def _skip_of(made: list[onnx.NodeProto], weights: list[TensorProto], shape: str) -> bytes:
    """x (float [batch, 3, 4], a request's) -> SkipLayerNormalization(x, skip), skip =
    Expand(0.0, Concat(``shape`` [1], [3, 4])): a skip whose batch is ``shape``'s value, which
    ``made`` (nodes) computes; the kernel divides by zero (SIGFPE) where it runs to 0."""
    f = TensorProto.FLOAT
    x = helper.make_tensor_value_info("x", f, ["batch", 3, 4])
    y = helper.make_tensor_value_info("y", f, None)
    weights = [
        *weights,
        helper.make_tensor("skip_tail", TensorProto.INT64, [2], [3, 4]),
        helper.make_tensor("skip_zero", f, [], [0.0]),
        helper.make_tensor("gamma", f, [4], [1.0] * 4),
        helper.make_tensor("beta", f, [4], [0.0] * 4),
    ]
    nodes = [
        *made,
        helper.make_node("Concat", [shape, "skip_tail"], ["skip_shape"], axis=0),
        helper.make_node("Expand", ["skip_zero", "skip_shape"], ["skip"]),
        helper.make_node(
            "SkipLayerNormalization", ["x", "skip", "gamma", "beta"], ["y"], domain="com.microsoft"
        ),
    ]
    return _contrib_model(helper.make_graph(nodes, "skip_of", [x], [y], initializer=weights))


def where_of_another_rank(kind: str) -> bytes:
    """w = Where(Equal(s, c), a, s), whose result onnxruntime broadcasts to another rank than
    s's 1-D (the rank a stand-in of Where over sizes and constants gives), then the skip's batch
    made from Shape(w), which onnx inferred 1 and runs 0 (:func:`_skip_of`). ``kind``:
    ``"scalar"``: s, c and a 0-D constants: w is 0-D, Shape(Shape(w)) is [0] (a stand-in: [1]);
    ``"matrix"``: s = Concat of x's two first dimensions, each Unsqueezed on two axes ([2, 1]),
    c = [-1, -1]: w is [2, 2], 2 - Shape(w)[1] is 0 (a stand-in: [2, 1], and 1)."""
    i64 = TensorProto.INT64
    c = lambda n, dims, v: helper.make_tensor(n, i64, dims, v)  # noqa: E731
    if kind == "scalar":
        weights = [c("s", [], [5]), c("c", [], [-1]), c("a", [], [1])]
        made = [
            helper.make_node("Equal", ["s", "c"], ["e"]),
            helper.make_node("Where", ["e", "a", "s"], ["w"]),
            helper.make_node("Shape", ["w"], ["w_shape"]),
            helper.make_node("Shape", ["w_shape"], ["batch"]),
        ]
        return _skip_of(made, weights, "batch")
    weights = [c("i0", [], [0]), c("i1", [], [1]), c("axes", [2], [0, 1]), c("c", [2], [-1, -1])]
    weights += [c("a", [], [1]), c("one", [1], [1]), c("two", [1], [2])]
    made = [helper.make_node("Shape", ["x"], ["x_shape"])]
    for k in (0, 1):
        made.append(helper.make_node("Gather", ["x_shape", f"i{k}"], [f"g{k}"]))
        made.append(helper.make_node("Unsqueeze", [f"g{k}", "axes"], [f"u{k}"]))
    made += [
        helper.make_node("Concat", ["u0", "u1"], ["s"], axis=0),
        helper.make_node("Equal", ["s", "c"], ["e"]),
        helper.make_node("Where", ["e", "a", "s"], ["w"]),
        helper.make_node("Shape", ["w"], ["w_shape"]),
        helper.make_node("Slice", ["w_shape", "one", "two"], ["columns"]),
        helper.make_node("Sub", ["two", "columns"], ["batch"]),
    ]
    return _skip_of(made, weights, "batch")


def function_named_like_a_kernel(op_type: str, *, version: int) -> bytes:
    """x (float [seq, batch, 2], a request's) -> GRU(com.microsoft ``op_type``(made)), the
    model also defining a local function ``com.microsoft.op_type``, com.microsoft imported at
    ``version``. Version 1: onnxruntime runs its kernel (the input's shape) on made = Slice(x,
    0, cut) (cut a request's [1]: 0 empties it), where the function's body claims a static
    [2, 3, 2]; version 0: onnxruntime knows no such operator and runs the function, whose body
    empties x (Slice to 0 rows), where a rule of the kernel claims x's shape. Either way the
    GRU's input runs empty (std::terminate)."""
    i64, f = TensorProto.INT64, TensorProto.FLOAT
    inputs, weights, gru, _, _ = _empty_unsafe_parts("GRU")
    if version >= 1:
        body = [
            helper.make_node("Constant", [], ["shape"], value_ints=[2, 3, 2]),
            helper.make_node(
                "ConstantOfShape", ["shape"], ["Y"], value=helper.make_tensor("v", f, [1], [1.0])
            ),
        ]
    else:
        body = [
            helper.make_node("Constant", [], ["zero"], value_ints=[0]),
            helper.make_node("Slice", ["X", "zero", "zero", "zero"], ["Y"]),
        ]
    function = helper.make_function(
        "com.microsoft", op_type, ["X"], ["Y"], body, [helper.make_opsetid("", OPSET)]
    )
    nodes = [helper.make_node(op_type, ["made"], ["kernel"], domain="com.microsoft")]
    if version >= 1:
        inputs.append(helper.make_tensor_value_info("cut", i64, [1]))
        weights.append(helper.make_tensor("start", i64, [1], [0]))
        nodes.insert(0, helper.make_node("Slice", ["x", "start", "cut", "start"], ["made"]))
    else:
        nodes.insert(0, helper.make_node("Identity", ["x"], ["made"]))
    gru.input[0] = "kernel"
    y = helper.make_tensor_value_info("y", f, None)
    graph = helper.make_graph([*nodes, gru], "named", inputs, [y], initializer=weights)
    model = helper.make_model(
        graph,
        opset_imports=[
            helper.make_opsetid("", OPSET),
            helper.make_opsetid("com.microsoft", version),
        ],
        functions=[function],
    )
    model.ir_version = 8
    return model.SerializeToString()


def function_of_another_opset(version: int, *, emptied: bool = True) -> bytes:
    """x (float [batch, 3, 4], a request's) -> SkipLayerNormalization(x, skip), skip =
    local.F(a, made), a float [1, 3, 4] constant, F a model-local function ``Add(A, B)`` that
    imports opset ``version`` (the model: 17); made = Slice(x, 0, cut) (``emptied``; cut a
    request's [1]) or x. onnx infers the body with the function's opset (6: no broadcasting,
    the output has A's [1, 3, 4]), onnxruntime runs it with the model's (17: [1, 3, 4] and
    [0, 3, 4] broadcast to [0, 3, 4], the skip's batch: SIGFPE)."""
    i64, f = TensorProto.INT64, TensorProto.FLOAT
    function = helper.make_function(
        "local",
        "F",
        ["A", "B"],
        ["Y"],
        [helper.make_node("Add", ["A", "B"], ["Y"])],
        [helper.make_opsetid("", version)],
    )
    x = helper.make_tensor_value_info("x", f, ["batch", 3, 4])
    inputs = [x]
    weights = [
        helper.make_tensor("a", f, [1, 3, 4], [0.0] * 12),
        helper.make_tensor("gamma", f, [4], [1.0] * 4),
        helper.make_tensor("beta", f, [4], [0.0] * 4),
    ]
    nodes = [helper.make_node("Identity", ["x"], ["made"])]
    if emptied:
        inputs.append(helper.make_tensor_value_info("cut", i64, [1]))
        weights.append(helper.make_tensor("start", i64, [1], [0]))
        nodes = [helper.make_node("Slice", ["x", "start", "cut", "start"], ["made"])]
    nodes += [
        helper.make_node("F", ["a", "made"], ["skip"], domain="local"),
        helper.make_node(
            "SkipLayerNormalization", ["x", "skip", "gamma", "beta"], ["y"], domain="com.microsoft"
        ),
    ]
    y = helper.make_tensor_value_info("y", f, None)
    graph = helper.make_graph(nodes, "opset", inputs, [y], initializer=weights)
    opsets = [
        helper.make_opsetid(d, v) for d, v in (("", OPSET), ("local", 1), ("com.microsoft", 1))
    ]
    model = helper.make_model(graph, opset_imports=opsets, functions=[function])
    model.ir_version = 8
    return model.SerializeToString()


def multi_head_attention_of_an_emptied_query() -> bytes:
    """y = com.microsoft MultiHeadAttention(q, k, v), num_heads 2: q = Slice(q0, 0, cut) and
    k = Slice(k0, 0, cut) on their hidden size (q0 [batch, seq, 4], k0 [batch, kv, 4], cut a
    request's [1]), v a request's [batch, kv, 6]. With cut 0 the query's and key's hidden size
    is 0, the value's is not: the kernel divides by zero (SIGFPE)."""
    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    inputs = [
        helper.make_tensor_value_info("q0", f, ["batch", "seq", 4]),
        helper.make_tensor_value_info("k0", f, ["batch", "kv", 4]),
        helper.make_tensor_value_info("v", f, ["batch", "kv", 6]),
        helper.make_tensor_value_info("cut", i64, [1]),
    ]
    weights = [helper.make_tensor(n, i64, [1], [v]) for n, v in (("start", 0), ("axis", 2))]
    nodes = [
        helper.make_node("Slice", ["q0", "start", "cut", "axis"], ["q"]),
        helper.make_node("Slice", ["k0", "start", "cut", "axis"], ["k"]),
        helper.make_node(
            "MultiHeadAttention", ["q", "k", "v"], ["y"], domain="com.microsoft", num_heads=2
        ),
    ]
    y = helper.make_tensor_value_info("y", f, None)
    return _contrib_model(helper.make_graph(nodes, "mha", inputs, [y], initializer=weights))


def group_query_attention(*, made: str = "") -> bytes:
    """y = com.microsoft GroupQueryAttention(q, seqlens_k, total_sequence_length), num_heads 2,
    kv_num_heads 1, the query packed with the key and value: q float [batch, seq, 32]. ``made``
    ``"slice"``: q = Slice(q0, 0, cut) on its hidden size (cut a request's [1]: 0 empties it).
    The kernel divides by zero (SIGFPE) on an empty query batch or hidden size."""
    f, i32, i64 = TensorProto.FLOAT, TensorProto.INT32, TensorProto.INT64
    inputs = [
        helper.make_tensor_value_info("q0", f, ["batch", "seq", 32]),
        helper.make_tensor_value_info("seqlens_k", i32, ["batch"]),
        helper.make_tensor_value_info("total", i32, []),
    ]
    weights = []
    nodes = [helper.make_node("Identity", ["q0"], ["q"])]
    if made == "slice":
        inputs.append(helper.make_tensor_value_info("cut", i64, [1]))
        weights = [helper.make_tensor(n, i64, [1], [v]) for n, v in (("start", 0), ("axis", 2))]
        nodes = [helper.make_node("Slice", ["q0", "start", "cut", "axis"], ["q"])]
    names = ["q", "", "", "", "", "seqlens_k", "total"]
    nodes.append(
        helper.make_node(
            "GroupQueryAttention",
            names,
            ["y", "present_key", "present_value"],
            domain="com.microsoft",
            num_heads=2,
            kv_num_heads=1,
        )
    )
    y = helper.make_tensor_value_info("y", f, None)
    return _contrib_model(helper.make_graph(nodes, "gqa", inputs, [y], initializer=weights))


def group_query_attention_feeds(*, batch: int = 1, cut: int | None = None) -> dict[str, object]:
    """One token per row for :func:`group_query_attention` (``cut``: its ``made`` slice's)."""
    import numpy as np

    feeds: dict[str, object] = {
        "q0": np.ones((batch, 1, 32), np.float32),
        "seqlens_k": np.zeros((batch,), np.int32),
        "total": np.array(1, np.int32),
    }
    if cut is not None:
        feeds["cut"] = np.array([cut], np.int64)
    return feeds


def sliced_attention(op_type: str) -> bytes:
    """y = com.microsoft ``op_type`` (``QAttention`` or ``DecoderMaskedMultiHeadAttention``,
    num_heads 2) over request inputs, one axis of which a Slice to the request's cut (an int64
    [1]) makes empty: QAttention's input batch (uint8 [batch, seq, 8], weights uint8 [8, 24]),
    DecoderMaskedMultiHeadAttention's query, key and value hidden size (float [batch, 1, 8]).
    Both kernels divide by zero there (SIGFPE)."""
    f, u8, i64 = TensorProto.FLOAT, TensorProto.UINT8, TensorProto.INT64
    cut = helper.make_tensor_value_info("cut", i64, [1])
    if op_type == "QAttention":
        inputs = [helper.make_tensor_value_info("x", u8, ["batch", "seq", 8]), cut]
        weights = [
            helper.make_tensor("w", u8, [8, 24], [1] * 192),
            helper.make_tensor("bias", f, [24], [0.0] * 24),
            helper.make_tensor("x_scale", f, [], [1.0]),
            helper.make_tensor("w_scale", f, [], [1.0]),
        ]
        sliced, axis, names = ["x"], 0, ["x_cut", "w", "bias", "x_scale", "w_scale"]
    else:
        inputs = [helper.make_tensor_value_info(n, f, ["batch", 1, 8]) for n in ("q", "k", "v")]
        inputs.append(cut)
        weights = []
        sliced, axis, names = ["q", "k", "v"], 2, ["q_cut", "k_cut", "v_cut"]
    weights += [helper.make_tensor(n, i64, [1], [v]) for n, v in (("start", 0), ("axis", axis))]
    nodes = [
        helper.make_node("Slice", [name, "start", "cut", "axis"], [f"{name}_cut"])
        for name in sliced
    ]
    nodes.append(helper.make_node(op_type, names, ["y"], domain="com.microsoft", num_heads=2))
    y = helper.make_tensor_value_info("y", f, None)
    return _contrib_model(helper.make_graph(nodes, "sliced", inputs, [y], initializer=weights))


def qlinear_lookup(op_type: str, *, inputs: int) -> bytes:
    """y = com.microsoft ``op_type`` (QLinearSigmoid or QLinearLeakyRelu) of x (uint8
    [batch, 4], a request's), its scales and zero point constants, given its first ``inputs``
    inputs (4: Y_zero_point not named at all, which aborts onnxruntime when the session is
    created; 5: named empty, which it runs)."""
    u8, f = TensorProto.UINT8, TensorProto.FLOAT
    x = helper.make_tensor_value_info("x", u8, ["batch", 4])
    weights = [
        helper.make_tensor("x_scale", f, [], [1.0]),
        helper.make_tensor("x_zero", u8, [], [0]),
        helper.make_tensor("y_scale", f, [], [1.0]),
    ]
    names = ["x", "x_scale", "x_zero", "y_scale", ""][:inputs]
    node = helper.make_node(op_type, names, ["y"], domain="com.microsoft")
    y = helper.make_tensor_value_info("y", u8, None)
    return _contrib_model(helper.make_graph([node], "lookup", [x], [y], initializer=weights))


def split_to_empty_pieces() -> bytes:
    """y = SequenceLength(SplitToSequence(ConstantOfShape([n, 0]))), ``n`` an int64 [1] request
    input: one kernel makes ``n`` empty tensors, none of them in the arena (0 bytes each) but
    about 140 bytes of onnxruntime's heap each (n = 4 000 000: 550 MiB past a 64 MiB arena cap,
    and ``n`` has no bound: the kernel cannot be stopped between two pieces)."""
    n = helper.make_tensor_value_info("n", TensorProto.INT64, [1])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [])
    nodes = [
        helper.make_node("Concat", ["n", "zero"], ["shape"], axis=0),
        helper.make_node(
            "ConstantOfShape",
            ["shape"],
            ["empty"],
            value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0]),
        ),
        helper.make_node("SplitToSequence", ["empty"], ["pieces"], axis=0),
        helper.make_node("SequenceLength", ["pieces"], ["y"]),
    ]
    zero = helper.make_tensor("zero", TensorProto.INT64, [1], [0])
    return _model(helper.make_graph(nodes, "pieces", [n], [y], initializer=[zero]))


def unique_of_a_range() -> bytes:
    """y = Shape(Unique(Range(0, n, 1))), ``n`` a float scalar request input: the Range's n
    floats are in the arena, the kernel's table of its distinct values (over 100 bytes each)
    on onnxruntime's heap (n = 8 000 000, a 32 MB Range: 600 MiB past a 64 MiB arena cap)."""
    n = helper.make_tensor_value_info("n", TensorProto.FLOAT, [])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [1])
    nodes = [
        helper.make_node("Range", ["zero", "n", "one"], ["values"]),
        helper.make_node("Unique", ["values"], ["distinct"], sorted=0),
        helper.make_node("Shape", ["distinct"], ["y"]),
    ]
    constants = [
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
    ]
    return _model(helper.make_graph(nodes, "unique", [n], [y], initializer=constants))


def loop_of_small_outputs(*, empty: bool = False) -> bytes:
    """y = Shape(Loop(M){scan out c}), ``M`` an int64 scalar request input, ``c`` a float
    constant of shape [] (``empty``: [0]): one scan output a trip, all alive until the loop
    ends. A [] output takes one 256-byte region of the capped arena a trip, and onnxruntime
    gives n regions back in time n squared, under the arena's lock, after the run (100 000
    trips: 45 s, every other run of the process stalled); an empty one takes no arena but
    about 200 bytes of onnxruntime's heap a trip."""
    m = helper.make_tensor_value_info("M", TensorProto.INT64, [])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [2 if empty else 1])
    shape = [0] if empty else []
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Identity", ["c"], ["scan"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("scan", TensorProto.FLOAT, shape),
        ],
        initializer=[helper.make_tensor("c", TensorProto.FLOAT, shape, [] if empty else [1.0])],
    )
    nodes = [
        helper.make_node("Loop", ["M", ""], ["all"], body=body),
        helper.make_node("Shape", ["all"], ["y"]),
    ]
    return _model(helper.make_graph(nodes, "small_outputs", [m], [y]))


def reshaped_by_request(n: int) -> bytes:
    """y = ReduceSum(P @ P), P = R @ R^T, R = Reshape(x, s): x float [n] and s int64 [2] both
    request inputs, and only operators whose work is fixed by their inputs' shapes... but for
    Reshape, whose output shape is s's values. With s = [1, n] a run is a dot product
    (microseconds: it qualifies for the event loop); with s = [a, n / a], the same input
    shapes, it is two a x a products (a = 2048: 8.6e9 multiply-adds)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])
    s = helper.make_tensor_value_info("s", TensorProto.INT64, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [])
    nodes = [
        helper.make_node("Reshape", ["x", "s"], ["r"]),
        helper.make_node("Transpose", ["r"], ["rt"], perm=[1, 0]),
        helper.make_node("MatMul", ["r", "rt"], ["p"]),
        helper.make_node("MatMul", ["p", "p"], ["q"]),
        helper.make_node("ReduceSum", ["q"], ["y"], keepdims=0),
    ]
    return _model(helper.make_graph(nodes, "reshaped", [x, s], [y]))


def roi_align(*, sampling_ratio: int = 0, output: int = 1) -> bytes:
    """y = Shape(RoiAlign(x, rois, [0])), x float [1, 1, 4, 4] and rois float [1, 4] request
    inputs: with ``sampling_ratio`` 0 (adaptive, the default) onnxruntime samples each bin
    ceil(region size / output size) times in each direction, and keeps every point (32 bytes)
    on its heap: a region [0, 0, 3000, 3000] took 411 MiB past a 64 MiB arena."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    rois = helper.make_tensor_value_info("rois", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [4])
    node = helper.make_node(
        "RoiAlign",
        ["x", "rois", "batch"],
        ["pooled"],
        output_height=output,
        output_width=output,
        sampling_ratio=sampling_ratio,
    )
    nodes = [node, helper.make_node("Shape", ["pooled"], ["y"])]
    batch = helper.make_tensor("batch", TensorProto.INT64, [1], [0])
    return _model(helper.make_graph(nodes, "roi_align", [x, rois], [y], initializer=[batch]))
