"""Many clients at once, mixing good and bad requests: every good one is answered correctly."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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


def _memory_files(pid: int) -> int:
    """How many of the process's descriptors are memory files (a model's bytes each)."""
    fds = Path(f"/proc/{pid}/fd")
    return sum(1 for fd in fds.iterdir() if os.readlink(fd).startswith("/memfd:"))


def test_a_models_life_cycle_raced_by_other_clients_leaves_nothing_behind(tmp_path):
    """Each client uploads a public model under its name (batching every other time), runs
    it while another connection runs the same name in a loop, and deletes it, 12 times over.
    Every run answers its own model's values or a clean 404/503, never another's; afterwards
    the server holds nothing of them: no model, no memory file, no Prometheus series (a run
    that found a model before its delete brought its series back for good)."""
    from blindai.errors import ModelNotReady
    from tests._server import start_server
    from tests.integration._oip import attested_pem, scrape
    from tests.models import add_constant

    workers, cycles = 4, 12
    proc = start_server(tmp_path, "--max-models", str(workers), "--inference-threads", "4")
    try:
        pem = attested_pem(proc)
        files = _memory_files(proc.process.pid)
        # connected here: warnings.catch_warnings is not thread-safe
        owners = [connect(proc) for _ in range(workers)]
        racers = [connect(proc) for _ in range(workers)]
        x = np.array([[1.0, 2.0]], np.float32)
        wrong: list[object] = []

        def race(conn: object, name: str, mine: set[float], stop: threading.Event) -> None:
            while not stop.is_set():
                try:
                    got = conn.predict(name, {"x": x})["y"]  # type: ignore[attr-defined]
                except (ModelNotFound, ModelNotReady):
                    continue
                if float(got[0, 0] - x[0, 0]) not in mine:
                    wrong.append(got)

        def client(worker: int) -> list[str]:
            ids = []
            mine: set[float] = set()
            with owners[worker] as conn, racers[worker] as racer:
                for cycle in range(cycles):
                    value = float(worker * 100 + cycle)
                    mine.add(value)
                    batching = {"max_batch_size": 4} if cycle % 2 else {}
                    name = f"w{worker}"
                    model = add_constant(value)
                    uploaded = conn.upload_model(model, model_name=name, public=True, **batching)
                    ids.append(uploaded.model_id)
                    stop = threading.Event()
                    other = threading.Thread(target=race, args=(racer, name, mine, stop))
                    other.start()
                    np.testing.assert_array_equal(conn.predict(name, {"x": x})["y"], x + value)
                    conn.delete_model(uploaded.model_id)
                    stop.set()
                    other.join()
            return ids

        with ThreadPoolExecutor(workers) as pool:
            deleted = [i for ids in pool.map(client, range(workers)) for i in ids]
        assert not wrong, wrong[:3]
        with connect(proc) as conn:
            assert conn.list_models() == []
        series = {
            dict(labels).get("model")
            for (name, labels) in scrape(proc, pem)
            if name.startswith("blindai_model_inference")
        }
        assert not series & set(deleted)
        assert _memory_files(proc.process.pid) == files
    finally:
        proc.stop()
