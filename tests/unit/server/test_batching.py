"""server/batching.py on real onnxruntime sessions: isolation, exact splits, scheduling."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from onnx import TensorProto

from blindai.errors import InferenceFailed, ModelNotReady
from blindai.server.batching import BatchPolicy, ModelQueue, batch_axis_problem, probe_batching
from blindai.server.runtime import OnnxModel
from tests.models import concat_pair, gather_rows, identity, matmul, mixes_rows, two_in_two_out

# every datum type the wire carries (0.6 datum types, plus F16 and strings)
DATUM_TYPES = {
    TensorProto.FLOAT: np.float32,
    TensorProto.DOUBLE: np.float64,
    TensorProto.FLOAT16: np.float16,
    TensorProto.INT8: np.int8,
    TensorProto.INT16: np.int16,
    TensorProto.INT32: np.int32,
    TensorProto.INT64: np.int64,
    TensorProto.UINT8: np.uint8,
    TensorProto.UINT16: np.uint16,
    TensorProto.UINT32: np.uint32,
    TensorProto.UINT64: np.uint64,
    TensorProto.BOOL: np.bool_,
    TensorProto.STRING: object,
}


@pytest.fixture
def pool():
    with ThreadPoolExecutor(4) as executor:
        yield executor


def offload_to(pool):
    def offload(fn, caller):
        return asyncio.get_running_loop().run_in_executor(pool, fn)

    return offload


def queue_for(model, pool, **policy) -> ModelQueue:
    """A queue; with a (1 us) queue delay by default, so that requests queued together batch
    together (with no delay, an idle queue runs the first request at once, alone)."""
    policy.setdefault("max_queue_delay_us", 1)
    return ModelQueue(model, policy=BatchPolicy(**policy), offload=offload_to(pool))


def rows_of(dtype, rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    if dtype is object:
        texts = [[f"r{rng.integers(1 << 30)}é" for _ in range(cols)] for _ in range(rows)]
        return np.array(texts, dtype=object)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        values = rng.standard_normal((rows, cols)) * 1e3
        values[0, 0] = np.nan  # NaN payloads must come back as they are
        return values.astype(dt)
    if dt.kind == "b":
        return rng.integers(0, 2, (rows, cols)).astype(bool)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, (rows, cols), dtype=dt, endpoint=True)


def same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype == object:
        return a.shape == b.shape and a.tolist() == b.tolist()
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def run_together(queue: ModelQueue, requests: list[dict], outputs=None, callers=None) -> list:
    """All requests queued before the queue's first run starts (asyncio runs ready tasks in
    order), so that they can be batched; exceptions are returned in place of results.
    ``callers``: each request's caller (all anonymous by default)."""
    callers = callers or [None] * len(requests)

    async def scenario():
        return await asyncio.gather(
            *(
                queue.predict(feeds, outputs, caller=caller)
                for feeds, caller in zip(requests, callers, strict=True)
            ),
            return_exceptions=True,
        )

    return asyncio.run(scenario())


@pytest.mark.parametrize("elem_type", list(DATUM_TYPES), ids=lambda t: TensorProto.DataType.Name(t))
def test_batched_outputs_are_bit_for_bit_those_of_runs_alone(elem_type, pool):
    model = OnnxModel(concat_pair(elem_type))
    queue = queue_for(model, pool, max_batch_size=16)
    rng = np.random.default_rng(elem_type)
    requests = [{"x": rows_of(DATUM_TYPES[elem_type], rng, n, 3)} for n in (1, 2, 1, 3, 1)]
    results = run_together(queue, requests)
    assert queue.runs == 1, "the five requests should have run as one batch"
    for feeds, got in zip(requests, results, strict=True):
        alone = model.predict(feeds)
        assert [name for name, _ in got] == ["y", "z"]
        for (_, a), (_, b) in zip(got, alone, strict=True):
            assert same_bytes(a, b)


