"""Operators whose onnxruntime kernels end the server's process, never end, or take memory
outside the capped arena, on inputs they do not check.

A run executes in the server's own process: a kernel that crashes stops every tenant's runs,
and one that never ends holds a worker for good (the run timeout stops a run between kernels
only). These were found by probing onnxruntime 1.32.0 with single-operator models, each in a
child process, on the values a request can send (``docs/limits.md``). Each operator is handled
by what its crash depends on:

* :data:`REFUSED`: refused wherever it is (the crash needs no hostile value at all, or the
  operator is rare enough not to be worth a proof; or, without crashing, its kernel takes
  memory outside the capped arena in proportion to what a request chooses).
* :data:`PROVEN`: allowed where onnx shape inference (over what onnxruntime itself checks at run
  time) and the model's constants prove its inputs sound; refused otherwise, and inside
  model-local functions (where no shape is inferred).
* :data:`EMPTY_UNSAFE`: crashes on a tensor with a zero-size dimension; common in real models,
  so allowed where the model proves non-zero the dimensions its kernel fails on
  (:data:`EMPTY_PROOFS`; refused inside model-local functions), and named so that the data
  plane refuses empty request inputs for such a model (which makes a main-graph input's
  dimensions, and its named ones, proofs: :class:`Requests`).
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import GraphProto, ModelProto, NodeProto, TensorShapeProto, TypeProto

from blindai.errors import InvalidInput

__all__ = [
    "EMPTY_PROOFS",
    "EMPTY_UNSAFE",
    "PROVEN",
    "REFUSED",
    "SYMBOLS_UNSOUND",
    "Requests",
    "check_proofs",
    "operator_of",
]

_CONTRIB = "com.microsoft"
_NAME_SHOWN = 64

_OFF_ARENA = (
    "its kernel takes onnxruntime's heap, outside --max-run-memory's arena, for each {what} "
    "(a request of a few bytes can make it take gigabytes, in one kernel that --run-timeout "
    "cannot stop); {instead}"
)
REFUSED: Mapping[tuple[str, str], str] = {
    (_CONTRIB, "AttnLSTM"): (
        "its kernel ends the process on inputs it does not check (an empty sequence, or its "
        "attention inputs left out); build the attention from standard operators and LSTM"
    ),
    **{
        (domain, "SplitToSequence"): _OFF_ARENA.format(
            what="piece it makes (an empty piece takes nothing from the arena)",
            instead="use Split, whose outputs the model counts",
        )
        for domain in ("", "ai.onnx")
    },
    **{
        (domain, "Unique"): _OFF_ARENA.format(
            what="distinct value of its input (over 100 bytes each)",
            instead="compute the distinct values outside the model",
        )
        for domain in ("", "ai.onnx")
    },
}
"""(domain, op_type) -> why it is refused. ``SplitToSequence`` and ``Unique`` do not crash, but
their memory is not bounded by the arena cap (measured on onnxruntime 1.32.0, a server with
``--max-run-memory`` 64 MiB: a 100-byte request splitting a [4 000 000, 0] tensor took
550 MiB more, and ``Unique`` of an 8 000 000-float ``Range`` 600 MiB more; the pieces'
count has no bound at all)."""

EMPTY_UNSAFE = frozenset(
    {("", "LSTM"), ("", "GRU"), ("ai.onnx", "LSTM"), ("ai.onnx", "GRU")}
    | {(_CONTRIB, op) for op in ("DynamicQuantizeLSTM", "MultiHeadAttention", "RotaryEmbedding")}
    | {(_CONTRIB, op) for op in ("GroupQueryAttention", "DecoderMaskedMultiHeadAttention")}
    | {(_CONTRIB, "QAttention")}
    | {(_CONTRIB, op) for op in ("SkipLayerNormalization", "SkipSimplifiedLayerNormalization")}
)
"""Operators whose kernel ends the process on a tensor with a zero-size dimension: LSTM and
GRU call ``std::terminate`` (GRU: an empty sequence, batch or input; LSTM: an empty batch);
MultiHeadAttention (an empty value or query hidden size), GroupQueryAttention (an empty
query batch or hidden size), DecoderMaskedMultiHeadAttention (an empty query hidden size),
QAttention (an empty batch) and the SkipLayerNormalizations (an empty skip batch) divide by
zero (SIGFPE); com.microsoft RotaryEmbedding reads out of bounds
(SIGSEGV) on an empty hidden size (given ``num_heads``, or a 4-D input). Each is admitted only
where :data:`EMPTY_PROOFS` holds."""


@dataclass(frozen=True)
class _Empty:
    """Which dimensions of which input an :data:`EMPTY_UNSAFE` kernel fails on."""

    inputs: tuple[int, ...]
    """The input checked: the first of these the node is given."""
    axes: tuple[int, ...] | None
    """Its axes that must be proven non-zero (negative: from the last); None: all of them."""
    crash: str
    """What the kernel does on a zero there."""
    layout_axes: tuple[int, ...] | None = None
    """``axes`` where the node's ``layout`` attribute is 1 (batch first)."""
    same: Mapping[int, tuple[int, int]] = field(default_factory=dict)
    """axis -> (input, axis) that onnxruntime checks it equal to before the kernel runs (its
    input size against the weights': a mismatch is an error, not a crash), which proves it
    too."""


