"""Admission checks on an uploaded ONNX model, before onnxruntime ever sees it.

Everything here works on the parsed ``onnx.ModelProto`` and never touches the disk:

- **No external data.** A tensor whose ``data_location`` is ``EXTERNAL`` (or that carries any
  ``external_data`` entry) would make onnxruntime read a file the model names, relative to the
  server's working directory, or (``*/_ORT_MEM_ADDR_/*``) an address in the server's memory.
  Every tensor is checked: initializers, sparse initializers, ``Constant`` and other node
  attributes, in every subgraph (``If``/``Loop``/``Scan`` bodies), model-local functions and
  training graphs.
- **Bounded graphs.** At most ``max_nodes`` nodes in all graphs together, and subgraphs nested at
  most ``max_subgraph_depth`` deep (onnxruntime's compile time and memory grow with both).
- **No operator that ends the process.** Operators whose onnxruntime kernel crashes (or never
  ends) on inputs it does not check are refused, or allowed only where the model proves those
  inputs sound (those that crash on an empty tensor: the dimensions they fail on proven
  non-zero, and named so that their runs refuse empty request inputs)
  (:mod:`blindai.server.unsafe_kernels`). The proofs use onnx shape inference from what
  onnxruntime checks at run time: the shapes a model merely declares (``value_info``,
  outputs, subgraph inputs), which it could lie in, are left out first; the output shapes of
  common contrib operators (onnx infers none) are put in from
  :mod:`blindai.server.contrib_shapes`, and the model-local functions onnxruntime runs other
  than onnx infers them are left out (:mod:`blindai.server._local_functions`).
- **Bounded static shapes.** When onnx shape inference (with constant propagation) already
  proves that a value of the graph is larger than ``max_tensor_bytes``, the model is refused:
  running it could only fail. Weights are left out of the inference (only their type and
  shape are given) so that it costs little time and memory even for large models: the parsed
  model is consumed, its large tensors' data dropped in place rather than copied (see
  :func:`check_model`).

What is *not* checked here: shapes that depend on the request's values (``ConstantOfShape`` of
an input, ``Loop`` trip counts). Those are bounded at run time by onnxruntime's capped arena
and the run timeout; compile time and memory are bounded by running the compilation in a
separate, limited process (``blindai.server.compile_guard``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import onnx
from onnx import AttributeProto, GraphProto, ModelProto, SparseTensorProto, TensorProto

from blindai.errors import InvalidInput
from blindai.server._fold import fold_constants
from blindai.server._local_functions import take_unsound_functions
from blindai.server._strings import StringLimits, check_strings, known, string_constants
from blindai.server.contrib_shapes import add_stand_ins
from blindai.server.unsafe_kernels import (
    EMPTY_UNSAFE,
    PROVEN,
    REFUSED,
    SYMBOLS_UNSOUND,
    Requests,
    check_proofs,
    operator_of,
)

__all__ = ["AdmissionLimits", "Admitted", "check_model", "parse_model"]

_SMALL_INITIALIZER = 1 << 10
"""Initializers up to this size keep their values for shape inference (shapes, axes)."""
_LONG_VECTOR = 1 << 20
"""The longest one-dimensional graph input shape inference propagates data through (a shape
has at most a few dozen dimensions; 1 Mi placeholders take about 220 MB and 0.2 s)."""
_INTEGER = frozenset({TensorProto.INT32, TensorProto.INT64})
"""The element types whose values onnx shape inference reads as shapes (``ParseData``)."""
_DATA_FIELDS = (
    "raw_data",
    "float_data",
    "int32_data",
    "string_data",
    "int64_data",
    "double_data",
    "uint64_data",
)
_NAME_SHOWN = 64


@dataclass(frozen=True)
class Admitted:
    """What the checks of an admitted model found that its runs must take into account."""

    empty_unsafe: tuple[str, ...] = ()
    """The operators of the model (sorted, once each) whose onnxruntime kernels end the
    process on a tensor with a zero-size dimension: its runs must refuse empty inputs."""


@dataclass(frozen=True, kw_only=True)
class AdmissionLimits:
    """Bounds an uploaded model must stay within (the server builds them from its settings)."""

    max_nodes: int
    """Nodes in all graphs and subgraphs together."""
    max_subgraph_depth: int
    """How deep ``If``/``Loop``/``Scan`` bodies may nest (the main graph is depth 0)."""
    max_tensor_bytes: int
    """Largest value a static shape may imply (the per-request memory limit)."""
    shape_inference: bool = True
    """Whether to run onnx shape inference to find static shapes over ``max_tensor_bytes``."""
    max_string_bytes: int | None = None
    """Heap bytes the characters of the model's string values may take for one request, beyond
    the arena (``blindai.server._strings``); None: not checked."""
    max_request_bytes: int = 64 << 20
    """The largest request body: the most characters a request's strings hold."""
    empty_kernel_proofs: bool = True
    """Whether an ``unsafe_kernels.EMPTY_UNSAFE`` operator needs the dimensions it fails on
    proven non-zero (False: admitted, its runs refuse empty request inputs only)."""