def test_a_matmul_batched_gives_the_bytes_of_runs_alone(pool):
    # MatMul takes other kernel paths for 8 rows than for 1
    model = OnnxModel(matmul(64, 32, seed=3))
    queue = queue_for(model, pool, max_batch_size=8)
    rng = np.random.default_rng(5)
    requests = [{"x": rng.standard_normal((1, 64)).astype(np.float32)} for _ in range(8)]
    results = run_together(queue, requests)
    assert queue.runs == 1
    for feeds, got in zip(requests, results, strict=True):
        assert same_bytes(got[0][1], model.predict(feeds)[0][1])


def test_a_failing_request_fails_alone_and_its_neighbours_keep_their_results(pool):
    model = OnnxModel(gather_rows(vocab=10))
    queue = queue_for(model, pool, max_batch_size=8)
    good = [
        {"ids": np.array([[1, 2, 3]]), "scale": np.full((1, 1, 1), s, np.float32)}
        for s in (1.0, 2.0, 3.0)
    ]
    bad = {"ids": np.array([[1, 99, 3]]), "scale": np.ones((1, 1, 1), np.float32)}
    results = run_together(queue, [good[0], bad, good[1], good[2]])
    assert isinstance(results[1], InferenceFailed)
    for feeds, got in zip(good, [results[0], results[2], results[3]], strict=True):
        assert same_bytes(got[0][1], model.predict(feeds)[0][1])
    assert queue.runs == 1  # one batch, whose members were then rerun one by one


def test_requests_of_other_shapes_or_outputs_are_not_mixed(pool):
    model = OnnxModel(gather_rows(vocab=10))
    queue = queue_for(model, pool, max_batch_size=8)
    scale = np.ones((1, 1, 1), np.float32)
    short = {"ids": np.array([[1, 2]]), "scale": scale}
    long = {"ids": np.array([[1, 2, 3]]), "scale": scale}
    results = run_together(queue, [short, long, short, long])
    assert queue.runs == 2
    assert [r[0][1].shape for r in results] == [(1, 2, 4), (1, 3, 4), (1, 2, 4), (1, 3, 4)]

    pair = OnnxModel(two_in_two_out())
    queue = queue_for(pair, pool, max_batch_size=8)
    feeds = {"a": np.ones((1, 4), np.float32), "b": np.ones((1, 4), np.float32)}

    async def scenario():
        return await asyncio.gather(
            queue.predict(feeds, ["idx"], caller=None), queue.predict(feeds, ["sum"], caller=None)
        )

    only_idx, only_sum = asyncio.run(scenario())
    assert [n for n, _ in only_idx] == ["idx"] and [n for n, _ in only_sum] == ["sum"]
    assert queue.runs == 2


def test_a_batch_holds_one_callers_requests_only(pool):
    """A model whose rows interact (its author's choice: the probe at upload is not a proof)
    sees one caller's rows at a time: no caller's outputs depend on another's inputs."""
    model = OnnxModel(mixes_rows())
    queue = queue_for(model, pool, max_batch_size=8)
    assert queue.batching  # the queue trusts its model: the caller is what keeps them apart
    mine = [{"x": np.full((1, 3), v, np.float32)} for v in (1.0, 3.0)]
    theirs = [{"x": np.full((1, 3), v, np.float32)} for v in (100.0, 300.0)]
    results = run_together(queue, [mine[0], theirs[0], mine[1], theirs[1]], callers="abab")
    assert queue.runs == 2
    # each caller's two rows ran together: x - their own mean (2 for mine, 200 for theirs)
    assert [float(r[0][1][0, 0]) for r in results] == [-1.0, -100.0, 1.0, 100.0]
    anonymous = run_together(queue, [mine[0], theirs[0]])
    assert queue.runs == 3  # anonymous callers are one caller (no access control: one party)
    assert [float(r[0][1][0, 0]) for r in anonymous] == [-49.5, 49.5]


