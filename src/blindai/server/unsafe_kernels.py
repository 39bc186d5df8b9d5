"""Operators whose onnxruntime kernels end the server's process, or never end, on inputs they
do not check.

A run executes in the server's own process: a kernel that crashes stops every tenant's runs,
and one that never ends holds a worker for good (the run timeout stops a run between kernels
only). These were found by probing onnxruntime 1.32.0 with single-operator models, each in a
child process, on the values a request can send (``docs/limits.md``). Each operator is handled
by what its crash depends on:

* :data:`REFUSED`: refused wherever it is (the crash needs no hostile value at all, or the
  operator is rare enough not to be worth a proof).
* :data:`PROVEN`: allowed where onnx shape inference (over what onnxruntime itself checks at run
  time) and the model's constants prove its inputs sound; refused otherwise, and inside
  model-local functions (where no shape is inferred).
* :data:`EMPTY_UNSAFE`: crashes on a tensor with a zero-size dimension; common in real models,
  so allowed, and named so that the data plane refuses empty request inputs for such a model.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import GraphProto, ModelProto, NodeProto, TypeProto

from blindai.errors import InvalidInput

__all__ = ["EMPTY_UNSAFE", "PROVEN", "REFUSED", "check_proofs", "operator_of"]

_CONTRIB = "com.microsoft"
_NAME_SHOWN = 64

REFUSED: Mapping[tuple[str, str], str] = {
    (_CONTRIB, "AttnLSTM"): (
        "its kernel ends the process on inputs it does not check (an empty sequence, or its "
        "attention inputs left out); build the attention from standard operators and LSTM"
    ),
}
"""(domain, op_type) -> why it is refused."""

EMPTY_UNSAFE = frozenset(
    {("", "LSTM"), ("", "GRU"), ("ai.onnx", "LSTM"), ("ai.onnx", "GRU")}
    | {(_CONTRIB, op) for op in ("DynamicQuantizeLSTM", "MultiHeadAttention", "RotaryEmbedding")}
    | {(_CONTRIB, op) for op in ("SkipLayerNormalization", "SkipSimplifiedLayerNormalization")}
)
"""Operators whose kernel ends the process on a tensor with a zero-size dimension: LSTM and
GRU call ``std::terminate`` (GRU: an empty sequence, batch or input; LSTM: an empty batch);
MultiHeadAttention (an empty value hidden size) and the SkipLayerNormalizations (an empty
skip batch) divide by zero (SIGFPE); com.microsoft RotaryEmbedding reads out of bounds
(SIGSEGV) on an empty hidden size."""


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


PROVEN: Mapping[tuple[str, str], _Proof] = {
    (_CONTRIB, "Inverse"): _square,
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
    for t in graph.initializer:
        types[t.name] = onnx.helper.make_tensor_type_proto(t.data_type, list(t.dims))
        value = None if t.name in fed else _constant(t)
        if value is not None:
            constants[t.name] = value
    for value_info in [*graph.input, *graph.value_info, *graph.output]:
        types[value_info.name] = value_info.type
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


def check_proofs(model: ModelProto) -> None:
    """Refuse (InvalidInput) a :data:`PROVEN` operator whose inputs ``model`` does not prove
    sound. ``model``: after shape inference, its declared-only shapes left out (or, where
    inference failed, as it is: initializers and graph inputs still prove their own shapes)."""
    pending: list[tuple[GraphProto, _Scope | None]] = [(model.graph, None)]
    while pending:
        graph, outer = pending.pop()
        scope = _scope(graph, outer)
        for node in graph.node:
            proof = PROVEN.get((node.domain, node.op_type))
            problem = None if proof is None else proof(node, scope)
            if problem is not None:
                label = f"node {_shown(node.name or node.op_type)} in graph {_shown(graph.name)}"
                raise InvalidInput(f"{label}: {operator_of(node)} {problem}")
            for attr in node.attribute:
                subgraphs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
                pending += [(sub, scope) for sub in subgraphs]