def _shown(text: str) -> str:
    """A model-chosen name as it may appear in an error message: short and printable."""
    cut = text[:_NAME_SHOWN] + ("..." if len(text) > _NAME_SHOWN else "")
    return repr(cut)


def parse_model(data: bytes) -> ModelProto:
    """Parse model bytes; InvalidInput when they are not an ONNX model protobuf."""
    model = ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError, or its recursion limit
        raise InvalidInput(
            "the upload is not a valid ONNX model (protobuf does not parse, or nests too deep)"
        ) from exc
    if not model.HasField("graph"):
        raise InvalidInput("the upload is not an ONNX model: it has no graph")
    return model


@dataclass
class _Walk:
    """Every graph of a model with its nesting depth, and every tensor in them."""

    graphs: list[tuple[GraphProto, int]]
    tensors: list[tuple[str, TensorProto]]
    nodes: int
    proofs: bool = False
    """Whether a node needs its inputs proven sound (``unsafe_kernels.PROVEN`` or
    ``EMPTY_UNSAFE``)."""
    symbols_unsound: bool = False
    """Whether an operator of ``unsafe_kernels.SYMBOLS_UNSOUND`` is used: then an input's
    dim_param proves nothing."""
    empty_unsafe: set[str] = field(default_factory=set)
    """The ``unsafe_kernels.EMPTY_UNSAFE`` operators found."""
    empty_proofs: bool = True
    """Whether those must be proven (``AdmissionLimits.empty_kernel_proofs``)."""


def _sparse(where: str, sparse: SparseTensorProto) -> Iterator[tuple[str, TensorProto]]:
    yield where, sparse.values
    yield where, sparse.indices


def _attribute_tensors(where: str, attr: AttributeProto) -> Iterator[tuple[str, TensorProto]]:
    label = f"{where} attribute {_shown(attr.name)}"
    if attr.HasField("t"):
        yield label, attr.t
    for t in attr.tensors:
        yield label, t
    if attr.HasField("sparse_tensor"):
        yield from _sparse(label, attr.sparse_tensor)
    for s in attr.sparse_tensors:
        yield from _sparse(label, s)