_LSTM = _Empty((0,), (1,), "calls std::terminate on an empty batch", layout_axes=(0,))
_SKIP = _Empty((1,), (0,), "divides by zero (SIGFPE) on an empty skip batch")

EMPTY_PROOFS: Mapping[tuple[str, str], tuple[_Empty, ...]] = {
    **{(domain, "LSTM"): (_LSTM,) for domain in ("", "ai.onnx")},
    **{
        (domain, "GRU"): (
            _Empty(
                (0,),
                None,
                "calls std::terminate on an empty sequence, batch or input size",
                same={2: (1, 2)},
            ),
        )
        for domain in ("", "ai.onnx")
    },
    (_CONTRIB, "DynamicQuantizeLSTM"): (
        _Empty((0,), (1,), "calls std::terminate on an empty batch"),
    ),
    (_CONTRIB, "MultiHeadAttention"): (
        _Empty((2, 1, 0), (-1,), "divides by zero (SIGFPE) on an empty value hidden size"),
        # the key's, which onnxruntime checks equal (a BNSH key: the value's, proven above)
        _Empty((0,), (-1,), "divides by zero (SIGFPE) on an empty query hidden size"),
    ),
    (_CONTRIB, "GroupQueryAttention"): (
        # the query's hidden size: packed with the key and value, or theirs checked against it
        _Empty((0,), (0, -1), "divides by zero (SIGFPE) on an empty query batch or hidden size"),
    ),
    (_CONTRIB, "DecoderMaskedMultiHeadAttention"): (
        _Empty((0,), (-1,), "divides by zero (SIGFPE) on an empty query hidden size"),
    ),
    (_CONTRIB, "QAttention"): (_Empty((0,), (0,), "divides by zero (SIGFPE) on an empty batch"),),
    (_CONTRIB, "SkipLayerNormalization"): (_SKIP,),
    (_CONTRIB, "SkipSimplifiedLayerNormalization"): (_SKIP,),
    (_CONTRIB, "RotaryEmbedding"): (
        _Empty((0,), (-1,), "reads out of bounds (SIGSEGV) on an empty hidden size"),
    ),
}
"""(domain, op_type) of each :data:`EMPTY_UNSAFE` operator -> the dimensions its kernel ends
the process on when they are 0, each to be proven (probed in child processes, onnxruntime
1.32.0)."""

SYMBOLS_UNSOUND = frozenset({("", "Einsum"), ("ai.onnx", "Einsum")})
"""Operators for which onnx shape inference (onnx 1.23) gives an output a main-graph input's
dim_param where a run gives it another size, 0 included: ``Einsum("...,...->...")`` of x[N]
and an input of an unnamed dimension (sent empty) is inferred [N] and runs to [0] (so is
``"i,i->i"``). In a model with one of them, a dim_param proves nothing. The other operators
tried (``docs/limits.md``) name an input's dimension only where a run gives it that size."""


