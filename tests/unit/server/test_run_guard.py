"""Run-time limits: the capped arena, termination, reply sizes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest

from blindai.errors import InferenceFailed, InferenceTimeout, ServerBusy
from blindai.server.run_guard import (
    RunControl,
    RunCounter,
    check_reply_size,
    failure_for,
    json_bytes_bound,
    may_fit_again,
    run_guarded,
)
from blindai.server.runtime import session_options
from tests import attacks
from tests._server import REPO

HANG = 120.0
"""Only a guard against hanging forever when the feature under test is broken."""

ARENA_SCRIPT = """
import numpy as np, onnxruntime as ort
from blindai.server.run_guard import RunControl, cap_arena, failure_for
from blindai.server.runtime import session_options
from tests import attacks

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) // 1024 for l in f if l.startswith("VmRSS"))

cap_arena(1 << 30)
cap_arena(64 << 20)  # the last one counts
options = session_options(optimize=True, intra_op_threads=1, shared_arena=True)
model = attacks.constant_of_shape()
session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
start = rss_mb()
control = RunControl()
out = session.run(None, {"s": np.array([4 << 20], np.int64)}, control.options)  # 16 MiB: fits
assert float(out[0]) == 4 << 20
control = RunControl()
try:
    session.run(None, {"s": np.array([64 << 20], np.int64)}, control.options)  # 256 MiB
except Exception as exc:
    err = failure_for(exc, control, timeout_s=1, memory_bytes=64 << 20, shared=False)
    print(type(err).__name__, err.status_code, err.message)
print("grew", rss_mb() - start)
"""


def test_the_capped_arena_fails_a_run_alone_and_gives_memory_back():
    # the arena is per process: this runs in its own interpreter
    done = subprocess.run(
        [sys.executable, "-c", ARENA_SCRIPT],
        cwd=REPO,
        env={"PYTHONPATH": f"{REPO / 'src'}:{REPO}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("InferenceFailed 422 this run needs more memory"), lines
    assert "--max-run-memory" in lines[0]
    assert int(lines[1].split()[1]) < 32  # MB kept after a 16 MiB run and a refused one


def _loop_session() -> ort.InferenceSession:
    options = session_options(optimize=True, intra_op_threads=1)
    return ort.InferenceSession(attacks.slow_loop(), options, providers=["CPUExecutionProvider"])


def test_a_run_past_its_timeout_is_terminated_and_frees_its_worker():
    session = _loop_session()
    pool = ThreadPoolExecutor(1)
    forever = {"M": np.array(1 << 40, np.int64)}
    short = {"M": np.array(10, np.int64)}

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        control = RunControl()
        with pytest.raises(Exception) as info:
            work = loop.run_in_executor(pool, session.run, None, forever, control.options)
            await run_guarded(work, control, timeout_s=0.3, grace_s=HANG)
        err = failure_for(info.value, control, timeout_s=0.3, memory_bytes=1, shared=False)
        assert isinstance(err, InferenceTimeout) and err.http_status == 504
        assert "--run-timeout" in err.message
        # onnxruntime stopped, so the single worker is free again
        again = RunControl()
        work = loop.run_in_executor(pool, session.run, None, short, again.options)
        out = await run_guarded(work, again, timeout_s=HANG)
        assert out[0].tolist() == [10.0]

    try:
        asyncio.run(scenario())
    finally:
        pool.shutdown()


def test_a_run_whose_client_went_away_is_terminated():
    session = _loop_session()
    pool = ThreadPoolExecutor(1)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        gone = asyncio.Event()
        control = RunControl()
        feeds = {"M": np.array(1 << 40, np.int64)}
        work = loop.run_in_executor(pool, session.run, None, feeds, control.options)
        task = asyncio.ensure_future(
            run_guarded(work, control, timeout_s=HANG, disconnected=gone.wait, grace_s=HANG)
        )
        gone.set()
        with pytest.raises(Exception, match="terminate"):
            await task
        assert control.reason == "the client went away"

    try:
        asyncio.run(scenario())
    finally:
        pool.shutdown()


def test_a_run_whose_caller_was_cancelled_is_terminated_and_frees_its_worker():
    """A gRPC call that its client cancelled (or whose deadline passed) cancels the task
    awaiting its run: the run went on, past the run timeout, holding its worker (and its
    model's slot) for as long as the model liked. It is stopped as for a client gone."""
    session = _loop_session()
    pool = ThreadPoolExecutor(1)
    control = RunControl()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        started = threading.Event()

        def run() -> object:
            started.set()
            return session.run(None, {"M": np.array(1 << 40, np.int64)}, control.options)

        work = loop.run_in_executor(pool, run)
        task = asyncio.ensure_future(run_guarded(work, control, timeout_s=HANG, grace_s=HANG))
        await loop.run_in_executor(None, started.wait)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert control.reason == "the client went away" and control.options.terminate
        # onnxruntime stopped, so the single worker is free again
        again = RunControl()
        short = {"M": np.array(10, np.int64)}
        out = await run_guarded(
            loop.run_in_executor(pool, session.run, None, short, again.options),
            again,
            timeout_s=HANG,
        )
        assert out[0].tolist() == [10.0]

    try:
        asyncio.run(scenario())
    finally:
        control.options.terminate = True  # broken: the worker must not outlive the test
        pool.shutdown()


def test_a_kernel_that_does_not_stop_still_gets_its_504():
    pool = ThreadPoolExecutor(1)
    release = threading.Event()

    async def scenario() -> None:
        control = RunControl()
        work = asyncio.get_running_loop().run_in_executor(pool, release.wait)
        with pytest.raises(InferenceTimeout):  # answered while the worker is still stuck
            await run_guarded(work, control, timeout_s=0.2, grace_s=0.2)
        assert not release.is_set()
        assert control.options.terminate

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        pool.shutdown()


def test_reply_size_is_refused_from_shapes_before_encoding():
    big = np.zeros((1024, 1024), np.float32)  # 4 MiB
    assert check_reply_size([("y", big)], limit=4 << 20, as_json=lambda _: False) == 4 << 20
    with pytest.raises(InferenceFailed, match="--max-response-bytes") as info:
        check_reply_size([("y", big), ("z", big[:1])], limit=4 << 20, as_json=lambda _: False)
    assert info.value.status_code == 422
    with pytest.raises(InferenceFailed):  # the same tensor as JSON is larger
        check_reply_size([("y", big)], limit=8 << 20, as_json=lambda _: True)


@pytest.mark.parametrize(
    "array",
    [
        np.array([-3.4028235e38, 1.1754944e-38, np.nan, -np.inf, -0.0], np.float32),
        np.array([np.finfo(np.float64).min, 5e-324, 1 / 3], np.float64),
        np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max], np.int64),
        np.array([np.iinfo(np.uint64).max], np.uint64),
        np.array([True, False]),
        np.array(['"\\\n\x00é', ""], dtype=object),
        np.random.default_rng(0).standard_normal(1000).astype(np.float16),
    ],
)
def test_the_json_bound_is_an_upper_bound(array):
    written = json.dumps(array.tolist(), separators=(",", ":"))
    assert json_bytes_bound(array) >= len(written.encode())


