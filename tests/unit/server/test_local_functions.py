"""Which model-local functions the admission's shape inference leaves out
(``blindai.server._local_functions``); the crashes they hid are in ``test_empty_proofs``."""

from __future__ import annotations

from onnx import helper

from blindai.server._local_functions import take_unsound_functions


def _function(domain: str, name: str, version: int = 17) -> object:
    body = [helper.make_node("Identity", ["X"], ["Y"])]
    return helper.make_function(
        domain, name, ["X"], ["Y"], body, [helper.make_opsetid("", version)]
    )


def test_only_functions_onnxruntime_runs_as_inferred_stay():
    """Kept: a function of a domain of its own, importing the model's opset (``ai.onnx``
    spelled either way). Taken out: one named like an onnxruntime operator (a contrib kernel,
    a standard operator), and one importing another opset version."""
    functions = [
        _function("local", "Kept"),
        _function("com.microsoft", "Trilu"),
        _function("ai.onnx", "Relu"),
        _function("local", "Older", version=6),
    ]
    model = helper.make_model(
        helper.make_graph([], "g", [], []),
        opset_imports=[helper.make_opsetid("ai.onnx", 17), helper.make_opsetid("local", 1)],
        functions=functions,
    )
    taken = take_unsound_functions(model)
    assert [f.name for f in model.functions] == ["Kept"]
    assert [f.name for f in taken] == ["Trilu", "Relu", "Older"]
    model.functions.extend(taken)
    assert len(model.functions) == 4