@dataclass(frozen=True)
class Requests:
    """What the data plane's refusal of empty request inputs proves (for a model with an
    :data:`EMPTY_UNSAFE` operator): no dimension of a request's input is 0."""

    inputs: frozenset[str] = frozenset()
    """The main graph's inputs a request feeds (none has an initializer of its name)."""
    symbols: frozenset[str] = frozenset()
    """Their dim_params: a value onnx inference gives one of them has, in a run, the size of
    that dimension of one of the inputs (empty where :data:`SYMBOLS_UNSOUND` is used)."""


@dataclass(frozen=True)
class _Scope:
    """What is known in a graph (and the graphs around it) of its values."""

    types: ChainMap[str, TypeProto]
    constants: ChainMap[str, np.ndarray]
    """Values fixed by the model: initializers no feed can replace, ``Constant`` outputs."""


_Proof = Callable[[NodeProto, _Scope], str | None]
"""What is unproven about a node's inputs (None: they are sound)."""


def _dims(value: TypeProto | None) -> list[int | None] | None:
    if value is None or not value.HasField("tensor_type"):
        return None
    if not value.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in value.tensor_type.shape.dim]


def _shown_dims(dims: list[int | None] | None) -> str:
    if dims is None:
        return "of an unknown shape"
    return f"of shape {['?' if d is None else d for d in dims]}"


def _input(node: NodeProto, index: int) -> str:
    return node.input[index] if len(node.input) > index else ""


def _square(node: NodeProto, scope: _Scope) -> str | None:
    dims = _dims(scope.types.get(_input(node, 0)))
    if dims is not None and len(dims) >= 2 and dims[-1] is not None and dims[-1] == dims[-2]:
        return None
    return (
        f"needs an input whose last two dimensions are static and equal (square matrices): "
        f"onnxruntime reads and writes out of bounds on others; its input is "
        f"{_shown_dims(dims)}. Give the model static shapes (or Reshape to a constant square "
        "shape)"
    )


def _kernel(node: NodeProto, scope: _Scope) -> str | None:
    if any(a.name == "kernel_shape" for a in node.attribute):
        return None  # onnxruntime checks the weights against it, and it against 0
    dims = _dims(scope.types.get(_input(node, 1)))
    if dims is not None and len(dims) >= 3 and all(d is not None and d > 0 for d in dims[2:]):
        return None
    return (
        f"needs a kernel_shape attribute, or weights whose kernel dimensions are static and "
        f"positive: onnxruntime's kernel never ends on a kernel dimension of 0 (its worker is "
        f"held for good); its weights are {_shown_dims(dims)}"
    )


def _stft(node: NodeProto, scope: _Scope) -> str | None:
    window = _input(node, 2)
    if window:
        dims = _dims(scope.types.get(window))
        if dims is None or len(dims) != 1 or not dims[0]:
            return (
                f"needs a window of a static, positive length: onnxruntime divides by it "
                f"(SIGFPE on 0); its window is {_shown_dims(dims)}"
            )
    length = _input(node, 3)
    if length:
        value = scope.constants.get(length)
        if value is None or value.size != 1 or int(value.reshape(-1)[0]) <= 0:
            return (
                "needs a constant, positive frame_length (an initializer or a Constant "
                "node): onnxruntime divides by it (SIGFPE on 0)"
            )
    return None


def _five_inputs(node: NodeProto, scope: _Scope) -> str | None:
    if len(node.input) >= 5:
        return None
    return (
        f"needs its fifth input (Y_zero_point) named, or left out as an empty name: "
        f"onnxruntime's kernel reads it past the node's {len(node.input)} inputs when the "
        "session is created (an assertion ends the process)"
    )


_ROI_SAMPLES = 1 << 20
"""Most sampling points a RoiAlign may take for one region (its kernel keeps 32 bytes of
heap, outside the arena, for each, per region being pooled)."""