@pytest.mark.parametrize("text", ["\U0001f600" * 1000, "\u00e9\u4e00" * 500, "ascii" * 100])
def test_string_outputs_are_bounded_by_their_bytes_not_their_characters(text):
    """A string of 1000 emoji is 1000 characters: 4000 bytes of UTF-8 in a binary reply, 12 000
    where the standard library writes the JSON (surrogate pairs); both were counted 1000 and
    6000, so a reply of such strings could pass --max-response-bytes 4 and 2 times."""
    array = np.array([text, text], dtype=object)
    utf8 = sum(len(s.encode()) + 4 for s in array.tolist())
    assert check_reply_size([("y", array)], limit=1 << 30, as_json=lambda _: False) >= utf8
    with pytest.raises(InferenceFailed):
        check_reply_size([("y", array)], limit=utf8 - 1, as_json=lambda _: False)
    written = json.dumps(array.tolist(), separators=(",", ":"))  # ensure_ascii: escapes
    assert json_bytes_bound(array) >= len(written.encode())
    assert json_bytes_bound(array) >= len(json.dumps(array.tolist(), ensure_ascii=False).encode())


ORT_OOM = (
    "[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running "
    "ConstantOfShape node. Status Message: bfc_arena.cc:360 AllocateRawInternal Available "
    "memory of {free} is smaller than requested bytes of {asked}"
)


@pytest.mark.parametrize(
    ("asked", "shared", "expected"),
    [
        (1 << 30, True, InferenceFailed),  # more than the whole cap: never fits, busy or not
        (1 << 30, False, InferenceFailed),
        (16 << 20, True, ServerBusy),  # would fit alone: others took the memory
        (16 << 20, False, InferenceFailed),
    ],
)
def test_out_of_memory_is_busy_only_when_the_run_would_fit_alone(asked, shared, expected):
    # onnxruntime's own message format (the capped-arena integration tests raise the real one)
    exc = RuntimeError(ORT_OOM.format(free=1000, asked=asked))
    err = failure_for(exc, RunControl(), timeout_s=1, memory_bytes=64 << 20, shared=shared)
    assert type(err) is expected
    assert "--max-run-memory" in err.message


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (RuntimeError(ORT_OOM.format(free=1000, asked=16 << 20)), True),  # fits the cap alone
        (RuntimeError(ORT_OOM.format(free=1000, asked=1 << 30)), False),  # never fits
        (RuntimeError("std::bad_alloc"), True),
        (RuntimeError("Gather: index 9 is out of bounds"), False),  # not memory at all
        (None, False),
    ],
)
def test_a_failed_allocation_that_fits_the_cap_may_fit_again(exc, expected):
    assert may_fit_again(exc, 64 << 20) is expected


def test_the_data_plane_runs_once_more_when_the_arena_may_have_room_again():
    """A free region held by an earlier run's outputs, split by a concurrent small run, once
    made a run that fitted alone answer 422; tried again at once, it fits."""
    counter = RunCounter(max_run_memory=64 << 20)
    calls: list[int] = []

    def run(message: str) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise InferenceFailed("failed") from RuntimeError(message)
        return "ran"

    assert counter.counted(run, ORT_OOM.format(free=10, asked=16 << 20)) == ("ran", None, False)
    calls.clear()
    value, error, shared = counter.counted(run, ORT_OOM.format(free=10, asked=1 << 30))
    assert (value, type(error), shared, len(calls)) == (None, InferenceFailed, False, 1)
    calls.clear()
    value, error, _ = counter.counted(run, "Gather: index 9 is out of bounds")
    assert (value, type(error), len(calls)) == (None, InferenceFailed, 1)
