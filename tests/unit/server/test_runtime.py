"""OnnxModel: what it reports of a model, and what it never writes to the log."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

from blindai.errors import InferenceFailed
from blindai.server.runtime import OnnxModel
from tests.models import gather_rows


def test_a_failing_run_writes_no_input_value_to_stderr(capfd):
    model = OnnxModel(gather_rows(vocab=10))
    capfd.readouterr()
    with pytest.raises(InferenceFailed):
        model.predict({"ids": np.array([[1, 987654]]), "scale": np.ones((1, 1, 1), np.float32)})
    out, err = capfd.readouterr()
    assert "987654" not in out + err


def test_specs_keep_the_names_of_symbolic_dimensions():
    model = OnnxModel(gather_rows(vocab=10))
    ids, scale = model.inputs
    assert ids.shape == (None, None) and ids.symbols == ("batch", "seq")
    assert scale.shape == (None, 1, 1) and scale.symbols == ("batch", None, None)
    assert model.outputs[0].symbols == ("batch", "seq", None)


def test_predict_returns_the_outputs_asked_for_in_that_order():
    from tests.models import two_in_two_out

    model = OnnxModel(two_in_two_out())
    feeds = {"a": np.ones((1, 4), np.float32), "b": np.ones((1, 4), np.float32)}
    assert [n for n, _ in model.predict(feeds)] == ["sum", "idx"]
    assert [n for n, _ in model.predict(feeds, ["idx", "sum"])] == ["idx", "sum"]


def _configuring_model() -> bytes:
    """A model whose metadata asks onnxruntime for profiling (``ort_config``)."""
    import json

    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])
    nodes = [helper.make_node("Identity", ["x"], ["y"], name="SECRET-7f3a-NODE")]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    options = {"session_options": {"enable_profiling": 1, "intra_op_num_threads": 7}}
    helper.set_model_props(model, {"ort_config": json.dumps(options)})
    return model.SerializeToString()


@pytest.mark.parametrize("where", ["server", "compile child"])
def test_a_model_cannot_configure_its_session_even_where_onnxruntime_is_told_to_let_it(
    where, monkeypatch, tmp_path
):
    """ORT_LOAD_CONFIG_FROM_MODEL=1 made onnxruntime read session options from the model:
    profiling wrote the model's node names and each run's timings to the working directory.
    Now no session is made there (fail closed), and nothing is written."""
    import gc

    from blindai.server import _compile_worker

    monkeypatch.setenv("ORT_LOAD_CONFIG_FROM_MODEL", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match="ORT config"):
        if where == "server":
            OnnxModel(_configuring_model()).predict({"x": np.ones((1, 3), np.float32)})
        else:
            _compile_worker._compile(_configuring_model(), {"optimize": True})
    gc.collect()  # onnxruntime writes a profile when its session goes
    assert list(tmp_path.iterdir()) == []


def test_an_environment_letting_models_configure_onnxruntime_is_refused():
    from blindai.errors import ConfigurationError
    from blindai.server.runtime import check_environment

    check_environment({"ORT_LOAD_CONFIG_FROM_MODEL": "0", "PATH": "/bin"})
    with pytest.raises(ConfigurationError, match="ORT_LOAD_CONFIG_FROM_MODEL=1 lets every"):
        check_environment({"ORT_LOAD_CONFIG_FROM_MODEL": "1"})


def test_a_session_not_made_as_asked_is_refused_without_a_print(capfd):
    """onnxruntime's Python fallback printed the error to stdout (the server's log) and made
    the session on other providers (on a GPU: the CPU) instead of failing."""
    from blindai.server.runtime import inference_session, session_options
    from tests.models import identity

    # asking for both TensorRT providers is refused by onnxruntime's Python layer itself
    both = ["TensorrtExecutionProvider", "NvTensorRTRTXExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(ValueError, match="TensorrtExecutionProvider"):
        inference_session(
            identity(TensorProto.FLOAT), options=session_options(optimize=True), providers=both
        )
    out, err = capfd.readouterr()
    assert out + err == ""


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("empty optional", "output 'o' is an empty optional"),
        ("ragged sequence", "output 'o' is a sequence of tensors of different shapes"),
    ],
)
def test_an_output_no_array_holds_is_refused_not_a_crash(kind, message):
    """Answered 500 (a TypeError or ValueError while encoding) before."""
    from tests.models import empty_optional_output, ragged_sequence_output

    source = empty_optional_output if kind == "empty optional" else ragged_sequence_output
    model = OnnxModel(source())
    with pytest.raises(InferenceFailed, match=message) as failed:
        model.predict({"x": np.ones((1, 3), np.float32)})
    assert failed.value.http_status == 422


def _cast_to(elem_type: int) -> bytes:
    from onnx import helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])
    y = helper.make_tensor_value_info("y", elem_type, [None, 3])
    graph = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=elem_type)], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model.SerializeToString()


@pytest.mark.parametrize(
    "elem_type",
    [TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E5M2, TensorProto.INT4, TensorProto.UINT4],
)
def test_an_output_type_onnxruntime_cannot_hand_over_is_refused_at_load(elem_type):
    """Every run failed "on these inputs: RuntimeError" (float8e5m2, int4, uint4), or
    returned a float8's bit patterns as UINT8 values (float8e4m3fn)."""
    from onnx import helper

    from blindai.errors import InvalidInput

    name = helper.tensor_dtype_to_string(elem_type).removeprefix("TensorProto.").lower()
    with pytest.raises(InvalidInput, match=rf"output 'y' has type tensor\({name}\), which"):
        OnnxModel(_cast_to(elem_type))


def test_the_upload_of_such_a_model_says_why():
    import cbor2

    from tests.unit.server._inprocess import in_process

    model = _cast_to(TensorProto.INT4)
    with in_process() as server:
        body = cbor2.dumps({"model": model, "length": len(model)})
        resp = server.management.post("/upload", content=body)
        assert resp.status_code == 400
        assert "output 'y' has type tensor(int4)" in cbor2.loads(resp.content)


_TELEMETRY_RUN = """
import numpy as np
from blindai.server.runtime import OnnxModel
from tests.models import gather_rows
model = OnnxModel(gather_rows(vocab=10))
try:
    model.predict({"ids": np.array([[1, 987654]]), "scale": np.ones((1, 1, 1), np.float32)})
except Exception:
    pass
"""


def test_a_failing_run_writes_no_input_value_to_onnxruntimes_telemetry_store(tmp_path):
    """onnxruntime 1.32 records each failed session or run, its error text with it (an index
    out of range quotes the request's value, a failed load the model's node names), in an
    event store under ``$HOME/.cache/Microsoft/DeveloperTools`` (to upload when it can):
    every process that builds sessions (the server, the compile guard's child, a model host)
    turns those events off first. A process of its own: the store's place is fixed when
    onnxruntime's environment is made."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    home = tmp_path / "home"
    home.mkdir()
    repo = Path(__file__).resolve().parents[3]
    env = {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join([str(repo / "src"), str(repo)]),
    }
    subprocess.run([sys.executable, "-c", _TELEMETRY_RUN], env=env, check=True, timeout=120)
    written = b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())
    assert b"987654" not in written
    assert b"out of data bounds" not in written
