"""``ZipMap`` done by the server, so that its maps are bounded by each request's rows.

scikit-learn classifiers exported by skl2onnx end, by default, in ``ai.onnx.ml`` ``ZipMap``: a
map of every row, one entry per class (``{label: probability}``). onnxruntime builds those maps
on the heap, outside the capped arena, about 256 bytes an entry (:data:`MAP_ENTRY_BYTES`);
at upload the only bound on their count was as many entries as the arena holds floats, and the
model was refused at the default limits.

A ``ZipMap`` whose output is a graph output that nothing else reads is taken out of the graph
the session runs (:func:`without_zipmaps`): the session outputs its input, the probabilities
(a float tensor, in the arena), and the server makes the maps (:func:`maps`) once it knows
their count: at most ``max_bytes`` (``--max-string-memory``) of them, or the run fails alone
(InferenceFailed, 422) before any map is made. The maps are onnxruntime's, value for value:
one per row (a 1-D input is one row), keys in sorted order, a label given twice keeping its
last probability, each probability a Python float of the float32. Every other ``ZipMap`` is
bounded at upload as before (:mod:`blindai.server._strings`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from onnx import GraphProto, ModelProto, NodeProto, TensorProto, helper

from blindai.errors import InferenceFailed
from blindai.server._shown import shown

__all__ = ["MAP_ENTRY_BYTES", "ZipMapOutput", "maps", "server_side", "without_zipmaps"]

MAP_ENTRY_BYTES = 256
"""Memory per entry of the maps ``ZipMap`` makes (one per class per row): onnxruntime's map
node and key, then a Python dict entry, key and float (measured: 245 bytes; 100 000 rows of
10 classes, 4 MB of input, took 245 MB); the server's own dicts take less."""


@dataclass(frozen=True)
class ZipMapOutput:
    """A graph output the server makes from ``source`` (the probabilities) with ``labels``."""

    source: str
    labels: tuple[int, ...] | tuple[str, ...]


def _is_zipmap(node: NodeProto) -> bool:
    return node.op_type == "ZipMap" and node.domain == "ai.onnx.ml"


def _read_anywhere(graph: GraphProto) -> Iterator[str]:
    """Every value name a node of ``graph`` or of its subgraphs (at any depth) reads."""
    pending = [graph]
    while pending:
        current = pending.pop()
        for node in current.node:
            yield from node.input
            for attr in node.attribute:
                if attr.type == attr.GRAPH:
                    pending.append(attr.g)
                pending.extend(attr.graphs)


def _labels(node: NodeProto) -> tuple[int, ...] | tuple[str, ...] | None:
    found = {a.name: a for a in node.attribute}
    if set(found) == {"classlabels_int64s"}:
        return tuple(int(v) for v in found["classlabels_int64s"].ints)
    if set(found) == {"classlabels_strings"}:
        try:
            return tuple(s.decode("utf-8") for s in found["classlabels_strings"].strings)
        except UnicodeDecodeError:
            return None
    return None


def server_side(model: ModelProto) -> dict[int, ZipMapOutput]:
    """The main graph's ``ZipMap`` nodes the server does itself, by position: each one's single
    output is a graph output (once) declared a sequence of maps, which no node reads; its
    single input a value; its labels one kind of attribute. (The server's session finds these
    outputs by the type onnxruntime reports for them, the declared one: ``OnnxModel``.)"""
    graph = model.graph
    outputs = [o.name for o in graph.output]
    maps = {
        o.name
        for o in graph.output
        if o.type.HasField("sequence_type") and o.type.sequence_type.elem_type.HasField("map_type")
    }
    read = set(_read_anywhere(graph))
    found: dict[int, ZipMapOutput] = {}
    for position, node in enumerate(graph.node):
        if not _is_zipmap(node) or len(node.input) != 1 or len(node.output) != 1:
            continue
        (source,), (made,) = node.input, node.output
        labels = _labels(node)
        if not source or labels is None or outputs.count(made) != 1 or made in read:
            continue
        if made not in maps:
            continue
        found[position] = ZipMapOutput(source, labels)
    return found


def without_zipmaps(model: ModelProto) -> tuple[ModelProto, dict[str, ZipMapOutput]]:
    """A copy of ``model`` whose server-side ``ZipMap`` nodes are gone, each of their outputs
    replaced by the probabilities it was made of, and those outputs by name."""
    found = server_side(model)
    if not found:
        return model, {}
    copy = ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    made = {graph.node[p].output[0]: z for p, z in found.items()}
    kept_nodes = [n for i, n in enumerate(graph.node) if i not in found]
    del graph.node[:]
    graph.node.extend(kept_nodes)
    kept = [o for o in graph.output if o.name not in made]
    names = {o.name for o in kept}
    for zipmap in made.values():
        if zipmap.source not in names:
            kept.append(helper.make_tensor_value_info(zipmap.source, TensorProto.FLOAT, None))
            names.add(zipmap.source)
    del graph.output[:]
    graph.output.extend(kept)
    return copy, made


def maps(
    name: str, probabilities: np.ndarray, zipmap: ZipMapOutput, max_bytes: int
) -> list[dict[int | str, float]]:
    """The maps onnxruntime's ``ZipMap`` makes of ``probabilities``; InferenceFailed (422) for
    what it refuses (not 1-D or 2-D, another count of classes) and for more entries than
    ``max_bytes`` hold, before any map is made."""
    if probabilities.dtype != np.float32 or probabilities.ndim not in (1, 2):
        raise InferenceFailed(
            f"output {shown(name)}: ZipMap takes a 1-D or 2-D float tensor of probabilities"
        )
    rows = np.atleast_2d(probabilities)
    if rows.shape[1] != len(zipmap.labels):
        raise InferenceFailed(
            f"output {shown(name)}: ZipMap was given {rows.shape[1]} probabilities a row for "
            f"{len(zipmap.labels)} labels"
        )
    entries = rows.shape[0] * rows.shape[1]
    if entries * MAP_ENTRY_BYTES > max_bytes:
        most = max_bytes // (MAP_ENTRY_BYTES * max(1, rows.shape[1]))
        raise InferenceFailed(
            f"output {shown(name)}: ZipMap would make {rows.shape[0]} maps of {rows.shape[1]} "
            f"entries, beyond this server's --max-string-memory ({max_bytes} bytes at "
            f"{MAP_ENTRY_BYTES} an entry); send at most {most} rows a request"
        )
    labels = zipmap.labels
    order = sorted(range(len(labels)), key=lambda i: labels[i])
    last = {label: i for i, label in enumerate(labels)}  # a label given twice: its last
    keep = [i for i in order if last[labels[i]] == i]
    return [{labels[i]: row[i] for i in keep} for row in rows.tolist()]
