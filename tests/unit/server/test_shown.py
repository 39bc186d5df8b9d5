"""A model's names in the server's refusals: quoted, cut, and a listing bounded.

A model of 400 inputs named with 100 KB each (76 MB) made every request naming an input
wrongly build and send a 40 MB refusal (the names, whole); a name of any length was quoted
whole in every refusal about its input or output.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from blindai.errors import InferenceFailed, InvalidInput, PipelineError
from blindai.pipeline._ports import pick_port
from blindai.server._host_wire import encode_arrays
from blindai.server._shown import NAME_SHOWN, NAMES_SHOWN, shown, shown_names
from blindai.server._zipmap import ZipMapOutput, maps
from blindai.server.batching import batch_axis_problem
from blindai.server.inputs import match_inputs, output_names
from blindai.server.protocols.classification import classify
from blindai.server.registry import ModelEntry
from blindai.server.runtime import OnnxModel

LONG = 100_000


def _summed(count: int, length: int) -> bytes:
    """y = Sum of ``count`` float [1] inputs, each named with ``length`` characters."""
    names = [f"{i:04d}" + "a" * length for i in range(count)]
    graph = helper.make_graph(
        [helper.make_node("Sum", names, ["y"])],
        "names",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in names],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_a_request_naming_no_input_of_the_model_gets_a_short_refusal() -> None:
    model = OnnxModel(_summed(40, LONG))
    with pytest.raises(InvalidInput) as refused:
        match_inputs(model.inputs, [("nope", np.ones(1, np.float32))])
    message = refused.value.message
    assert len(message) < 2000  # was 4 MB: every name, whole
    assert "'0000aaaa" in message and "(40 in all)" in message
    assert message.count("...") == NAMES_SHOWN + 1  # each name cut, then the count


def test_a_long_input_name_is_cut_in_a_shape_refusal() -> None:
    model = OnnxModel(_summed(1, LONG))
    name = model.inputs[0].name
    with pytest.raises(InvalidInput, match=r"does not fit the model's \[1\]") as refused:
        match_inputs(model.inputs, [(name, np.ones(3, np.float32))])
    assert len(refused.value.message) < 300


def test_an_output_the_server_cannot_return_is_refused_with_its_name_cut() -> None:
    name = "o" * LONG
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], [name], to=TensorProto.FLOAT8E4M3FN)],
        "float8",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT8E4M3FN, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    with pytest.raises(InvalidInput, match=r"which this server cannot return") as refused:
        OnnxModel(model.SerializeToString())
    assert len(refused.value.message) < 300


def test_names_are_quoted_and_cut() -> None:
    assert shown("x") == "'x'"
    assert shown("a\nb") == "'a\\nb'"
    assert shown("z" * 100) == repr("z" * NAME_SHOWN + "...")
    assert shown_names(["a", "b"]) == "['a', 'b']"
    many = shown_names(str(i) for i in range(NAMES_SHOWN + 4))
    assert many.endswith(f"'{NAMES_SHOWN - 1}', ... ({NAMES_SHOWN + 4} in all)]")


def _fanned(count: int, length: int, shape: list[int | str | None]) -> bytes:
    """``count`` Identity outputs of one float input, each output named with ``length``
    characters; the input is named the same way (``shape`` for both)."""
    x = "x" * length
    names = [f"{i:04d}" + "o" * length for i in range(count)]
    graph = helper.make_graph(
        [helper.make_node("Identity", [x], [n]) for n in names],
        "fanned",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in names],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_a_request_asking_for_an_unknown_output_gets_a_short_refusal() -> None:
    model = OnnxModel(_fanned(40, LONG, [1]))
    entry = ModelEntry(model_id="m", hash=b"", name=None, model=model)
    with pytest.raises(InvalidInput, match="no output named 'nope'") as refused:
        output_names(entry, ["nope"])
    assert len(refused.value.message) < 2000  # was 4 MB: every output's name, whole
    assert "(40 in all)" in refused.value.message


def test_why_a_model_cannot_batch_cuts_its_names() -> None:
    fixed = OnnxModel(_fanned(1, LONG, [1]))
    assert len(batch_axis_problem(fixed) or "") in range(20, 300)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "symbols",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a" * LONG])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b" * LONG])],
    )
    symbols = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    problem = batch_axis_problem(OnnxModel(symbols.SerializeToString()))
    assert problem is not None and "different names" in problem and len(problem) < 300


def test_a_zipmap_refusal_cuts_the_output_name() -> None:
    zipmap = ZipMapOutput(source="p", labels=(0, 1))
    with pytest.raises(InferenceFailed, match="ZipMap was given 3") as refused:
        maps("z" * LONG, np.ones((1, 3), np.float32), zipmap, 1 << 20)
    assert len(refused.value.message) < 300


def test_an_array_that_cannot_travel_to_a_host_is_refused_with_its_name_cut() -> None:
    with pytest.raises(ValueError, match="cannot travel") as refused:
        encode_arrays([("a" * LONG, np.ones(1, np.complex64))])
    assert len(str(refused.value)) < 300


def test_a_classification_refusal_cuts_the_output_name() -> None:
    with pytest.raises(InvalidInput, match="classification needs") as refused:
        classify(np.array(["t"], object), 1, "c" * LONG)
    assert len(refused.value.message) < 300


def test_a_pipeline_naming_no_port_of_the_model_gets_a_short_refusal() -> None:
    model = OnnxModel(_fanned(40, LONG, [1]))
    with pytest.raises(PipelineError, match="no output named 'nope'") as refused:
        pick_port(model.outputs, "nope", "output")
    assert len(str(refused.value)) < 2000 and "(40 in all)" in str(refused.value)
