"""Runs short enough to do on the event loop, without the trip to a worker thread and back.

Handing a run to a worker thread and its result back to the event loop costs two thread
wake-ups: about 0.2 ms a request on the 2-core machine of ``docs/performance.md``, more than a
small tabular model takes to run. A model may run on the event loop instead, but only when:

* **its graph cannot run long** (:func:`inline_gate`): it is at most ``MAX_BYTES``, has no
  model-local functions, and uses only the operators of ``_OPERATORS``, whose work is fixed by
  their input shapes (no ``Loop``, ``If`` or ``Scan``, nothing whose output size is read from
  a tensor, such as ``ConstantOfShape``, ``Expand``, ``Tile``, ``Range`` or ``Resize``), and
  the values those read as shapes (``Reshape``'s shape, ``Slice``'s bounds, axes) are made
  from constants and the inputs' shapes, never from a request's values;
* **its runs are measured short** (:class:`InlineGate`): it has run ``QUALIFYING_RUNS`` times
  in a row in a worker within the limit (``--inline-run-us``), with the same input shapes as
  the request's (a dynamic batch dimension cannot turn a short run into a long one).

Runs on the loop that often take longer than the limit send the model back to the workers,
where it must qualify again; one run that takes more than ``DEMOTE_FACTOR`` times the limit
sends it back for good. A run on the loop cannot be stopped by the run timeout or by its client
going away (it is over before either could act); the memory cap applies as to every run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

__all__ = [
    "DEMOTE_FACTOR",
    "MAX_BYTES",
    "QUALIFYING_RUNS",
    "SLOW_RUNS",
    "WINDOW",
    "InlineGate",
    "Shapes",
    "inline_gate",
    "shapes_of",
]

MAX_BYTES = 1 << 20
"""Largest model (its file) that may run on the event loop."""
QUALIFYING_RUNS = 20
"""Runs in a row within the limit, in a worker, before a model runs on the loop."""
DEMOTE_FACTOR = 10
"""A run on the loop over this many times the limit: the model never runs there again."""
WINDOW = 100
SLOW_RUNS = 10
"""More runs over the limit than this among ``WINDOW`` on the loop: back to the workers."""

_OPERATORS: dict[str, frozenset[str]] = {
    "": frozenset(
        """
        Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool
        BatchNormalization Cast CastLike Ceil Celu Clip Concat Constant Conv Cos Cosh
        DequantizeLinear Div Dropout Elu Equal Erf Exp Flatten Floor Gather GatherElements Gelu
        Gemm GlobalAveragePool GlobalMaxPool Greater GreaterOrEqual HardSigmoid HardSwish
        Hardmax Identity InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less
        LessOrEqual Log LogSoftmax LpNormalization MatMul Max MaxPool Mean Min Mish Mod Mul Neg
        Not Or PRelu Pow QuantizeLinear Reciprocal ReduceL1 ReduceL2 ReduceLogSum
        ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare
        Relu Reshape Round Selu Shape Sigmoid Sign Sin Sinh Size Slice Softmax Softplus
        Softsign Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Transpose Unsqueeze Where
        Xor
        """.split()
    ),
    "ai.onnx.ml": frozenset(
        """
        ArrayFeatureExtractor Binarizer LinearClassifier LinearRegressor Normalizer Scaler
        TreeEnsemble TreeEnsembleClassifier TreeEnsembleRegressor
        """.split()
    ),
}
_OPERATORS["ai.onnx"] = _OPERATORS[""]
_REDUCE = ("L1", "L2", "LogSum", "LogSumExp", "Max", "Mean", "Min", "Prod", "Sum", "SumSquare")
_SHAPE_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,),
    "Slice": (1, 2, 3, 4),
    "Split": (1,),
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    **{f"Reduce{kind}": (1,) for kind in _REDUCE},
}
"""The inputs of :data:`_OPERATORS` whose values set the shape of what the node makes (and so
the work of the nodes after it), by operator."""
_SUBGRAPHS = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


Shapes = tuple[tuple[str, tuple[int, ...], str], ...]
"""A request's inputs: (name, shape, dtype) of each."""


def shapes_of(feeds: Mapping[str, np.ndarray]) -> Shapes | None:
    """The shapes of a run's inputs; None when one holds strings (whose work grows with
    their length, not their shape)."""
    if any(a.dtype.kind in "OSU" for a in feeds.values()):
        return None
    return tuple((k, a.shape, a.dtype.str) for k, a in feeds.items())


