"""A static bound, at upload, on the characters of a model's string values.

onnxruntime allocates a string tensor's ``std::string`` objects (32 bytes each) from the
capped arena (``--max-run-memory``), but a string longer than 15 bytes keeps its characters on
the heap, outside it. A 10 KB request through ``Expand`` (or ``Tile``, ``Gather`` with
repeated indices, ``Where``'s broadcast...) to 100 000 elements made the server take 1 GB; the
arena saw 3 MB of it.

Every string value of the main graph is bounded by a linear form in ``R``, the bytes of a
request's body (``--max-request-bytes``): the bytes of its characters kept on the heap
(``total``) and the length of its longest element (``longest``). A request's strings hold at
most ``R`` characters; a constant's are known; an operator that only moves or selects elements
(``Identity``, ``Reshape``, ``Slice``, ``Concat``...) makes no more than its inputs hold; an
operator that makes strings of bounded length from numbers (``Cast``, ``LabelEncoder``,
``CategoryMapper``...) or that may repeat its inputs' elements (every other one) makes at most
as many elements as the arena holds ``std::string`` objects, each as long as its longest
input element or string attribute. The model is refused (400) when the sum over its string
values, for the largest request, passes ``max_string_bytes``. Strings made inside
``If``/``Loop``/``Scan`` bodies or by model-local functions are refused: their repetitions are
not bounded by the graph.

Refusals name a node by its position and operator, never by a name the model chose.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from onnx import AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, TypeProto

from blindai.errors import InvalidInput
from blindai.server._zipmap import MAP_ENTRY_BYTES, server_side

__all__ = ["StringLimits", "check_strings", "known", "string_constants"]

STRING_OBJECT_BYTES = 32
"""sizeof(std::string) in libstdc++: what each element of a string tensor takes in the arena."""
INLINE_CHARS = 15
"""Characters a std::string keeps inside itself (no heap allocation) in libstdc++."""

_MOVES = frozenset(
    {
        "Identity",
        "Reshape",
        "Squeeze",
        "Unsqueeze",
        "Flatten",
        "Transpose",
        "Slice",
        "Split",
        "Concat",
        "Compress",
        "Unique",
        "ReverseSequence",
        "CastLike",
        "Optional",
        "OptionalGetElement",
        "SequenceConstruct",
        "SequenceInsert",
        "SequenceErase",
        "SequenceAt",
        "ConcatFromSequence",
        "SplitToSequence",
        "StringSplit",
        "com.microsoft:Tokenizer",
    }
)
"""Operators whose string outputs are their string inputs' elements, each at most once (or
pieces of them, ``StringSplit``): an output holds at most what its inputs hold together."""
_PARTS = frozenset({"Split"})
"""Moves whose outputs share out their input's elements: together they hold what it held."""
_GROWS = {"StringNormalizer": 2}
"""Operators that move elements and may lengthen each (a case change: at most 1.5x in UTF-8)."""
_REPEATS = frozenset(
    {
        "Expand",
        "Tile",
        "Gather",
        "GatherElements",
        "GatherND",
        "Where",
        "Scatter",
        "ScatterElements",
        "ScatterND",
        "ConstantOfShape",
        "Pad",
        "Cast",
        "ai.onnx.ml:LabelEncoder",
        "ai.onnx.ml:CategoryMapper",
        "ai.onnx.ml:LinearClassifier",
        "ai.onnx.ml:SVMClassifier",
        "ai.onnx.ml:TreeEnsembleClassifier",
    }
)
"""Operators whose string outputs may repeat their inputs' or attributes' strings, each no
longer than the longest of them: at most as many as the arena holds."""
_MAPS = frozenset({"ai.onnx.ml:ZipMap"})
"""Operators that make a map per row: as many entries as their input (4 bytes a float in the
arena) has elements."""
_JOINS = frozenset({"StringConcat"})
"""Operators whose output elements join one element of each input (with broadcasting)."""
_NUMBER_CHARS: dict[int, int] = {TensorProto.INT64: 20, TensorProto.UINT64: 20}
"""The longest text ``Cast`` makes of a number (other types: at most 15 characters, inline)."""


_ZIPMAP = (
    "; ZipMap makes a map of every row, as many entries as the arena holds floats: export "
    "probabilities as a tensor (skl2onnx: options={id(model): {'zipmap': False}})"
)