def _walk(model: ModelProto, limits: AdmissionLimits) -> _Walk:
    """Visit all graphs iteratively (no recursion), enforcing node count and depth on the way."""
    found = _Walk([], [], 0, empty_proofs=limits.empty_kernel_proofs)
    roots: list[tuple[GraphProto, int]] = [(model.graph, 0)]
    for info in model.training_info:
        roots += [(info.initialization, 0), (info.algorithm, 0)]
    stack = list(roots)
    node_lists = [(f"function {_shown(f.name)}", f.node, 0) for f in model.functions]
    while stack or node_lists:
        if stack:
            graph, depth = stack.pop()
            found.graphs.append((graph, depth))
            where = f"graph {_shown(graph.name)}"
            found.tensors += [(f"initializer {_shown(t.name)}", t) for t in graph.initializer]
            for s in graph.sparse_initializer:
                found.tensors += _sparse("sparse initializer", s)
            node_lists.append((where, graph.node, depth))
            continue
        where, nodes, depth = node_lists.pop()
        found.nodes += len(nodes)
        if found.nodes > limits.max_nodes:
            raise InvalidInput(
                f"the model has more than {limits.max_nodes} nodes (all graphs together); "
                "this server's limit is --max-graph-nodes"
            )
        for node in nodes:
            label = f"node {_shown(node.name or node.op_type)} in {where}"
            _refuse_operator(node, label, in_function=where.startswith("function"), found=found)
            for attr in node.attribute:
                found.tensors += _attribute_tensors(label, attr)
                subgraphs = [attr.g] if attr.HasField("g") else []
                subgraphs += list(attr.graphs)
                if subgraphs and depth + 1 > limits.max_subgraph_depth:
                    raise InvalidInput(
                        f"subgraphs nest more than {limits.max_subgraph_depth} deep "
                        f"({label}); this server's limit is --max-subgraph-depth"
                    )
                stack += [(g, depth + 1) for g in subgraphs]
    return found


def _refuse_operator(node: onnx.NodeProto, label: str, *, in_function: bool, found: _Walk) -> None:
    """Refuse an operator of :data:`~blindai.server.unsafe_kernels.REFUSED`; note one of
    ``PROVEN`` or ``EMPTY_UNSAFE`` (either refused in a function, where no shape is
    inferred)."""
    key = (node.domain, node.op_type)
    found.symbols_unsound |= key in SYMBOLS_UNSOUND
    if key in EMPTY_UNSAFE:
        found.empty_unsafe.add(node.op_type)
    why = REFUSED.get(key)
    if why is not None:
        raise InvalidInput(f"{label}: {operator_of(node)} is refused: {why}")
    if key in PROVEN or (key in EMPTY_UNSAFE and found.empty_proofs):
        if in_function:
            raise InvalidInput(
                f"{label}: {operator_of(node)} is refused inside a model-local function: "
                "its inputs must be proven sound by shape inference, which does not see there"
            )
        found.proofs = True


def _forget_declared_shapes(graph: GraphProto, *, inputs: bool) -> None:
    """Drop the shapes a graph declares for its values but onnxruntime never checks at run
    time (``value_info``, outputs, and a subgraph's inputs; their element types stay), so that
    shape inference derives them from what it does check (the main graph's inputs,
    initializers' dims, constants): a model could otherwise declare a square matrix where a
    run gets another shape."""
    declared = [*graph.value_info, *graph.output, *(graph.input if inputs else [])]
    for value in declared:
        if value.type.HasField("tensor_type"):
            value.type.tensor_type.ClearField("shape")


def _initializers_as_inputs(graph: GraphProto) -> None:
    """Give a main-graph input that has an initializer of its name the initializer's dims:
    a request cannot feed it (onnxruntime lists it apart), so a run has the initializer's, and
    onnx inference would otherwise take the input's declared dims (measured: an input
    declared [N] with an initializer of [0] was inferred [N], and ran [0])."""
    initializers = {t.name: t for t in graph.initializer}
    for value in graph.input:
        init = initializers.get(value.name)
        if init is not None and value.type.HasField("tensor_type"):
            shape = onnx.helper.make_tensor_type_proto(init.data_type, list(init.dims))
            value.type.tensor_type.shape.CopyFrom(shape.tensor_type.shape)


def _requests(model: ModelProto, *, symbols: bool) -> Requests:
    """The main-graph inputs a request feeds (the data plane refuses them empty for a model
    with an ``EMPTY_UNSAFE`` operator) and, with ``symbols``, their dim_params."""
    graph = model.graph
    made = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
    fed = [i for i in graph.input if i.name not in made and i.type.HasField("tensor_type")]
    names = {d.dim_param for i in fed for d in i.type.tensor_type.shape.dim if d.dim_param}
    return Requests(frozenset(i.name for i in fed), frozenset(names) if symbols else frozenset())


