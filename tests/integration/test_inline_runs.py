"""Small models on the event loop, through a real server: where runs happened shows in the
queue phase of the server's metrics (a run on the loop waits for no worker: 0 ns added)."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client.parser import text_string_to_metric_families

from blindai.server._inline import QUALIFYING_RUNS
from tests._server import ServerProcess, connect, free_ports, start_server
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