def _kind(node: NodeProto) -> str:
    """``op_type`` for the standard domain, ``domain:op_type`` for the others."""
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}:{node.op_type}"


@dataclass(frozen=True)
class _Form:
    """``a * R + b``: a bound linear in the request's body bytes ``R``."""

    a: int
    b: int

    def at(self, r: int) -> int:
        return self.a * r + self.b

    def __add__(self, other: _Form) -> _Form:
        return _Form(self.a + other.a, self.b + other.b)

    def times(self, k: int) -> _Form:
        return _Form(self.a * k, self.b * k)

    def max(self, other: _Form) -> _Form:
        return _Form(max(self.a, other.a), max(self.b, other.b))

    def heap(self, elements: int) -> _Form:
        """Heap bytes of ``elements`` strings, each at most this long."""
        if self.a == 0 and self.b <= INLINE_CHARS:
            return _ZERO
        return _Form(self.a * elements, self.b * elements)


_ZERO = _Form(0, 0)


@dataclass(frozen=True)
class _Bound:
    total: _Form
    """Heap bytes of the value's characters."""
    longest: _Form
    """Length of its longest element."""


@dataclass(frozen=True, kw_only=True)
class StringLimits:
    """What a model's string values may take beside the arena."""

    max_string_bytes: int
    """Heap bytes of string characters one run of the model may make, all values together."""
    max_request_bytes: int
    """The largest request body (``R``): the most characters a request's strings hold."""
    max_run_memory: int
    """The arena's cap: a value holds at most this / 32 strings."""


def string_constants(model: ModelProto) -> dict[str, int]:
    """The longest element of every string initializer and ``Constant`` of the main graph (read
    before the admission check drops large tensors' data)."""
    found: dict[str, int] = {}
    graph = model.graph
    for tensor in graph.initializer:
        if tensor.data_type == TensorProto.STRING:
            found[tensor.name] = max(map(len, tensor.string_data), default=0)
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for attr in node.attribute:
                strings = _attribute_strings(attr)
                if strings is not None and node.output:
                    found[node.output[0]] = max(strings, default=0)
    return found


def _attribute_strings(attr: AttributeProto) -> list[int] | None:
    """Lengths of the strings an attribute holds as data, or None when it holds none."""
    if attr.type == AttributeProto.STRING and attr.name.endswith("string"):
        return [len(attr.s)]
    if attr.type == AttributeProto.STRINGS and (
        attr.name.endswith("strings") or attr.name == "value_strings"
    ):
        return [len(s) for s in attr.strings]
    if attr.type == AttributeProto.TENSOR and attr.t.data_type == TensorProto.STRING:
        return [len(s) for s in attr.t.string_data]
    if attr.type == AttributeProto.TENSORS:
        lengths = [
            len(s) for t in attr.tensors if t.data_type == TensorProto.STRING for s in t.string_data
        ]
        return lengths or None
    return None


def _is_string(kind: TypeProto) -> bool:
    """Whether a value of this type holds strings (tensors, sequences, maps, optionals)."""
    field = kind.WhichOneof("value")
    if field == "tensor_type":
        return kind.tensor_type.elem_type == TensorProto.STRING
    if field == "sequence_type":
        return _is_string(kind.sequence_type.elem_type)
    if field == "optional_type":
        return _is_string(kind.optional_type.elem_type)
    if field == "map_type":
        key = kind.map_type.key_type == TensorProto.STRING
        return key or _is_string(kind.map_type.value_type)
    return False


def known(kind: TypeProto) -> bool:
    """Whether a value's declared type says what it holds (not empty, not UNDEFINED)."""
    field = kind.WhichOneof("value")
    if field is None:
        return False
    return field != "tensor_type" or kind.tensor_type.elem_type != TensorProto.UNDEFINED


def _types(graphs: Iterable[GraphProto]) -> dict[str, TypeProto]:
    found: dict[str, TypeProto] = {}
    for graph in graphs:
        for value in [*graph.input, *graph.value_info, *graph.output]:
            if known(value.type):
                found[value.name] = value.type
    return found


def _subgraphs(node: NodeProto) -> list[GraphProto]:
    found: list[GraphProto] = []
    for attr in node.attribute:
        found += [attr.g] if attr.HasField("g") else []
        found += list(attr.graphs)
    return found