def _refuse_external(tensors: list[tuple[str, TensorProto]]) -> None:
    for where, tensor in tensors:
        external = tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data) > 0
        if not external:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        raise InvalidInput(
            f"{where} keeps its data outside the model (external data at {_shown(location)}): "
            "this server never reads files or memory a model names; save the model with its "
            "weights inside (onnx.save_model(model, path, save_as_external_data=False))"
        )


def _itemsize(elem_type: int) -> int:
    try:
        return max(1, onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize)
    except (KeyError, ValueError, TypeError):
        return 8


def _static_bytes(value: onnx.ValueInfoProto) -> int | None:
    """Bytes of a value whose shape is fully static, else None."""
    if not value.type.HasField("tensor_type"):
        return None
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    dims = []
    for d in tensor.shape.dim:
        if not d.HasField("dim_value") or d.dim_value < 0:
            return None
        dims.append(d.dim_value)
    return int(math.prod(dims)) * _itemsize(tensor.elem_type)


def _declared_bytes(tensor: TensorProto) -> int:
    """The size a tensor's dims and type imply (not its data's, which need not agree)."""
    return int(math.prod(tensor.dims)) * _itemsize(tensor.data_type)


def _drop_weights_data(tensors: list[tuple[str, TensorProto]]) -> None:
    """Drop, in place, the data of every large tensor of a type onnx never reads as a shape
    (floats, ...), wherever it is in the model (initializers of every graph, ``Constant`` and
    other tensor attributes, functions): it keeps its type and dims.

    onnx's data propagation reads values of integer tensors only (``ParseData``), so a
    data-less float initializer costs the inference nothing, where the same weight as a graph
    input of one dimension made onnx spell out one placeholder per element (a 500 MB model of
    one-dimensional weights took 9.6 GB and 25 s, and ran the compile child out of memory).
    """
    for _, tensor in tensors:
        if tensor.data_type not in _INTEGER and _declared_bytes(tensor) > _SMALL_INITIALIZER:
            for name in _DATA_FIELDS:
                tensor.ClearField(name)


def _skeleton(model: ModelProto) -> None:
    """Make ``model`` (in place, its weights' data dropped) what shape inference needs.

    A large integer initializer of the main graph becomes a graph input of the same type and
    shape (its values unknown, as before: they are not copied for the inference); a large
    initializer also declared as a graph input is dropped (the input's type stands for it);
    sparse initializers of the main graph and training graphs are left out.
    """
    graph = model.graph
    declared = {i.name for i in graph.input}
    large = [
        (index, name in declared)
        for index, (name, size, dtype) in enumerate(
            (t.name, _declared_bytes(t), t.data_type) for t in graph.initializer
        )
        if size > _SMALL_INITIALIZER and (name in declared or dtype in _INTEGER)
    ]
    for index, is_declared in large:
        if not is_declared:
            init = graph.initializer[index]
            graph.input.append(
                onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
            )
            del init
    for index, _ in reversed(large):
        del graph.initializer[index]
    graph.ClearField("sparse_initializer")
    model.ClearField("training_info")


def _long_vector_input(graph: GraphProto) -> bool:
    """Whether a graph input is one-dimensional and longer than ``_LONG_VECTOR`` elements.

    onnx's data propagation reads a one-dimensional value of static length N that reaches an
    operator propagating data (``Add``, ``Mul``, ``Concat``, ``Gather``...) as N unknown
    values, one placeholder each (about 220 bytes): ``y = x + x`` with ``x`` of 16 Mi floats
    (a 64 MiB request) took 5 s and 3.6 GB, and was refused for ``--compile-memory``. Values
    that long are never shapes, which is all data propagation is for.
    """
    for value in graph.input:
        if not value.type.HasField("tensor_type"):
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 1 and dims[0].HasField("dim_value") and dims[0].dim_value > _LONG_VECTOR:
            return True
    return False


