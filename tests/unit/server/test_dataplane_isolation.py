"""The data plane with ``run_isolation = "process"``: what a client is answered when a model's
host crashes, runs past its timeout, or crashed too often; and how its model comes back."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from onnx import TensorProto, helper

from blindai.errors import InferenceFailed, InferenceTimeout, ModelNotReady
from blindai.server.abandon import ClientGone
from blindai.server.access import ANONYMOUS
from blindai.server.dataplane import DataPlane
from blindai.server.model_host import CRASH_LIMIT, HostedModel
from blindai.server.registry import ModelRef, ModelRegistry
from blindai.server.settings import ServerSettings
from tests import attacks
from tests.models import identity

HOSTILE = list(attacks.empty_unsafe_feeds("LSTM", made="slice", empty=True).items())
FINE = list(attacks.empty_unsafe_feeds("LSTM", made="slice").items())


def _plane(**settings: object) -> DataPlane:
    given = {
        "tee": "simulation",
        "run_isolation": "process",
        "empty_kernel_proofs": False,
        "intra_op_threads": 1,
        "run_timeout": 1.0,
        # the guard's check of wide_ifs(8000) below took more than the default 30 s beside four
        # busy loops on two cores (a 400 then, not what these tests look at)
        "compile_timeout": 600.0,
        **settings,
    }
    return DataPlane(ServerSettings(**given), ModelRegistry(max_models=16))  # type: ignore[arg-type]


@pytest.fixture
def plane() -> Iterator[DataPlane]:
    data = _plane()
    yield data
    data.close()


def _upload(plane: DataPlane, model: bytes) -> ModelRef:
    entry = asyncio.run(plane.upload(model, name=None, optimize=True, caller=ANONYMOUS))
    assert isinstance(entry.model, HostedModel)
    assert entry.model.inline is None  # never on the event loop
    return ModelRef(entry.model_id)


def _ends(plane: DataPlane, why: str) -> float | None:
    """``blindai_model_host_ends_total{why=...}`` (None: never counted)."""
    return plane.metrics.registry.get_sample_value("blindai_model_host_ends_total", {"why": why})


def _restarted(plane: DataPlane, ref: ModelRef, within: float = 30.0) -> None:
    """Wait until the model's host runs (started again in the background after a crash or a
    kill). A request sent meanwhile waits for that start within its run timeout (1 s here),
    which a start can exceed on a busy machine: it is then a 504, not what a test looks at."""
    (entry,) = plane.managed_versions(ref.key, caller=ANONYMOUS)
    assert isinstance(entry.model, HostedModel)
    deadline = time.monotonic() + within
    while entry.model.pid is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert entry.model.pid is not None, "the model's host was not started again"


def _infer(plane: DataPlane, ref: ModelRef, inputs: list[tuple[str, np.ndarray]]) -> list:
    return asyncio.run(plane.infer(ref, inputs, caller=ANONYMOUS)).outputs


def test_a_model_that_keeps_crashing_answers_503_until_loaded_again(plane: DataPlane) -> None:
    """Each crash is 422 and the model answers a valid request after it; after CRASH_LIMIT
    crashes within the window it answers 503 without starting a process, until it is unloaded
    and loaded again. The other model is served throughout."""
    crasher = _upload(plane, attacks.empty_unsafe("LSTM", made="slice"))
    other = _upload(plane, identity(TensorProto.FLOAT))
    x = np.ones((1, 3), np.float32)
    for _ in range(CRASH_LIMIT):
        _restarted(plane, crasher)
        with pytest.raises(InferenceFailed, match=r"ended the model's process .*\(SIG") as crashed:
            _infer(plane, crasher, HOSTILE)
        assert crashed.value.status_code == 422
        assert np.array_equal(_infer(plane, other, [("x", x)])[0][1], x)
    with pytest.raises(ModelNotReady, match="unloaded and loaded again") as stopped:
        _infer(plane, crasher, FINE)
    assert stopped.value.status_code == 503
    assert _ends(plane, "crash") == CRASH_LIMIT
    entries = plane.managed_versions(crasher.key, caller=ANONYMOUS)
    plane.unload(entries)
    asyncio.run(plane.load(entries, caller=ANONYMOUS))
    ((_, y),) = _infer(plane, crasher, FINE)
    assert y.shape == (3, 1, 1, 2)


def test_a_long_kernel_is_a_504_in_time(plane: DataPlane) -> None:
    ref = _upload(plane, attacks.long_kernel())
    started = time.monotonic()
    with pytest.raises(InferenceTimeout) as stopped:
        _infer(plane, ref, [("n", np.array([6000], np.int64))])
    assert stopped.value.status_code == 504
    assert time.monotonic() - started < 2.5
    assert _ends(plane, "stopped") == 1 and _ends(plane, "crash") is None
    _restarted(plane, ref)
    ((_, y),) = _infer(plane, ref, [("n", np.array([2], np.int64))])
    assert y == 8.0


def test_closing_the_data_plane_stops_its_hosts(plane: DataPlane) -> None:
    ref = _upload(plane, identity(TensorProto.FLOAT, [2, 3]))
    (entry,) = plane.managed_versions(ref.key, caller=ANONYMOUS)
    assert isinstance(entry.model, HostedModel)
    process = entry.model.pid
    assert process is not None
    plane.close()
    assert entry.model.released and entry.model.pid is None


def _two_tensors_of(n: int) -> bytes:
    """y = ReduceSum(a * -a), a = n ones (``s = [n]``): a and -a are alive at once, each
    4n bytes; 8n in all."""
    s = helper.make_tensor_value_info("s", TensorProto.INT64, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [])
    fill = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    nodes = [
        helper.make_node("ConstantOfShape", ["s"], ["a"], value=fill),
        helper.make_node("Neg", ["a"], ["b"]),
        helper.make_node("Mul", ["a", "b"], ["c"]),
        helper.make_node("ReduceSum", ["c"], ["y"], keepdims=0),
    ]
    graph = helper.make_graph(nodes, "two", [s], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _long_loop() -> bytes:
    """y = ReduceSum(v), v = Tanh(v @ W) k times from ones [64, 64], ``k`` an int64 request
    input: runs as long as asked (k = 200 000: seconds) in a few KiB of tensors."""
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["v", "W"], ["vw"]),
            helper.make_node("Tanh", ["vw"], ["v_out"]),
            helper.make_node("Identity", ["cond"], ["cond_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v", TensorProto.FLOAT, [64, 64]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [64, 64]),
        ],
    )
    k = helper.make_tensor_value_info("k", TensorProto.INT64, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [])
    weights = [
        helper.make_tensor("W", TensorProto.FLOAT, [64, 64], [0.01] * 4096),
        helper.make_tensor("v0", TensorProto.FLOAT, [64, 64], [1.0] * 4096),
        helper.make_tensor("yes", TensorProto.BOOL, [], [True]),
    ]
    nodes = [
        helper.make_node("Loop", ["k", "yes", "v0"], ["v"], body=body),
        helper.make_node("ReduceSum", ["v"], ["y"], keepdims=0),
    ]
    graph = helper.make_graph(nodes, "loop", [k], [y], initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_a_run_past_its_hosts_arena_is_a_422_while_other_models_run() -> None:
    """Each host has its own arena: a run that does not fit its model's (two tensors of 40 MB
    alive at once, under a 64 MiB cap) failed alone there, so it is 422 even while another
    model runs; counted with the whole server's runs it was 503 (try again), which no retry
    would ever get past."""
    plane = _plane(max_run_memory=64 << 20)
    try:
        big = _upload(plane, _two_tensors_of(1))
        slow = _upload(plane, _long_loop())
        n = 10_000_000  # 40 MB each

        async def scenario(during: Callable[[], object]) -> None:
            running = asyncio.ensure_future(
                plane.infer(slow, [("k", np.array(200_000, np.int64))], caller=ANONYMOUS)
            )
            await asyncio.sleep(0.3)
            try:
                await plane.infer(big, [("s", np.array([n], np.int64))], caller=ANONYMOUS)
            finally:
                during()
                with pytest.raises(InferenceTimeout):
                    await running

        with pytest.raises(InferenceFailed, match="--max-run-memory") as alone:
            asyncio.run(scenario(lambda: None))
        assert alone.value.status_code == 422
        ((_, y),) = _infer(plane, big, [("s", np.array([1000], np.int64))])
        assert y == -1000.0
    finally:
        plane.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_an_upload_abandoned_while_its_host_starts_stops_that_start(plane: DataPlane) -> None:
    """The client of an upload leaves once its model passed the compile guard, while the
    model's host builds its session (seconds for a big model, up to the guard's time): the
    build went on for nobody, then the host was stopped. Now the start is given up at once
    (its child killed within ``POLL_S``): ClientGone, no process but the spare left, nothing
    registered, and the next upload is served."""
    hosts = plane.hosts
    assert hosts is not None
    hosts.warm()
    handed = hosts.spare_pid
    assert handed is not None
    slow = attacks.wide_ifs(8000)  # its session takes about 2 s to build on the test machine
    left = asyncio.Event()

    async def disconnected() -> None:
        await left.wait()

    async def scenario() -> float:
        upload = asyncio.ensure_future(
            plane.upload(
                slow, name=None, optimize=True, caller=ANONYMOUS, disconnected=disconnected
            )
        )
        deadline = time.monotonic() + 120  # the guard's check first
        while hosts.spare_pid in (None, handed) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)  # the next spare: the model was handed to ``handed``
        assert not upload.done()
        await asyncio.sleep(0.3)  # well inside the session's build
        left.set()
        stopped = time.monotonic()
        with pytest.raises(ClientGone):
            await upload
        return time.monotonic() - stopped

    took = asyncio.run(scenario())
    assert took < 1.0, took  # not the rest of the build
    assert not _alive(handed)
    assert plane.registry.ready_count() == 0 and hosts.count == 0  # nothing kept
    ref = _upload(plane, identity(TensorProto.FLOAT))
    x = np.ones((1, 3), np.float32)
    assert np.array_equal(_infer(plane, ref, [("x", x)])[0][1], x)


def test_a_load_cancelled_while_its_host_starts_leaves_no_process(plane: DataPlane) -> None:
    """A gRPC client that cancels its RepositoryModelLoad cancels the task waiting for the
    compile worker: the host that worker then started was kept by nobody, its process left
    running (with the model's session) until the server's end, one more for each load
    cancelled. Now the start is given up (its child, the spare it was handed, killed), and a
    session made all the same is released once the worker is done."""
    hosts = plane.hosts
    assert hosts is not None
    ref = _upload(plane, attacks.wide_ifs(8000))  # its session takes about 2 s to build
    entries = plane.managed_versions(ref.key, caller=ANONYMOUS)
    plane.unload(entries)
    assert hosts.count == 0
    handed = hosts.spare_pid
    assert handed is not None

    async def scenario() -> None:
        load = asyncio.ensure_future(plane.load(entries, caller=ANONYMOUS))
        deadline = time.monotonic() + 60
        while hosts.spare_pid in (None, handed) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)  # the next spare: the model was handed to ``handed``
        assert not load.done()
        await asyncio.sleep(0.3)  # inside the session's build
        load.cancel()
        with pytest.raises(asyncio.CancelledError):
            await load
        deadline = time.monotonic() + 30  # the loop runs on: a worker's result settles on it
        while _alive(handed) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    asyncio.run(scenario())
    assert not _alive(handed), "the cancelled load's host was left running"
    assert hosts.count == 0