def test_batches_hold_at_most_max_batch_size_rows(pool):
    model = OnnxModel(identity(TensorProto.FLOAT, [None, 3]))
    queue = queue_for(model, pool, max_batch_size=4)
    requests = [{"x": np.full((n, 3), i, np.float32)} for i, n in enumerate([3, 1, 2, 2, 6, 1])]
    results = run_together(queue, requests)
    # [3, 1] [2, 2] [6 alone: over the limit] [1]
    assert queue.runs == 4
    for feeds, got in zip(requests, results, strict=True):
        assert same_bytes(got[0][1], feeds["x"])


def test_batching_stays_off_for_models_without_a_batch_axis(pool):
    fixed = OnnxModel(identity(TensorProto.FLOAT, [1, 3]))
    assert "fixed first dimension" in (batch_axis_problem(fixed) or "")
    scalar = OnnxModel(identity(TensorProto.FLOAT, []))
    assert "no dimensions" in (batch_axis_problem(scalar) or "")
    assert batch_axis_problem(OnnxModel(gather_rows(10))) is None
    queue = queue_for(fixed, pool, max_batch_size=8)
    assert not queue.batching
    results = run_together(queue, [{"x": np.full((1, 3), i, np.float32)} for i in range(3)])
    assert queue.runs == 3
    assert [float(r[0][1][0, 0]) for r in results] == [0.0, 1.0, 2.0]


def test_the_probe_finds_models_whose_rows_interact():
    assert batch_axis_problem(OnnxModel(mixes_rows())) is None  # the shapes cannot tell
    assert "rows interact" in (probe_batching(OnnxModel(mixes_rows())) or "")
    assert probe_batching(OnnxModel(gather_rows(10))) is None
    assert probe_batching(OnnxModel(concat_pair(TensorProto.STRING))) is None
    assert probe_batching(OnnxModel(matmul(16, 4))) is None


def test_a_cancelled_request_leaves_the_queue_and_the_others_run(pool):
    model = OnnxModel(identity(TensorProto.FLOAT, [None, 3]))
    queue = queue_for(model, pool, max_batch_size=8)

    async def scenario():
        tasks = [
            asyncio.ensure_future(queue.predict({"x": np.full((1, 3), i, np.float32)}, caller=None))
            for i in range(3)
        ]
        await asyncio.sleep(0)  # every request is queued; the run has not started
        tasks[1].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(scenario())
    assert isinstance(results[1], asyncio.CancelledError)
    assert [float(results[i][0][1][0, 0]) for i in (0, 2)] == [0.0, 2.0]
    assert queue.runs == 1


def test_no_more_runs_than_max_concurrent_runs_are_in_flight(pool):
    class Counting:
        """The real model, with the runs in flight counted and held until released."""

        def __init__(self) -> None:
            self.model = OnnxModel(identity(TensorProto.FLOAT, [None, 3]))
            self.inputs, self.outputs = self.model.inputs, self.model.outputs
            self.lock = threading.Lock()
            self.in_flight = self.most = 0
            self.release = threading.Event()
            self.two_started = threading.Event()

        def predict(self, feeds, outputs=None, *, run_options=None, caller=None):
            with self.lock:
                self.in_flight += 1
                self.most = max(self.most, self.in_flight)
                if self.in_flight == 2:
                    self.two_started.set()
            self.release.wait(10)
            with self.lock:
                self.in_flight -= 1
            return self.model.predict(feeds, outputs)

    counting = Counting()
    queue = queue_for(counting, pool, max_concurrent_runs=2)

    async def scenario():
        tasks = [
            asyncio.ensure_future(queue.predict({"x": np.full((1, 3), i, np.float32)}, caller=None))
            for i in range(6)
        ]
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, counting.two_started.wait, 10)
        counting.release.set()
        return await asyncio.gather(*tasks)

    results = asyncio.run(scenario())
    assert counting.most == 2
    assert [float(r[0][1][0, 0]) for r in results] == [0, 1, 2, 3, 4, 5]