def _sampling(node: NodeProto, scope: _Scope) -> str | None:
    ints = {a.name: a.i for a in node.attribute if a.type == onnx.AttributeProto.INT}
    ratio = ints.get("sampling_ratio", 0)
    if ratio <= 0:
        return (
            "needs a positive sampling_ratio: with 0 (adaptive) onnxruntime samples each bin "
            "as often as the region's size divided by the output's, read from the request's "
            "regions, and keeps every point on its heap, outside --max-run-memory's arena (a "
            "16-byte region of 3000 x 3000 took 411 MiB, one of 30 000 x 30 000 would take "
            "40 GiB); export it with a fixed sampling_ratio (2 is common)"
        )
    samples = ratio * ratio * ints.get("output_height", 1) * ints.get("output_width", 1)
    if samples > _ROI_SAMPLES:
        return (
            f"samples {samples} points a region (sampling_ratio squared times the output's "
            f"height and width), over {_ROI_SAMPLES}: onnxruntime keeps each on its heap, "
            "outside --max-run-memory's arena"
        )
    return None


PROVEN: Mapping[tuple[str, str], _Proof] = {
    ("", "RoiAlign"): _sampling,
    ("ai.onnx", "RoiAlign"): _sampling,
    (_CONTRIB, "Inverse"): _square,
    (_CONTRIB, "QLinearSigmoid"): _five_inputs,
    (_CONTRIB, "QLinearLeakyRelu"): _five_inputs,
    ("", "Conv"): _kernel,
    ("ai.onnx", "Conv"): _kernel,
    (_CONTRIB, "FusedConv"): _kernel,
    ("", "STFT"): _stft,
    ("ai.onnx", "STFT"): _stft,
}
"""(domain, op_type) -> the proof its inputs need."""


def operator_of(node: NodeProto) -> str:
    """A node's operator as messages name it: ``domain op_type``, or ``op_type``."""
    return f"{node.domain} {node.op_type}" if node.domain else node.op_type


def _shown(text: str) -> str:
    return repr(text[:_NAME_SHOWN] + ("..." if len(text) > _NAME_SHOWN else ""))


def _constant(tensor: onnx.TensorProto) -> np.ndarray | None:
    if tensor.data_type not in (onnx.TensorProto.INT32, onnx.TensorProto.INT64):
        return None  # only integer scalars are read (frame_length)
    try:
        return onnx.numpy_helper.to_array(tensor)
    except (ValueError, TypeError):  # its data was dropped for the inference
        return None


def _scope(graph: GraphProto, outer: _Scope | None) -> _Scope:
    types: dict[str, TypeProto] = {}
    constants: dict[str, np.ndarray] = {}
    fed = {i.name for i in graph.input}
    for value_info in [*graph.input, *graph.value_info, *graph.output]:
        types[value_info.name] = value_info.type
    for t in graph.initializer:  # its dims, over a declared shape (left out) of its name
        types[t.name] = onnx.helper.make_tensor_type_proto(t.data_type, list(t.dims))
        value = None if t.name in fed else _constant(t)
        if value is not None:
            constants[t.name] = value
    for node in graph.node:
        for name in node.output:
            types.setdefault(name, TypeProto())  # a value of this graph, its shape unknown
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
            for attr in node.attribute:
                value = _constant(attr.t) if attr.name == "value" else None
                if attr.name == "value_int":
                    value = np.array(attr.i, np.int64)
                if value is not None:
                    constants[node.output[0]] = value
    if outer is None:
        return _Scope(ChainMap(types), ChainMap(constants))
    # the outer scopes' maps are shared, not copied (a model may have many small subgraphs)
    return _Scope(outer.types.new_child(types), outer.constants.new_child(constants))


def _rule_axes(node: NodeProto, rule: _Empty, rank: int) -> list[int]:
    layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
    axes = rule.layout_axes if layout == 1 and rule.layout_axes is not None else rule.axes
    return list(range(rank)) if axes is None else [a % rank for a in axes if -rank <= a < rank]


def _nonzero(dim: TensorShapeProto.Dimension, symbols: frozenset[str]) -> bool:
    if dim.HasField("dim_value"):
        return dim.dim_value > 0
    return bool(dim.dim_param) and dim.dim_param in symbols