def _infer(model: ModelProto) -> ModelProto | None:
    """onnx's shape inference, with data propagation unless a graph input is a long vector
    (:func:`_long_vector_input`; without it fewer shapes are known: fewer values are refused
    for their static size at upload, which the arena cap then bounds at each run, and fewer
    dimensions are proven non-zero, which refuses the model rather than admits it)."""
    try:
        return onnx.shape_inference.infer_shapes(
            model,
            check_type=False,
            strict_mode=False,
            data_prop=not _long_vector_input(model.graph),
        )
    except Exception:  # inconsistent graphs are onnxruntime's to refuse, with its message
        return None


def _check_static_shapes(inferred: ModelProto, weights: set[str], limits: AdmissionLimits) -> None:
    pending: list[GraphProto] = [inferred.graph]
    while pending:
        graph = pending.pop()
        for value in [*graph.value_info, *graph.output]:
            size = _static_bytes(value)
            if size is not None and size > limits.max_tensor_bytes and value.name not in weights:
                raise InvalidInput(
                    f"value {_shown(value.name)} of the graph has a static shape of {size} "
                    f"bytes, over this server's per-request memory limit of "
                    f"{limits.max_tensor_bytes} bytes"
                )
        for node in graph.node:
            for attr in node.attribute:
                pending += [attr.g] if attr.HasField("g") else []
                pending += list(attr.graphs)


def check_model(model: ModelProto, *, limits: AdmissionLimits) -> Admitted:
    """Refuse (InvalidInput, 400) a model that names external data, exceeds the limits or
    uses an operator that ends the process; returns what its runs must take into account.

    ``model`` is consumed: with ``limits.shape_inference``, the data of its large tensors is
    dropped in place for the inference (no copy of the weights is made); keep the bytes, not
    the parsed model, to load it afterwards.
    """
    walk = _walk(model, limits)
    _refuse_external(walk.tensors)
    constants = string_constants(model) if limits.max_string_bytes is not None else {}
    inferred: ModelProto | None = None
    proofs = walk.proofs
    admitted = Admitted(tuple(sorted(walk.empty_unsafe)))
    for graph, depth in walk.graphs:
        _forget_declared_shapes(graph, inputs=depth > 0)
    _initializers_as_inputs(model.graph)
    requests = _requests(model, symbols=not walk.symbols_unsound)
    if limits.shape_inference:
        weights = {i.name for i in model.graph.initializer}
        _drop_weights_data(walk.tensors)
        del walk  # no reference to a tensor is left while the skeleton moves them
        _skeleton(model)
        fold_constants(model)
        add_stand_ins(model)
        taken = take_unsound_functions(model)
        inferred = _infer(model)
        model.functions.extend(taken)
        if inferred is not None:
            _check_static_shapes(inferred, weights, limits)
    if proofs:
        check_proofs(
            inferred if inferred is not None else model,
            requests=requests,
            empty=limits.empty_kernel_proofs,
        )
    if limits.max_string_bytes is not None:
        check_strings(
            model,
            types=_all_types(inferred),
            constants=constants,
            limits=StringLimits(
                max_string_bytes=limits.max_string_bytes,
                max_request_bytes=limits.max_request_bytes,
                max_run_memory=limits.max_tensor_bytes,
            ),
        )
    return admitted


def _all_types(inferred: ModelProto | None) -> dict[str, onnx.TypeProto]:
    """The type of every value onnx shape inference typed, in every graph."""
    if inferred is None:
        return {}
    found: dict[str, onnx.TypeProto] = {}
    pending: list[GraphProto] = [inferred.graph]
    while pending:
        graph = pending.pop()
        for value in [*graph.input, *graph.value_info, *graph.output]:
            if known(value.type):
                found[value.name] = value.type
        for node in graph.node:
            for attr in node.attribute:
                pending += [attr.g] if attr.HasField("g") else []
                pending += list(attr.graphs)
    return found
