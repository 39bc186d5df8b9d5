"""Small models on the event loop, through a real server: where runs happened shows in the
queue phase of the server's metrics (a run on the loop waits for no worker: 0 ns added)."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator

import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client.parser import text_string_to_metric_families

from blindai.server._inline import QUALIFYING_RUNS
from tests._server import ServerProcess, connect, free_ports, start_server
from tests.attacks import reshaped_by_request
from tests.models import matmul

QUEUE = (("phase", "queue"), ("protocol", "v06"))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, int]]:
    (port,) = free_ports(1)
    # a generous limit: qualifying must not depend on how busy the machine is
    proc = start_server(
        tmp_path_factory.mktemp("inline"), "--inline-run-us", "10000", "--metrics-port", str(port)
    )
    yield proc, port
    proc.stop()


def _queue(port: int) -> tuple[float, float]:
    """(count, sum) of the queue phase of /run requests."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as reply:
        text = reply.read().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("blindai_inference_phase_duration_seconds_"):
                if tuple(sorted(s.labels.items())) == QUEUE:
                    found[s.name.rsplit("_", 1)[1]] = s.value
    return found.get("count", 0.0), found.get("sum", 0.0)


def test_only_the_qualified_shapes_run_on_the_loop(served) -> None:
    server, port = served
    model = matmul(16, 4, seed=5)
    reference = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    with connect(server) as conn:
        model_id = conn.upload_model(model).model_id

        def run(x: np.ndarray) -> np.ndarray:
            got = conn.run_model(model_id, input_tensors={"x": x}).output[0].as_numpy()
            np.testing.assert_allclose(got, reference.run(None, {"x": x})[0], rtol=1e-6)
            return got

        for _ in range(QUALIFYING_RUNS):  # in a worker, qualifying
            run(rng.standard_normal((1, 16), dtype=np.float32))
        count, total = _queue(port)
        for _ in range(5):
            run(rng.standard_normal((1, 16), dtype=np.float32))
        on_loop = _queue(port)
        assert on_loop == (count + 5, total)  # five runs, none waited for a worker
        run(rng.standard_normal((512, 16), dtype=np.float32))  # a bigger batch: a worker
        in_worker = _queue(port)
        assert in_worker[0] == on_loop[0] + 1 and in_worker[1] > on_loop[1]
        run(rng.standard_normal((1, 16), dtype=np.float32))  # batch 1 qualifies anew
        assert _queue(port)[1] > in_worker[1]
        conn.delete_model(model_id)


def test_a_run_whose_shapes_the_request_chooses_never_holds_the_event_loop(served) -> None:
    """Reshape(x, s), s a request input: 20 runs with s = [1, 4096] (dot products) qualified
    the model for the event loop, then s = [4096, 1] (the same input shapes) ran two
    4096 x 4096 products there: measured, 3.6 s past a 2 s --run-timeout, another client's
    tiny run waiting as long. Now such a model always runs in a worker; the other client is
    served throughout."""
    server, _ = served
    n = 4096
    x = np.ones(n, np.float32) / n
    with connect(server) as conn, connect(server) as other:
        model_id = conn.upload_model(reshaped_by_request(n)).model_id
        tiny = other.upload_model(matmul(16, 4)).model_id
        for _ in range(QUALIFYING_RUNS + 5):
            conn.predict(model_id, {"x": x, "s": np.array([1, n], np.int64)})
        slowest, stop = [0.0], threading.Event()

        def probe() -> None:
            while not stop.is_set():
                started = time.monotonic()
                other.predict(tiny, {"x": np.ones((1, 16), np.float32)})
                slowest[0] = max(slowest[0], time.monotonic() - started)
                time.sleep(0.02)

        thread = threading.Thread(target=probe)
        thread.start()
        try:
            time.sleep(0.2)
            conn.predict(model_id, {"x": x, "s": np.array([n, 1], np.int64)})
            time.sleep(0.2)
        finally:
            stop.set()
            thread.join()
        assert slowest[0] < 1.0, f"another client waited {slowest[0]:.2f} s"
        conn.delete_model(model_id)
