"""Many clients at once, mixing good and bad requests: every good one is answered correctly."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto

from blindai.errors import InvalidInput, ModelNotFound
from tests._server import connect
from tests.models import identity, matmul

WORKERS = 8
ROUNDS = 25


def test_mixed_traffic_from_many_clients(server):
    model = matmul(32, 8, seed=3)
    reference = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    with connect(server) as admin:
        shared = admin.upload_model(model, model_name="shared")
    errors: list[BaseException] = []
    lock = threading.Lock()

    # connect here: warnings.catch_warnings is not thread-safe
    connections = [connect(server) for _ in range(WORKERS)]

    def client(worker: int) -> int:
        done = 0
        rng = np.random.default_rng(worker)
        with connections[worker] as conn:
            own = conn.upload_model(identity(TensorProto.INT64), model_name=f"own-{worker}")
            for _ in range(ROUNDS):
                x = rng.standard_normal((4, 32)).astype(np.float32)
                got = conn.predict(shared.model_id, {"x": x})["y"]
                np.testing.assert_allclose(got, reference.run(None, {"x": x})[0], rtol=1e-5)
                with pytest.raises(InvalidInput):
                    conn.predict(shared.model_id, {"x": x[:, :5]})
                with pytest.raises(ModelNotFound):
                    conn.predict("missing-model", {"x": x})
                ints = rng.integers(-9, 9, size=(2, 3))
                np.testing.assert_array_equal(conn.predict(own.model_id, [ints])["y"], ints)
                done += 1
            conn.delete_model(own.model_id)
        return done

    def guarded(worker: int) -> int:
        try:
            return client(worker)
        except BaseException as exc:  # collected and re-raised below
            with lock:
                errors.append(exc)
            return 0

    with ThreadPoolExecutor(WORKERS) as pool:
        counts = list(pool.map(guarded, range(WORKERS)))
    if errors:
        raise errors[0]
    assert counts == [ROUNDS] * WORKERS