def test_a_request_waits_for_a_batch_partner_only_until_the_batch_is_full(pool):
    model = OnnxModel(identity(TensorProto.FLOAT, [None, 3]))
    # a delay far longer than the test's timeout: the batch must start once it is full
    queue = queue_for(model, pool, max_batch_size=2, max_queue_delay_us=60_000_000)

    async def scenario():
        first = asyncio.ensure_future(
            queue.predict({"x": np.zeros((1, 3), np.float32)}, caller=None)
        )
        for _ in range(3):
            await asyncio.sleep(0)  # the run slot is taken and waits for a partner
        assert not first.done()
        second = queue.predict({"x": np.ones((1, 3), np.float32)}, caller=None)
        return await asyncio.wait_for(asyncio.gather(first, second), 10)

    a, b = asyncio.run(scenario())
    assert float(a[0][1][0, 0]) == 0.0 and float(b[0][1][0, 0]) == 1.0
    assert queue.runs == 1


def test_a_full_queue_refuses_at_once_and_close_fails_the_waiting(pool):
    model = OnnxModel(identity(TensorProto.FLOAT, [None, 3]))
    queue = queue_for(model, pool, max_queued=2)
    x = {"x": np.zeros((1, 3), np.float32)}

    async def scenario():
        tasks = [asyncio.ensure_future(queue.predict(x, caller=None)) for _ in range(3)]
        await asyncio.sleep(0)  # the first runs (the one slot), the other two wait
        with pytest.raises(ModelNotReady) as refused:
            await queue.predict(x, caller=None)
        assert refused.value.status_code == 503
        queue.close()
        return await asyncio.gather(*tasks, return_exceptions=True)

    first, *waiting = asyncio.run(scenario())
    assert first[0][0] == "y"
    assert all(isinstance(r, ModelNotReady) for r in waiting)


def test_policy_bounds():
    with pytest.raises(ValueError, match="max_batch_size"):
        BatchPolicy(max_batch_size=0)
    with pytest.raises(ValueError, match="max_queue_delay_us"):
        BatchPolicy(max_queue_delay_us=-1)


def test_an_idle_queue_runs_the_first_request_at_once_and_batches_those_behind_it(pool):
    model = OnnxModel(identity(TensorProto.FLOAT, [None, 3]))
    queue = queue_for(model, pool, max_batch_size=8, max_queue_delay_us=0)
    requests = [{"x": np.full((1, 3), i, np.float32)} for i in range(5)]
    results = run_together(queue, requests)
    assert queue.runs == 2  # the first alone, at once; the four that queued behind it together
    for feeds, got in zip(requests, results, strict=True):
        assert same_bytes(got[0][1], feeds["x"])


def test_a_cancelled_run_keeps_its_slot_until_onnxruntime_is_done(pool):
    class Held:
        """The real model, held in its run until released; runs in flight counted."""

        def __init__(self) -> None:
            self.model = OnnxModel(identity(TensorProto.FLOAT, [None, 3]))
            self.inputs, self.outputs = self.model.inputs, self.model.outputs
            self.started = threading.Event()
            self.release = threading.Event()
            self.in_flight = self.most = 0
            self.lock = threading.Lock()

        def predict(self, feeds, outputs=None, *, run_options=None, caller=None):
            with self.lock:
                self.in_flight += 1
                self.most = max(self.most, self.in_flight)
            self.started.set()
            self.release.wait(10)
            with self.lock:
                self.in_flight -= 1
            return self.model.predict(feeds, outputs)

    held = Held()
    queue = queue_for(held, pool, max_concurrent_runs=1)
    x = {"x": np.zeros((1, 3), np.float32)}

    async def scenario():
        first = asyncio.ensure_future(queue.predict(x, caller=None))
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, held.started.wait, 10)
        first.cancel()  # the client went away; onnxruntime still runs
        second = asyncio.ensure_future(queue.predict(x, caller=None))
        await asyncio.sleep(0)
        assert not second.done() and held.in_flight == 1
        held.release.set()
        return await second

    assert asyncio.run(scenario())[0][0] == "y"
    assert held.most == 1