@dataclass
class InlineGate:
    """Whether a model's runs go on the event loop, from the durations of its runs.

    A model qualifies for one set of input shapes, those of its last runs: only requests with
    exactly these shapes run on the loop (same operators, same shapes: the same work), any
    other goes to a worker and starts qualifying anew for its own shapes. A run now and then
    takes several times its usual time (caches gone cold, the process preempted): on the loop,
    a model is sent back to the workers only when more than ``SLOW_RUNS`` of ``WINDOW`` runs in
    a row were over the limit, and for good after one run over ``DEMOTE_FACTOR`` times the
    limit. Used from the event loop only, so it takes no lock.
    """

    limit_ns: int
    shapes: Shapes | None = None
    """The input shapes the model qualifies (or is qualifying) with."""
    fast: int = 0
    """Runs in a row within the limit, in a worker, with ``shapes``."""
    demoted: bool = False
    """A run on the loop took more than ``DEMOTE_FACTOR`` times the limit: never again."""
    _window: int = field(default=0, init=False, repr=False)
    _slow: int = field(default=0, init=False, repr=False)

    def allows(self, shapes: Shapes | None) -> bool:
        """Whether a run with these input shapes goes on the event loop."""
        return (
            not self.demoted
            and self.fast >= QUALIFYING_RUNS
            and shapes is not None
            and shapes == self.shapes
        )

    def observe(self, ran_ns: int, shapes: Shapes | None, *, on_loop: bool) -> None:
        """Count one successful run of ``ran_ns`` nanoseconds with ``shapes`` (``on_loop``: it
        ran on the loop)."""
        if not on_loop:
            if shapes != self.shapes:
                self.shapes, self.fast = shapes, 0
            self.fast = self.fast + 1 if ran_ns <= self.limit_ns else 0
            return
        if ran_ns > DEMOTE_FACTOR * self.limit_ns:
            self.demoted = True
            return
        self._window += 1
        self._slow += ran_ns > self.limit_ns
        if self._slow > SLOW_RUNS:
            self.fast = 0  # back to the workers, to qualify again
        if self._slow > SLOW_RUNS or self._window >= WINDOW:
            self._window = self._slow = 0


def inline_gate(model: bytes | Path, *, limit_us: int) -> InlineGate | None:
    """A gate for a model whose graph cannot run long (see the module), else None.

    ``model``: its bytes, or the server's own file of them; read only when at most
    ``MAX_BYTES``. ``limit_us`` 0 turns runs on the loop off.
    """
    if limit_us <= 0:
        return None
    if isinstance(model, Path):
        if model.stat().st_size > MAX_BYTES:
            return None
        model = model.read_bytes()
    if len(model) > MAX_BYTES:
        return None
    try:
        proto = onnx.load_model_from_string(model)
    except Exception:  # the compile guard has checked it; anything odd: not on the loop
        return None
    if proto.functions:
        return None
    for node in proto.graph.node:
        allowed = _OPERATORS.get(node.domain)
        if allowed is None or node.op_type not in allowed:
            return None
        if any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
            for a in node.attribute
        ):
            return None
    if not _shapes_fixed_by_input_shapes(proto.graph):
        return None
    return InlineGate(limit_ns=limit_us * 1000)


def _shapes_fixed_by_input_shapes(graph: onnx.GraphProto) -> bool:
    """Whether every value the graph reads as a shape (``Reshape``'s shape, ``Slice``'s
    bounds, axes...: :data:`_SHAPE_INPUTS`) is fixed by the shapes of the request's inputs: made
    from constants and ``Shape``/``Size`` only (nodes in the order of the graph; a value used
    before it is made counts as a request's).

    A gate qualifies a model for its input shapes: with ``Reshape(x, s)``, ``s`` a request
    input, the same shapes ran a dot product while qualifying and, with other values of ``s``,
    two 4096 x 4096 products on the event loop (3.6 s, every client of the server waiting,
    past ``--run-timeout``)."""
    fixed = {t.name for t in graph.initializer} | {""}
    for node in graph.node:
        slots = _SHAPE_INPUTS.get(node.op_type, ())
        if any(node.input[i] not in fixed for i in slots if i < len(node.input)):
            return False
        # values of a Shape or Size are fixed once every shape before them is (checked above)
        if node.op_type in ("Shape", "Size") or all(i in fixed for i in node.input):
            fixed.update(node.output)
    return True