def _makes_strings(node: NodeProto) -> bool:
    """Whether a node may make strings out of no string input (its type unknown)."""
    if node.op_type in ("Cast", "CastLike"):
        return any(a.name == "to" and a.i == TensorProto.STRING for a in node.attribute)
    return any(_attribute_strings(a) for a in node.attribute)


def _string_functions(model: ModelProto) -> set[tuple[str, str]]:
    """The model-local functions whose bodies (their subgraphs and the functions they call
    included) may make strings out of no string input: Cast to STRING, string attributes."""
    calls: dict[tuple[str, str], set[tuple[str, str]]] = {}
    making: set[tuple[str, str]] = set()
    for function in model.functions:
        key = (function.domain, function.name)
        calls[key] = set()
        pending = list(function.node)
        while pending:
            node = pending.pop()
            if _makes_strings(node):
                making.add(key)
            calls[key].add((node.domain, node.op_type))
            for sub in _subgraphs(node):
                pending += list(sub.node)
    grew = True
    while grew:  # a function calling one that makes strings makes strings
        grew = False
        for key, called in calls.items():
            if key not in making and called & making:
                making.add(key)
                grew = True
    return making


def _order(graph: GraphProto) -> list[int]:
    """The nodes in an order where each comes after those making its inputs (onnxruntime sorts
    them too); nodes in a cycle last."""
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
    waiting = [
        {producer[name] for name in node.input if name in producer and producer[name] != i}
        for i, node in enumerate(graph.node)
    ]
    users: dict[int, list[int]] = {}
    for i, deps in enumerate(waiting):
        for dep in deps:
            users.setdefault(dep, []).append(i)
    ready = [i for i, deps in enumerate(waiting) if not deps]
    order: list[int] = []
    while ready:
        i = ready.pop()
        order.append(i)
        for user in users.get(i, []):
            waiting[user].discard(i)
            if not waiting[user]:
                ready.append(user)
    placed = set(order)
    return order + [i for i in range(len(graph.node)) if i not in placed]


def _strings_inside(
    node: NodeProto, stringy: Callable[[str], bool], types: Mapping[str, TypeProto]
) -> bool:
    """Whether a node's subgraphs (at any depth) make string values: typed so, or untyped and
    made from strings (the outer graph's included) or string attributes."""
    pending = _subgraphs(node)
    while pending:
        sub = pending.pop()
        declared = _types([sub])
        for inner in sub.node:
            for out in inner.output:
                kind = declared.get(out) or types.get(out)
                if kind is not None and _is_string(kind):
                    return True
                if kind is None and (_makes_strings(inner) or any(map(stringy, inner.input))):
                    return True
            pending += _subgraphs(inner)
    return False


