"""Dynamic batching through the real server: concurrent clients get exactly their own results."""

from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto

from blindai.errors import InferenceFailed, InvalidInput
from tests.models import concat_pair, gather_rows, mixes_rows


def test_concurrent_requests_get_the_bytes_of_runs_alone_and_a_failing_one_fails_alone(conn):
    model = gather_rows(vocab=40)
    uploaded = conn.upload_model(model, max_batch_size=16, max_queue_delay_us=2000)
    reference = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    requests = [
        {
            "ids": rng.integers(0, 40, (1, 5)),
            "scale": rng.standard_normal((1, 1, 1)).astype(np.float32),
        }
        for _ in range(12)
    ]
    bad = 5
    requests[bad]["ids"][0, 2] = 40  # out of the table: this run fails
    results: list[object] = [None] * len(requests)
    start = threading.Barrier(len(requests))

    def client(i: int) -> None:
        start.wait()
        try:
            results[i] = conn.predict(uploaded.model_id, requests[i])["y"]
        except InferenceFailed as exc:
            results[i] = exc

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert isinstance(results[bad], InferenceFailed) and results[bad].status_code == 422
    for i, feeds in enumerate(requests):
        if i != bad:
            want = reference.run(None, feeds)[0]
            assert np.asarray(results[i]).tobytes() == want.tobytes()
    conn.delete_model(uploaded.model_id)


@pytest.mark.parametrize("elem", [TensorProto.FLOAT16, TensorProto.INT8, TensorProto.BOOL])
def test_batched_uploads_run_every_datum_type(conn, elem):
    uploaded = conn.upload_model(concat_pair(elem), max_batch_size=8)
    x = (np.arange(6).reshape(2, 3) % 2).astype(
        {TensorProto.FLOAT16: np.float16, TensorProto.INT8: np.int8, TensorProto.BOOL: bool}[elem]
    )
    out = conn.predict(uploaded.model_id, {"x": x})
    np.testing.assert_array_equal(out["y"], np.concatenate([x, x], axis=1))
    conn.delete_model(uploaded.model_id)


def test_batching_a_model_whose_rows_interact_is_refused(conn):
    with pytest.raises(InvalidInput, match="cannot be batched"):
        conn.upload_model(mixes_rows(), max_batch_size=8)
