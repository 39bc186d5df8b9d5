"""Model-local functions that onnx shape inference must not look through.

onnx infers a node that calls a model-local function through the function's body, read with
the function's own opset imports. onnxruntime runs another thing in two cases, where the body
could give the node a shape the run does not (and a proof of :mod:`unsafe_kernels` pass on it):

* the function is named like an operator onnxruntime has a schema of: onnxruntime runs that
  operator's kernel (the function only where the model imports no version of it). Measured: a
  function ``com.microsoft.Trilu`` whose body is a static [2, 3, 2] made the node's output
  [2, 3, 2], where the kernel ran on an emptied value to [0, 3, 2] (a GRU's std::terminate).
* the function imports an opset version the model does not: onnxruntime runs the body with the
  model's. Measured: ``Add`` in a function importing opset 6 was inferred of its first input's
  shape [1, 3, 4] (opset 6 does not broadcast), and ran with opset 17's broadcasting to
  [0, 3, 4] (a skip's batch: SIGFPE).

:func:`take_unsound_functions` takes those out of the model that onnx infers (the node's
shape is then unknown, which proves nothing).
"""

from __future__ import annotations

from onnx import FunctionProto, ModelProto, OperatorSetIdProto

__all__ = ["take_unsound_functions"]


def _domain(domain: str) -> str:
    return "" if domain == "ai.onnx" else domain


def _runtime_operators() -> frozenset[tuple[str, str]] | None:
    """(domain, op_type) of every operator onnxruntime has a schema of (``ai.onnx`` spelled
    ``""``); None where its registry cannot be read."""
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as state

        schemas = state.get_all_operator_schema()
    except (ImportError, AttributeError):
        return None
    return frozenset((_domain(s.domain), s.name) for s in schemas)


def _versions(imports: list[OperatorSetIdProto]) -> dict[str, int]:
    return {_domain(o.domain): o.version for o in imports}


def _sound(
    function: FunctionProto, model: dict[str, int], known: frozenset[tuple[str, str]]
) -> bool:
    """Whether onnxruntime runs ``function``'s body as onnx infers it."""
    if (_domain(function.domain), function.name) in known:
        return False
    own = _versions(list(function.opset_import))
    return all(model.get(domain) == version for domain, version in own.items())


def take_unsound_functions(model: ModelProto) -> list[FunctionProto]:
    """Take out of ``model``, in place, the local functions onnx would infer other than
    onnxruntime runs them (every one where onnxruntime's registry cannot be read); returns
    them, for the caller to put back after the inference."""
    if not model.functions:  # most models: onnxruntime's registry costs 17-100 ms to read
        return []
    known = _runtime_operators()
    versions = _versions(list(model.opset_import))
    kept: list[FunctionProto] = []
    taken: list[FunctionProto] = []
    for function in model.functions:
        copy = FunctionProto()
        copy.CopyFrom(function)
        sound = known is not None and _sound(function, versions, known)
        (kept if sound else taken).append(copy)
    if taken:
        del model.functions[:]
        model.functions.extend(kept)
    return taken
