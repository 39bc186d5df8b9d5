"""Output shapes of ``com.microsoft`` operators, for the admission's shape inference.

onnx infers no shape for operators it has no schema of: the contrib operators onnxruntime's
transformer optimizer writes (``SkipLayerNormalization``, ``BiasGelu``, ``FastGelu``, ...).
Every value after one was of an unknown shape, so the proofs of :mod:`unsafe_kernels` could
not see through them, and optimized transformers were refused. :data:`CONTRIB_SHAPES` says, as
data, what shape onnxruntime's kernel gives each output: parts of its inputs' shapes, static
sizes, an attribute's value, or an unknown size. Each rule was checked against what
onnxruntime 1.32 returns, on shapes where a dimension is 1 or the inputs differ
(``tests/unit/server/test_contrib_shapes.py``); a size onnxruntime takes from elsewhere (the
weights, by division) is left unknown, which proves nothing and is always sound.

:func:`add_stand_ins` puts a rule into the model that onnx infers (never the one onnxruntime
loads): the contrib node's outputs are renamed, and standard operators whose inferred shape is
the rule's make the original names (``Expand`` of a scalar of the rule's element type to a
shape made of ``Shape``, ``Slice`` and ``Concat``: onnx's data propagation carries the inputs'
sizes and named dimensions through them). One pass of onnx inference then goes through every
contrib node, however many there are; the contrib node itself stays, on the same inputs, for
the proofs to check.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
from onnx import (
    AttributeProto,
    GraphProto,
    ModelProto,
    NodeProto,
    TensorProto,
    helper,
    numpy_helper,
)

__all__ = [
    "CONTRIB_SHAPES",
    "MAX_STAND_INS",
    "STANDARD_REFINEMENTS",
    "Attribute",
    "Dims",
    "Output",
    "Part",
    "Static",
    "Unknown",
    "add_stand_ins",
]

_CONTRIB = "com.microsoft"
MAX_STAND_INS = 10_000
"""The most contrib nodes given a stand-in in one model (the others' outputs stay unknown)."""
_MIN_OPSET = 10
"""``Slice`` with inputs (10), ``NonZero`` (9), ``Expand`` (8): older models get none."""
_END = 2**63 - 1
_STANDARD = ("", "ai.onnx")
_INTEGER = (TensorProto.INT64, TensorProto.INT32)
_SMALL = 1 << 10
_MAX_RESHAPES = 4


@dataclass(frozen=True)
class Dims:
    """The dimensions ``[start:end]`` of input ``input``'s shape (end None: to the last)."""

    input: int
    start: int = 0
    end: int | None = None


@dataclass(frozen=True)
class Static:
    """One dimension of a fixed size."""

    size: int


@dataclass(frozen=True)
class Attribute:
    """One dimension: the node's integer attribute ``name`` (``index``: that element of its
    integer-list attribute); unknown where the node has no such attribute, or a negative value
    there."""

    name: str
    index: int | None = None


@dataclass(frozen=True)
class Unknown:
    """One dimension of a size not known before the run (it proves nothing)."""


Part = Dims | Static | Attribute | Unknown


@dataclass(frozen=True)
class Output:
    """The shape onnxruntime's kernel gives one output: its parts, concatenated."""

    shape: tuple[Part, ...]
    like: int = 0
    """The input whose element type the output has."""


_SAME = (Output((Dims(0),)),)
_ROW = Output((Dims(0, 0, -1), Static(1)))
_SKIP = (Output((Dims(0),)), _ROW, _ROW, Output((Dims(0),)))
_BATCH_SEQUENCE = (Dims(0, 0, 1), Dims(0, 1, 2))

CONTRIB_SHAPES: Mapping[tuple[str, str], tuple[Output | None, ...]] = {
    (_CONTRIB, "BiasGelu"): _SAME,
    (_CONTRIB, "FastGelu"): _SAME,
    (_CONTRIB, "Gelu"): _SAME,
    (_CONTRIB, "QuickGelu"): _SAME,
    (_CONTRIB, "RotaryEmbedding"): _SAME,
    (_CONTRIB, "SkipLayerNormalization"): _SKIP,
    (_CONTRIB, "SkipSimplifiedLayerNormalization"): _SKIP,
    **{(domain, "SimplifiedLayerNormalization"): _SAME for domain in ("", "ai.onnx")},
    (_CONTRIB, "Attention"): (Output((*_BATCH_SEQUENCE, Attribute("qkv_hidden_sizes", 2))),),
    (_CONTRIB, "MultiHeadAttention"): (Output((*_BATCH_SEQUENCE, Unknown())),),
    (_CONTRIB, "GroupQueryAttention"): (Output((*_BATCH_SEQUENCE, Unknown())),),
    (_CONTRIB, "MatMulNBits"): (Output((Dims(0, 0, -1), Attribute("N"))),),
    (_CONTRIB, "EmbedLayerNormalization"): (
        Output((*_BATCH_SEQUENCE, Dims(2, 1, 2)), like=2),
        None,
        Output((*_BATCH_SEQUENCE, Dims(2, 1, 2)), like=2),
    ),
}
"""(domain, op_type) -> the shape of each of its outputs (None: not known), as onnxruntime
1.32's CPU kernel gives it where the run succeeds:

* ``BiasGelu``, ``FastGelu``, ``Gelu``, ``QuickGelu``, ``RotaryEmbedding``,
  ``SimplifiedLayerNormalization``: the input's (a bias must match its last dimension).
* ``SkipLayerNormalization``, ``SkipSimplifiedLayerNormalization``: ``output`` and
  ``input_skip_bias_sum`` have the input's shape (not the skip's: a skip of another batch is
  not broadcast, the input's is kept); ``mean`` and ``inv_std_var`` the input's but the last,
  then 1.
* ``Attention``: the input's batch and sequence, then ``qkv_hidden_sizes[2]`` where given
  (else the weights' second dimension divided by 3: left unknown).
* ``MultiHeadAttention``: the query's batch and sequence, then the value's hidden size
  (left unknown: it depends on the value's layout).
* ``GroupQueryAttention``: the query's batch and sequence, then its heads' width (left
  unknown: the query may be packed with the key and value); the present key and value are
  left unknown.
* ``MatMulNBits``: the input's dimensions but the last, then the attribute ``N``.
* ``EmbedLayerNormalization``: ``output`` and ``embedding_sum`` have the input ids' batch and
  sequence and the word embedding's hidden size; ``mask_index`` is left unknown.
"""


def _names(model: ModelProto) -> set[str]:
    """Every value name of the model, in every graph."""
    names: set[str] = set()
    for graph in _graphs(model.graph):
        for values in (graph.input, graph.output, graph.value_info, graph.initializer):
            names.update(v.name for v in values)
        for node in graph.node:
            names.update(node.input)
            names.update(node.output)
    return names


def _graphs(root: GraphProto) -> Iterator[GraphProto]:
    pending = [root]
    while pending:
        graph = pending.pop()
        yield graph
        for node in graph.node:
            for attr in node.attribute:
                pending += [attr.g] if attr.HasField("g") else []
                pending += list(attr.graphs)


@dataclass
class _Builder:
    """Makes the standard nodes standing in for one graph's contrib nodes."""

    taken: set[str]
    constants: dict[tuple[int, ...], str]
    main: GraphProto
    opset: int
    count: int = 0

    def fresh(self) -> str:
        while True:
            self.count += 1
            name = f"blindai.contrib_shape.{self.count}"
            if name not in self.taken:
                self.taken.add(name)
                return name

    def constant(self, values: tuple[int, ...]) -> str:
        """An int64 1-D initializer of the main graph (seen from every subgraph)."""
        name = self.constants.get(values)
        if name is None:
            name = self.fresh()
            self.main.initializer.append(
                helper.make_tensor(name, TensorProto.INT64, [len(values)], list(values))
            )
            self.constants[values] = name
        return name

    def node(
        self, nodes: list[NodeProto], op_type: str, inputs: list[str], **attrs: int | list[int]
    ) -> str:
        out = self.fresh()
        node = helper.make_node(op_type, inputs, [out])
        node.attribute.extend(helper.make_attribute(k, v) for k, v in attrs.items())
        nodes.append(node)
        return out


def _attribute(node: NodeProto, part: Attribute) -> int | None:
    for attr in node.attribute:
        if attr.name != part.name:
            continue
        if part.index is None:
            value = int(attr.i) if attr.type == AttributeProto.INT else -1
        else:
            value = int(attr.ints[part.index]) if len(attr.ints) > part.index >= 0 else -1
        return value if value >= 0 else None
    return None


def _part(
    node: NodeProto, part: Part, build: _Builder, nodes: list[NodeProto], shapes: dict[int, str]
) -> str | None:
    """A 1-D int64 value holding ``part``'s sizes (None: an input it needs is not given)."""
    if isinstance(part, Dims):
        if len(node.input) <= part.input or not node.input[part.input]:
            return None
        if part.input not in shapes:
            shapes[part.input] = build.node(nodes, "Shape", [node.input[part.input]])
        if part.start == 0 and part.end is None:
            return shapes[part.input]
        ends = build.constant((_END if part.end is None else part.end,))
        starts, axes = build.constant((part.start,)), build.constant((0,))
        return build.node(nodes, "Slice", [shapes[part.input], starts, ends, axes])
    size = part.size if isinstance(part, Static) else None
    if isinstance(part, Attribute):
        size = _attribute(node, part)
    if size is not None:
        return build.constant((size,))
    # a size onnx cannot know: the second dimension of NonZero's result (a new symbol)
    found = build.node(nodes, "NonZero", [build.constant((1,))])
    every = build.node(nodes, "Shape", [found])
    return build.node(
        nodes, "Slice", [every, build.constant((1,)), build.constant((2,)), build.constant((0,))]
    )


def _stand_in(
    node: NodeProto, rules: tuple[Output | None, ...], build: _Builder
) -> list[NodeProto]:
    """The contrib node with its ruled outputs renamed, then the nodes that make them."""
    renamed = NodeProto()
    renamed.CopyFrom(node)
    nodes: list[NodeProto] = [renamed]
    shapes: dict[int, str] = {}
    for index, rule in enumerate(rules):
        if rule is None or len(node.output) <= index or not node.output[index]:
            continue
        if len(node.input) <= rule.like or not node.input[rule.like]:
            continue
        found = [_part(node, part, build, nodes, shapes) for part in rule.shape]
        parts = [p for p in found if p is not None]
        if len(parts) < len(found):
            continue
        shape = parts[0] if len(parts) == 1 else build.node(nodes, "Concat", parts, axis=0)
        scalar = build.node(nodes, "ReduceMax", [node.input[rule.like]], keepdims=0)
        renamed.output[index] = build.fresh()
        nodes.append(helper.make_node("Expand", [scalar, shape], [node.output[index]]))
    return nodes


@dataclass(frozen=True)
class _Graph:
    """What the refinements of standard operators read of one graph: small integer constants
    (initializers no feed replaces, ``Constant`` nodes) and each value's producer."""

    constants: dict[str, np.ndarray]
    producers: dict[str, NodeProto]

    @classmethod
    def of(cls, graph: GraphProto) -> _Graph:
        fed = {i.name for i in graph.input}
        constants: dict[str, np.ndarray] = {}
        for init in graph.initializer:
            if init.name not in fed and init.data_type in _INTEGER:
                value = _array(init)
                if value is not None:
                    constants[init.name] = value
        producers: dict[str, NodeProto] = {}
        for node in graph.node:
            producers.update((name, node) for name in node.output if name)
            if node.op_type == "Constant" and node.domain in _STANDARD and node.output:
                attr = next((a for a in node.attribute if a.name == "value"), None)
                value = None if attr is None or attr.t.data_type not in _INTEGER else _array(attr.t)
                if value is not None:
                    constants[node.output[0]] = value
        return cls(constants, producers)

    def scalar(self, name: str) -> int | None:
        value = self.constants.get(name)
        return int(value.reshape(-1)[0]) if value is not None and value.size == 1 else None

    def is_size(self, name: str) -> bool:
        """Whether ``name`` is one dimension of a value's shape (``Gather`` of ``Shape`` at a
        constant index, maybe ``Unsqueeze``d or ``Squeeze``d): a size, never negative."""
        return self.size_rank(name) is not None

    def size_rank(self, name: str) -> int | None:
        """The rank of ``name`` where it :meth:`is_size` (its one element may be in a tensor
        of any rank: a 0-D index, ``Unsqueeze`` of two axes), None where it is not a size or
        its rank is not known."""
        node = self.producers.get(name)
        reshapes: list[NodeProto] = []
        for _ in range(_MAX_RESHAPES):  # bounded: a graph could loop
            if node is None or node.op_type not in ("Unsqueeze", "Squeeze") or not node.input:
                break
            reshapes.append(node)
            node = self.producers.get(node.input[0]) if node.domain in _STANDARD else None
        if node is None or node.domain not in _STANDARD or node.op_type != "Gather":
            return None
        shape = self.producers.get(node.input[0]) if node.input else None
        index = self.constants.get(node.input[1]) if len(node.input) > 1 else None
        is_shape = shape is not None and shape.op_type == "Shape" and shape.domain in _STANDARD
        if not is_shape or index is None or index.size != 1:
            return None
        rank: int | None = index.ndim  # Shape's result is 1-D: Gather's is the index's rank
        for reshape in reversed(reshapes):
            axes = self._axes(reshape)
            if reshape.op_type == "Squeeze" and axes == ():  # every dimension (each is 1)
                rank = 0
            elif isinstance(axes, int) and rank is not None:
                rank += axes if reshape.op_type == "Unsqueeze" else -axes
            else:
                rank = None
        return rank

    def _axes(self, node: NodeProto) -> int | tuple[()] | None:
        """How many axes an ``Unsqueeze`` or ``Squeeze`` names (an attribute, or a constant
        input from opset 13); ``()`` where it names none; None where they are not constant."""
        for attr in node.attribute:
            if attr.name == "axes":
                return len(attr.ints)
        if len(node.input) < 2 or not node.input[1]:
            return ()
        axes = self.constants.get(node.input[1])
        return None if axes is None else int(axes.size)

    def elements(self, name: str) -> list[str | int] | None:
        """The elements of the 1-D ``name`` where each is a 1-D size (:meth:`size_rank`: its
        name) or a constant (its value): ``Concat`` of those, or a 1-D constant; None otherwise
        (a 0-D constant, or sizes of 2-D, would make ``Where``'s result another rank)."""
        value = self.constants.get(name)
        if value is not None:
            return [int(v) for v in value] if value.ndim == 1 else None
        node = self.producers.get(name)
        if node is None or node.domain not in _STANDARD or node.op_type != "Concat":
            return None
        found: list[str | int] = []
        for part in node.input:
            value = self.constants.get(part)
            if value is not None and value.ndim == 1:
                found += [int(v) for v in value]
            elif self.size_rank(part) == 1:
                found.append(part)
            else:
                return None
        return found


def _array(tensor: TensorProto) -> np.ndarray | None:
    if math.prod(tensor.dims) > _SMALL:
        return None
    try:
        return numpy_helper.to_array(tensor)
    except (ValueError, TypeError):  # its data was dropped for the inference
        return None


def _slice(node: NodeProto, graph: _Graph, build: _Builder) -> list[NodeProto] | None:
    """``Slice`` on one constant axis whose bounds onnx cannot read (a request's length): onnx
    gives every dimension up, onnxruntime keeps those of the other axes."""
    if len(node.input) < 4 or not node.input[0]:
        return None
    starts, ends = (graph.constants.get(node.input[k]) for k in (1, 2))
    axis = graph.scalar(node.input[3])
    if (starts is not None and ends is not None) or axis is None:
        return None
    if len(node.input) > 4 and node.input[4] and graph.scalar(node.input[4]) is None:
        return None
    after = [] if axis == -1 else [Dims(0, axis + 1, None)]
    return _stand_in(node, (Output((Dims(0, 0, axis), Unknown(), *after)),), build)


def _range(node: NodeProto, graph: _Graph, build: _Builder) -> list[NodeProto] | None:
    """``Range(0, n, 1)`` of a size n (a dimension of a shape): n elements, which onnx does not
    infer (it reads constant bounds only)."""
    if len(node.input) != 3 or graph.scalar(node.input[0]) != 0:
        return None
    if graph.scalar(node.input[2]) != 1 or not graph.is_size(node.input[1]):
        return None
    nodes: list[NodeProto] = []
    if build.opset >= 13:
        length = build.node(nodes, "Unsqueeze", [node.input[1], build.constant((0,))])
    else:
        length = build.node(nodes, "Unsqueeze", [node.input[1]], axes=[0])
    nodes.append(helper.make_node("Expand", [node.input[0], length], [node.output[0]]))
    return nodes


def _where_minus_one(node: NodeProto, graph: _Graph, build: _Builder) -> list[NodeProto] | None:
    """``Where(Equal(s, -1), ones, s)`` (PyTorch's ``expand(..., -1, ...)``), s a ``Concat`` of
    sizes and constants: a size is never negative, so it stays; a constant is computed. onnx
    gives up on it (it does not propagate ``Equal`` and ``Where``)."""
    if len(node.input) != 3 or not node.output or not node.output[0]:
        return None
    equal = graph.producers.get(node.input[0])
    if equal is None or equal.op_type != "Equal" or equal.domain not in _STANDARD:
        return None
    shape = node.input[2]
    elements = graph.elements(shape)
    if len(equal.input) != 2 or shape not in equal.input or not elements:
        return None
    other = equal.input[1] if equal.input[0] == shape else equal.input[0]
    compared, chosen = graph.constants.get(other), graph.constants.get(node.input[1])
    n = len(elements)
    if (
        compared is None
        or chosen is None
        or compared.ndim > 1  # a 2-D operand broadcasts the result to 2-D: not s's shape
        or chosen.ndim > 1
        or compared.size not in (1, n)
        or chosen.size not in (1, n)
    ):
        return None
    compared = np.broadcast_to(compared.reshape(-1), (n,))
    chosen = np.broadcast_to(chosen.reshape(-1), (n,))
    parts: list[str] = []
    for element, c, a in zip(elements, compared.tolist(), chosen.tolist(), strict=True):
        if isinstance(element, str):
            if c >= 0:
                return None  # a size could equal it
            parts.append(element)
        else:
            parts.append(build.constant((int(a) if element == c else element,)))
    return [helper.make_node("Concat", parts, [node.output[0]], axis=0)]


_Refinement = Callable[[NodeProto, _Graph, _Builder], "list[NodeProto] | None"]

STANDARD_REFINEMENTS: Mapping[str, _Refinement] = {
    "Slice": _slice,
    "Range": _range,
    "Where": _where_minus_one,
}
"""Standard operators onnx's inference gives up on in PyTorch exports (position ids sliced to
the sequence's length, masks built from ``Range`` and expanded to a shape that could hold -1)
-> a stand-in where the node's inputs show what onnxruntime gives (each checked against it)."""


def _spelled(domain: str) -> str:
    """One spelling of each domain (``ai.onnx`` is ``""``)."""
    return "" if domain in _STANDARD else domain


def add_stand_ins(model: ModelProto) -> int:
    """Give, in place, each node of :data:`CONTRIB_SHAPES` in ``model`` (every graph; at most
    :data:`MAX_STAND_INS`; none of an operator the model has a local function of) standard
    nodes that make its outputs with the rule's shape; returns how many were given. ``model``
    is the one onnx shape inference gets, never onnxruntime."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < _MIN_OPSET:
        return 0
    build = _Builder(_names(model), {}, model.graph, opset)
    given = 0
    # an operator the model defines a function of may run that function, not the kernel ruled:
    # onnxruntime does where it knows no schema of it (com.microsoft imported at version 0)
    local = {(_spelled(f.domain), f.name) for f in model.functions}
    # children first: a graph's nodes are copied back into it, with the subgraphs they hold
    for graph in reversed(list(_graphs(model.graph))):
        known = _Graph.of(graph)
        nodes: list[NodeProto] = []
        changed = False
        for node in graph.node:
            if (_spelled(node.domain), node.op_type) in local:
                nodes.append(node)
                continue
            rules = CONTRIB_SHAPES.get((node.domain, node.op_type))
            refine = STANDARD_REFINEMENTS.get(node.op_type) if node.domain in _STANDARD else None
            made = None
            if given < MAX_STAND_INS and rules is not None:
                made = _stand_in(node, rules, build)
            elif given < MAX_STAND_INS and refine is not None:
                made = refine(node, known, build)
            if made is None:
                nodes.append(node)
                continue
            given += 1
            changed = True
            nodes += made
        if changed:
            del graph.node[:]
            graph.node.extend(nodes)
    return given