def test_a_request_cancelled_before_its_run_started_does_not_keep_its_slot():
    model = OnnxModel(identity(TensorProto.FLOAT, [None, 3]))
    with ThreadPoolExecutor(1) as one_thread:
        queue = queue_for(model, one_thread, max_concurrent_runs=1)
        blocker = threading.Event()
        x = {"x": np.zeros((1, 3), np.float32)}

        async def scenario():
            loop = asyncio.get_running_loop()
            busy = loop.run_in_executor(one_thread, blocker.wait, 10)  # the only thread, busy
            first = asyncio.ensure_future(queue.predict(x, caller=None))
            await asyncio.sleep(0)  # its run is waiting for the thread
            first.cancel()
            blocker.set()
            await busy
            return await asyncio.wait_for(queue.predict(x, caller=None), 10)  # the slot came back

        assert asyncio.run(scenario())[0][0] == "y"


def _daemon_offload(fn, caller=None):
    """The queue's offload on a daemon thread: a run never stopped (the bug under test)
    cannot keep the test process from ending."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(result, error):
        if future.done():
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    def work():
        try:
            result = fn()
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=work, daemon=True).start()
    return future


@pytest.mark.parametrize("together", [1, 3])
def test_a_run_nobody_waits_for_is_stopped_and_gives_its_slot_back(together):
    """A batching model's runs took no run options: when every request of a run gave up (the
    run timeout passed, the gRPC call was cancelled), the run went on for as long as the
    model liked (a Loop of 2**40 trips here), holding a worker and the model's only run slot,
    so that every later request on the model timed out too (and a few such models held every
    worker). The run is now stopped once nobody waits for it; alone (``together`` 1, run at
    once) or batched (3 requests of one caller)."""
    from tests import attacks

    model = OnnxModel(attacks.batched_loop())
    delay = 0 if together == 1 else 200_000  # batched: the three wait together
    queue = ModelQueue(
        model,
        policy=BatchPolicy(max_batch_size=8, max_queue_delay_us=delay, max_concurrent_runs=1),
        offload=_daemon_offload,
    )
    huge = {"x": np.array([[1 << 40]], np.int64)}

    async def scenario():
        waiting = [asyncio.ensure_future(queue.predict(huge, caller=None)) for _ in range(together)]
        done, _ = await asyncio.wait(waiting, timeout=0.5)  # the run is going: nobody is done
        assert not done
        for task in waiting:  # what asyncio.wait_for does at the run timeout
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        small = {"x": np.array([[3]], np.int64)}
        return await asyncio.wait_for(queue.predict(small, caller=None), 30)

    got = asyncio.run(scenario())
    assert got[0][1].tolist() == [[3]]


def test_batching_turned_off_at_run_time_logs_no_name_from_the_model(pool, caplog):
    """A model whose declared batch axis is not one (its output keeps the first row only):
    the warning names the output by position, never by its name (the model's bytes)."""
    from onnx import helper

    from tests.models import _model

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("SECRET-7f3a-OUT", TensorProto.FLOAT, ["N", 3])
    nodes = [
        helper.make_node("Constant", [], ["zero"], value_ints=[0]),
        helper.make_node("Constant", [], ["one"], value_ints=[1]),
        helper.make_node("Slice", ["x", "zero", "one", "zero"], ["SECRET-7f3a-OUT"]),
    ]
    model = OnnxModel(_model(helper.make_graph(nodes, "first-row", [x], [y])))
    queue = queue_for(model, pool, max_batch_size=8)
    assert queue.batching
    with caplog.at_level("WARNING", logger="blindai.server"):
        results = run_together(queue, [{"x": np.full((1, 3), i, np.float32)} for i in range(2)])
    assert not queue.batching
    assert [float(r[0][1][0, 0]) for r in results] == [0.0, 1.0]  # each ran alone
    assert "output 0 has no batch axis" in caplog.text
    assert "SECRET-7f3a" not in caplog.text
