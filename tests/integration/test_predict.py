"""``Connection.predict``: outputs in model order (``.output``) and by name, as arrays.

The blindai-preview README flow, as written: ``response = client.predict("resnet18",
input_batch)`` then ``response.output[0].argmax()``; a dense layer named ``resnet18`` stands
in for ResNet18. The outputs are also reachable by name, as the plain dict of earlier versions.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import blindai
from blindai.client import ModelDatumType
from blindai.errors import ConfigurationError
from tests.models import matmul, two_in_two_out


def test_blindai_preview_readme_flow(conn: blindai.Connection) -> None:
    model = matmul(16, 10, seed=3)
    conn.upload_model(model, model_name="resnet18")
    input_batch = np.random.default_rng(4).standard_normal((1, 16)).astype(np.float32)

    response = conn.predict("resnet18", input_batch)

    (want,) = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(
        None, {"x": input_batch}
    )
    assert response.output[0].argmax() == want.argmax()
    assert response.output[0].shape == (1, 10)
    np.testing.assert_allclose(np.asarray(response.output[0]), want, rtol=1e-5)


def test_outputs_in_model_order_and_by_name(conn: blindai.Connection) -> None:
    uploaded = conn.upload_model(two_in_two_out(), model_name="predict-two")
    a = np.array([[1, 5, 2, 0]], np.float32)
    b = np.ones((1, 4), np.float32)

    response = conn.predict(uploaded.model_id, {"a": a, "b": b})

    assert isinstance(response, blindai.PredictResponse)
    summed, idx = response.output
    np.testing.assert_array_equal(summed, a + b)
    assert idx.dtype == np.int64 and idx.tolist() == [[1]]
    assert response["sum"] is summed and response.outputs["idx"] is idx
    assert list(response) == list(response.keys()) == ["sum", "idx"]
    assert [name for name, _ in response.items()] == ["sum", "idx"]
    assert len(response) == 2 and "sum" in response and "nothing" not in response
    assert response.get("nothing") is None
    with pytest.raises(KeyError, match="the outputs are"):
        response["nothing"]
    with pytest.raises(TypeError):
        response.outputs["sum"] = a  # type: ignore[index]
    # never the values: a repr may end up in a log
    assert repr(response) == "PredictResponse(sum: float32[1, 4], idx: int64[1, 1])"


def test_flat_list_forms_of_blindai_0_6_3(conn: blindai.Connection) -> None:
    uploaded = conn.upload_model(matmul(4, 2, seed=5), model_name="predict-flat")
    flat = [float(v) for v in range(8)]
    want = conn.predict(uploaded.model_id, np.asarray(flat, np.float32).reshape(2, 4))["y"]
    forms: list[tuple[object, object]] = [
        ([ModelDatumType.F32], [(2, 4)]),
        ("float32", (2, 4)),
        ("f32", [2, 4]),
        (np.float32, [[2, 4]]),
    ]
    for dtypes, shapes in forms:
        got = conn.run_model(uploaded.model_id, input_tensors=flat, dtypes=dtypes, shapes=shapes)
        np.testing.assert_array_equal(got.output[0].as_numpy(), want)
    with pytest.raises(ConfigurationError, match="dtypes"):
        conn.run_model(uploaded.model_id, input_tensors=flat, dtypes="float33", shapes=(2, 4))
