"""End to end over loopback TLS: every datum type, multi-input/multi-output, inputs by name."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto

import blindai
from blindai.errors import InvalidInput, ModelNotFound
from tests.models import identity, matmul, two_in_two_out

DATUMS = [
    (blindai.DatumType.F32, TensorProto.FLOAT, np.float32),
    (blindai.DatumType.F64, TensorProto.DOUBLE, np.float64),
    (blindai.DatumType.I32, TensorProto.INT32, np.int32),
    (blindai.DatumType.I64, TensorProto.INT64, np.int64),
    (blindai.DatumType.U32, TensorProto.UINT32, np.uint32),
    (blindai.DatumType.U64, TensorProto.UINT64, np.uint64),
    (blindai.DatumType.U8, TensorProto.UINT8, np.uint8),
    (blindai.DatumType.U16, TensorProto.UINT16, np.uint16),
    (blindai.DatumType.I8, TensorProto.INT8, np.int8),
    (blindai.DatumType.I16, TensorProto.INT16, np.int16),
    (blindai.DatumType.Bool, TensorProto.BOOL, np.bool_),
    (blindai.DatumType.F16, TensorProto.FLOAT16, np.float16),
]


def _reference(model: bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)  # type: ignore[no-any-return]


@pytest.mark.parametrize(("datum", "elem", "np_type"), DATUMS, ids=[d[0].name for d in DATUMS])
def test_every_datum_type_round_trips(conn, datum, elem, np_type):
    model = identity(elem)
    uploaded = conn.upload_model(model)
    rng = np.random.default_rng(int(datum))
    x = (rng.integers(0, 100, size=(2, 3)) % (2 if np_type is np.bool_ else 100)).astype(np_type)
    reply = conn.run_model(model_id=uploaded.model_id, input_tensors={"x": x})
    out = reply.output[0]
    assert out.datum_type == datum
    assert out.node_name == "y"
    assert out.shape == (2, 3)
    np.testing.assert_array_equal(out.as_numpy(), _reference(model, {"x": x})[0])
    assert out.as_flat() == x.ravel().tolist()
    conn.delete_model(uploaded.model_id)


def test_flat_list_with_dtype_and_shape(conn):
    uploaded = conn.upload_model(identity(TensorProto.INT64, [1, 4]))
    reply = conn.run_model(
        model_id=uploaded.model_id,
        input_tensors=[1, 2, 3, 4],
        dtypes=blindai.DatumType.I64,
        shapes=(1, 4),
    )
    assert reply.output[0].as_flat() == [1, 2, 3, 4]


def test_multi_input_multi_output_by_name_any_order_and_by_position(conn):
    model = two_in_two_out()
    uploaded = conn.upload_model(model, model_name="two")
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.full((2, 4), 0.5, dtype=np.float32)
    want = _reference(model, {"a": a, "b": b})
    for inputs in ({"b": b, "a": a}, {"a": a, "b": b}, [a, b]):
        got = conn.predict("two", inputs)
        assert list(got) == ["sum", "idx"]
        np.testing.assert_array_equal(got["sum"], want[0])
        np.testing.assert_array_equal(got["idx"], want[1])
    by_hash = conn.run_model(model_hash=uploaded.hash.hex(), input_tensors=[a, b])
    np.testing.assert_array_equal(by_hash.output[0].as_numpy(), want[0])


def test_identical_models_get_distinct_ids_and_same_hash(conn):
    model = matmul(16, 4)
    first, second = conn.upload_model(model), conn.upload_model(model)
    assert first.model_id != second.model_id
    assert first.hash == second.hash
    conn.delete_model(first.model_id)
    x = np.ones((1, 16), np.float32)
    np.testing.assert_allclose(
        conn.predict(second.model_id, {"x": x})["y"], _reference(model, {"x": x})[0], rtol=1e-6
    )
    with pytest.raises(ModelNotFound):
        conn.predict(first.model_id, {"x": x})


@pytest.mark.torch
def test_torch_tensors_are_accepted(conn):
    import torch

    uploaded = conn.upload_model(identity(TensorProto.FLOAT))
    reply = conn.run_model(model_id=uploaded.model_id, input_tensors=torch.ones(2, 3))
    assert reply.output[0].as_torch().shape == (2, 3)


def test_model_as_file_path(conn, tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(identity(TensorProto.FLOAT))
    uploaded = conn.upload_model(str(path), model_name="from-file")
    out = conn.predict("from-file", [np.zeros((1, 3), np.float32)])
    assert out["y"].shape == (1, 3)
    assert len(uploaded.model_id) == 36


@pytest.mark.parametrize(
    ("inputs", "fragment"),
    [
        ({"x": np.zeros((2, 4), np.float32)}, "shape"),
        ({"x": np.zeros((2, 3), np.float64)}, "dtype"),
        ({"nope": np.zeros((2, 3), np.float32)}, "no input named"),
        ([np.zeros((2, 3), np.float32)] * 2, "takes 1 input; 2 inputs were given"),
    ],
)
def test_inputs_that_do_not_fit_are_refused_with_a_message(conn, inputs, fragment):
    uploaded = conn.upload_model(identity(TensorProto.FLOAT))
    with pytest.raises(InvalidInput) as info:  # the class the server raised, by its header
        conn.run_model(model_id=uploaded.model_id, input_tensors=inputs)
    assert info.value.status_code == 400
    assert fragment in str(info.value)


def test_a_backend_test_model_with_scalars_round_trips_with_shape_empty(conn, scalar_case):
    uploaded = conn.upload_model(scalar_case.model)
    (x,), (want,) = scalar_case.inputs, scalar_case.outputs
    assert x.shape == () and want.shape == ()
    out = conn.run_model(model_id=uploaded.model_id, input_tensors=[x]).output[0]
    assert out.shape == () and out.datum_type == blindai.DatumType.I32
    got = conn.predict(uploaded.model_id, {"x": x})["y"]
    assert got.shape == () and got.dtype == want.dtype and got == want
    np.testing.assert_array_equal(out.as_numpy(), want)


def test_large_upload_streams_in_chunks(conn):
    from blindai.client.connection import PROGRESS_MIN_BYTES

    model = matmul(1536, 1536, seed=5)  # 9 MiB of weights: above the streaming threshold
    assert len(model) > PROGRESS_MIN_BYTES
    uploaded = conn.upload_model(model)
    x = np.ones((1, 1536), np.float32)
    np.testing.assert_allclose(
        conn.predict(uploaded.model_id, {"x": x})["y"], _reference(model, {"x": x})[0], rtol=1e-4
    )
    conn.delete_model(uploaded.model_id)


def test_a_model_file_streams_to_the_server_and_its_hash_matches(conn, tmp_path):
    import hashlib

    model = matmul(1536, 1536, seed=6)  # 9 MiB: streamed in chunks from the file
    path = tmp_path / "model.onnx"
    path.write_bytes(model)
    uploaded = conn.upload_model(path)
    assert uploaded.hash == hashlib.sha256(model).digest()
    x = np.ones((1, 1536), np.float32)
    np.testing.assert_allclose(
        conn.predict(uploaded.model_id, {"x": x})["y"], _reference(model, {"x": x})[0], rtol=1e-4
    )
    conn.delete_model(uploaded.model_id)


@pytest.mark.parametrize(
    ("kind", "message"),
    [("empty optional", "is an empty optional"), ("ragged sequence", "of different shapes")],
)
def test_an_output_no_tensor_holds_is_a_422_and_the_server_keeps_serving(conn, kind, message):
    """A model whose output is an empty optional or tensors of different shapes answered 500."""
    from blindai.errors import InferenceFailed
    from tests.models import empty_optional_output, ragged_sequence_output

    source = empty_optional_output if kind == "empty optional" else ragged_sequence_output
    hostile = conn.upload_model(source()).model_id
    with pytest.raises(InferenceFailed, match=message) as failed:
        conn.run_model(hostile, input_tensors={"x": np.ones((1, 3), np.float32)})
    assert failed.value.status_code == 422
    fine = conn.upload_model(identity(TensorProto.FLOAT)).model_id
    x = np.ones((1, 3), np.float32)
    assert np.array_equal(conn.run_model(fine, input_tensors={"x": x}).output[0].as_numpy(), x)
