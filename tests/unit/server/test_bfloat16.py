"""bfloat16 through onnxruntime's Python API (which has no numpy type for it)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto

from blindai.errors import InvalidInput
from blindai.server._bfloat16 import bfloat16, from_ort_value, to_ort_value
from tests import models

ml_dtypes = pytest.importorskip("ml_dtypes")


def session(model: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def test_numpy_alone_cannot_feed_or_read_bfloat16() -> None:
    """What this module exists for: onnxruntime refuses a bfloat16 numpy array."""
    s = session(models.identity(TensorProto.BFLOAT16))
    with pytest.raises(Exception, match=r"MLDataType|bfloat16"):
        s.run(None, {"x": np.ones((1, 3), dtype=ml_dtypes.bfloat16)})


def test_a_bfloat16_model_round_trips_bit_for_bit() -> None:
    s = session(models.identity(TensorProto.BFLOAT16))
    x = np.array([[1.5, -2.25, 3.0], [0.0, 1e30, -1e-30]], dtype=ml_dtypes.bfloat16)
    (out,) = s.run_with_ort_values(["y"], {"x": to_ort_value(x)})
    y = from_ort_value(out)
    assert y.dtype == bfloat16()
    assert y.shape == (2, 3)
    np.testing.assert_array_equal(y.view(np.uint16), x.view(np.uint16))


def test_empty_and_non_contiguous_inputs() -> None:
    s = session(models.identity(TensorProto.BFLOAT16))
    empty = np.zeros((0, 3), dtype=ml_dtypes.bfloat16)
    (out,) = s.run_with_ort_values(["y"], {"x": to_ort_value(empty)})
    assert from_ort_value(out).shape == (0, 3)
    wide = np.arange(12, dtype=np.float32).reshape(2, 6).astype(ml_dtypes.bfloat16)[:, ::2]
    (out,) = s.run_with_ort_values(["y"], {"x": to_ort_value(wide)})
    np.testing.assert_array_equal(from_ort_value(out).astype(np.float32), wide.astype(np.float32))


def test_other_types_pass_through() -> None:
    s = session(models.identity(TensorProto.FLOAT))
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    (out,) = s.run_with_ort_values(["y"], {"x": to_ort_value(x)})
    np.testing.assert_array_equal(from_ort_value(out), x)


def test_strings_cannot_become_ort_values() -> None:
    with pytest.raises(InvalidInput, match="string"):
        to_ort_value(np.array(["a"], dtype=object))