def _dim(dim: TensorShapeProto.Dimension) -> int | str:
    return dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or "?")


def _shape_of(scope: _Scope, name: str) -> list[TensorShapeProto.Dimension] | None:
    value = scope.types.get(name)
    if value is None or not value.HasField("tensor_type"):
        return None
    return list(value.tensor_type.shape.dim) if value.tensor_type.HasField("shape") else None


def _same_nonzero(
    node: NodeProto, scope: _Scope, rule: _Empty, axis: int, requests: Requests
) -> bool:
    """Whether the dimension onnxruntime checks ``axis`` equal to is proven non-zero."""
    if axis not in rule.same:
        return False
    index, other = rule.same[axis]
    dims = _shape_of(scope, _input(node, index)) if _input(node, index) else None
    return dims is not None and len(dims) > other and _nonzero(dims[other], requests.symbols)


def _empty_proof(node: NodeProto, scope: _Scope, requests: Requests) -> str | None:
    """What is unproven about the dimensions ``node``'s kernel ends the process on if 0."""
    for rule in EMPTY_PROOFS[(node.domain, node.op_type)]:
        problem = _empty_rule(node, scope, requests, rule)
        if problem is not None:
            return problem
    return None


def _empty_rule(node: NodeProto, scope: _Scope, requests: Requests, rule: _Empty) -> str | None:
    """What is unproven about the dimensions of one :data:`EMPTY_PROOFS` rule."""
    index = next((i for i in rule.inputs if _input(node, i)), rule.inputs[-1])
    name = _input(node, index)
    if not name:
        return None  # onnxruntime refuses the node without it
    if name in requests.inputs and all(name not in m for m in scope.types.maps[:-1]):
        return None  # a request's input: the data plane refuses it empty
    dims = _shape_of(scope, name)
    axes = [] if dims is None else _rule_axes(node, rule, len(dims))
    if dims is not None and len(axes) == len(rule.axes or axes):
        if all(
            _nonzero(dims[a], requests.symbols) or _same_nonzero(node, scope, rule, a, requests)
            for a in axes
        ):
            return None
    shown = "of an unknown shape" if dims is None else f"of shape {[_dim(d) for d in dims]}"
    which = "every dimension" if rule.axes is None else f"dimension(s) {axes or list(rule.axes)}"
    return (
        f"needs {which} of its input {index} proven non-zero: onnxruntime's kernel {rule.crash}, "
        f"which ends the server's process; its input is {shown}. Give the model static shapes "
        "there, or dynamic dimensions that are the model inputs' own (a dim_param of a "
        "main-graph input, which no request may send empty)"
    )


def check_proofs(
    model: ModelProto, *, requests: Requests | None = None, empty: bool = True
) -> None:
    """Refuse (InvalidInput) a :data:`PROVEN` operator whose inputs ``model`` does not prove
    sound, or an :data:`EMPTY_UNSAFE` one whose dimensions :data:`EMPTY_PROOFS` names it does
    not prove non-zero (with ``requests``: what the requests' inputs prove; None: nothing).
    ``model``: after shape inference, its declared-only shapes left out (or, where inference
    failed, as it is: initializers and graph inputs still prove their own shapes). ``empty``
    False: :data:`EMPTY_PROOFS` are not asked (the server's ``--no-empty-kernel-proofs``)."""
    requests = requests or Requests()
    pending: list[tuple[GraphProto, _Scope | None]] = [(model.graph, None)]
    while pending:
        graph, outer = pending.pop()
        scope = _scope(graph, outer)
        for node in graph.node:
            key = (node.domain, node.op_type)
            proof = PROVEN.get(key)
            problem = None if proof is None else proof(node, scope)
            if empty and key in EMPTY_PROOFS:
                problem = _empty_proof(node, scope, requests)
            if problem is not None:
                label = f"node {_shown(node.name or node.op_type)} in graph {_shown(graph.name)}"
                raise InvalidInput(f"{label}: {operator_of(node)} {problem}")
            for attr in node.attribute:
                subgraphs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
                pending += [(sub, scope) for sub in subgraphs]
