"""Heavier checks, behind the ``slow`` marker: ``make test-slow``."""

from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort
import pytest

from tests._server import connect
from tests.models import matmul

pytestmark = pytest.mark.slow


def test_a_quarter_gigabyte_model(server):
    model = matmul(8192, 8192, seed=1)  # 256 MiB of float weights
    assert len(model) > 256 << 20
    with connect(server) as conn:
        start = time.perf_counter()
        uploaded = conn.upload_model(model)
        upload_s = time.perf_counter() - start
        x = np.ones((1, 8192), np.float32)
        want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})
        np.testing.assert_allclose(
            conn.predict(uploaded.model_id, {"x": x})["y"], want[0], rtol=1e-4
        )
        conn.delete_model(uploaded.model_id)
    print(f"256 MiB model: upload+compile {upload_s:.1f} s")


def test_sustained_load(server):
    with connect(server) as conn:
        uploaded = conn.upload_model(matmul(16, 4))
        x = np.ones((1, 16), np.float32)
        want = conn.predict(uploaded.model_id, {"x": x})["y"]
        for _ in range(2000):
            np.testing.assert_array_equal(conn.predict(uploaded.model_id, {"x": x})["y"], want)