def check_strings(
    model: ModelProto,
    *,
    types: Mapping[str, TypeProto],
    constants: Mapping[str, int],
    limits: StringLimits,
) -> None:
    """Refuse (InvalidInput, 400) a model whose string values may take more than
    ``limits.max_string_bytes`` of heap for one request of ``limits.max_request_bytes``.

    ``types``: the values' types, as onnx shape inference found them (may be incomplete);
    ``constants``: :func:`string_constants` of the model, taken before its data was dropped.
    """
    graph = model.graph
    all_types = {**_types([graph]), **types}
    functions = {(f.domain, f.name) for f in model.functions}
    making = _string_functions(model)
    elements = max(1, limits.max_run_memory // STRING_OBJECT_BYTES)
    request = limits.max_request_bytes
    unknown = _Bound(_Form(elements, 0), _Form(1, 0))
    bounds: dict[str, _Bound] = {}
    for value in graph.input:  # those with a default (an initializer) too
        if _is_string(value.type):
            bounds[value.name] = _Bound(_Form(1, 0), _Form(1, 0))
    for name, longest in constants.items():
        if name not in bounds:  # an input's default: the request may send its own
            bounds[name] = _Bound(_ZERO, _Form(0, longest))
    total = sum((b.total for b in bounds.values()), _ZERO)
    by_server = server_side(model)  # their maps are bounded by each run's rows (_zipmap)
    for position in _order(graph):
        node = graph.node[position]
        if node.op_type == "Constant" and node.output and node.output[0] in constants:
            continue
        if position in by_server:
            continue
        strings_in = [
            bounds.get(n, unknown) for n in node.input if n and _stringy(n, bounds, all_types)
        ]
        if _subgraphs(node) and _strings_inside(
            node, lambda n: _stringy(n, bounds, all_types), all_types
        ):
            raise InvalidInput(
                f"node {position} ({node.op_type}) of the main graph makes string values in its "
                "subgraphs: this server bounds the memory of strings made by the main graph's "
                "own operators only (a Loop or Scan repeats them)"
            )
        outputs = [o for o in node.output if o]
        made = [
            o
            for o in outputs
            if _kind(node) in _MAPS  # its maps, whatever their keys
            or (o in all_types and _is_string(all_types[o]))
            or (
                o not in all_types
                and (strings_in or _makes_strings(node) or (node.domain, node.op_type) in making)
            )
        ]
        if not made:
            continue
        if (node.domain, node.op_type) in functions or _subgraphs(node):
            raise InvalidInput(
                f"node {position} ({node.op_type}) of the main graph makes string values in a "
                f"{'subgraph' if _subgraphs(node) else 'model-local function'}: this server "
                "bounds the memory of strings made by the main graph's own operators only"
            )
        bound = _node_bound(position, node, strings_in, all_types, elements)
        for name in made:
            bounds[name] = bound
        # the outputs of Split share their input's elements: counted once
        total = total + bound.total.times(1 if _kind(node) in _PARTS else len(made))
        worst = total.at(request)
        if worst > limits.max_string_bytes:
            raise InvalidInput(
                f"node {position} ({node.op_type}) of the main graph can make string values "
                f"whose characters, with those before it, take up to {worst} bytes for a "
                f"request of {request} bytes (--max-request-bytes), beyond the arena "
                f"(--max-run-memory); this server's limit is {limits.max_string_bytes} bytes "
                "(--max-string-memory). Operators that may repeat a string (Expand, Tile, "
                "Gather, Where, ...) are bounded by the arena's count of strings times the "
                f"longest string they may repeat{_ZIPMAP if _kind(node) in _MAPS else ''}"
            )


def _stringy(name: str, bounds: Mapping[str, _Bound], types: Mapping[str, TypeProto]) -> bool:
    """Whether a node's input holds strings (made by a node placed later: in a cycle)."""
    return name in bounds or (name in types and _is_string(types[name]))


def _node_bound(
    position: int,
    node: NodeProto,
    strings_in: list[_Bound],
    types: Mapping[str, TypeProto],
    elements: int,
) -> _Bound:
    """What one string output of ``node`` may hold; InvalidInput for an operator this module
    does not know (it cannot tell how much it may make)."""
    kind = _kind(node)
    longest_in = _ZERO
    for bound in strings_in:
        longest_in = longest_in.max(bound.longest)
    moved = sum((b.total for b in strings_in), _ZERO)
    if kind in _MOVES or (kind == "Cast" and strings_in):
        return _Bound(moved, longest_in)
    if kind in _GROWS:
        factor = _GROWS[kind]
        return _Bound(moved.times(factor), longest_in.times(factor))
    if kind in _JOINS:
        joined = sum((b.longest for b in strings_in), _ZERO)
        return _Bound(joined.heap(elements), joined)
    if kind == "Cast" and not strings_in:
        source = types.get(node.input[0]) if node.input else None
        number = source.tensor_type.elem_type if source is not None else TensorProto.INT64
        longest = _Form(0, _NUMBER_CHARS.get(number, INLINE_CHARS))
        return _Bound(longest.heap(elements), longest)
    if kind in _MAPS:
        entries = elements * STRING_OBJECT_BYTES // 4
        longest = _ZERO
        for attr in node.attribute:
            lengths = _attribute_strings(attr)
            if lengths:
                longest = longest.max(_Form(0, max(lengths)))
        return _Bound(_Form(0, entries * MAP_ENTRY_BYTES) + longest.heap(entries), longest)
    if kind in _REPEATS:
        longest = longest_in
        for attr in node.attribute:
            lengths = _attribute_strings(attr)
            if lengths:
                longest = longest.max(_Form(0, max(lengths)))
        return _Bound(longest.heap(elements), longest)
    raise InvalidInput(
        f"node {position} ({node.op_type}) of the main graph makes string values this server "
        "cannot bound (onnxruntime keeps their characters outside --max-run-memory); string "
        "values may come from operators that move, select or repeat strings (Identity, Reshape, "
        "Slice, Concat, Gather, Expand, ...), Cast, StringNormalizer, StringSplit, "
        "StringConcat, LabelEncoder and CategoryMapper"
    )
