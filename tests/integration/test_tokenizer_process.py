"""A text pipeline's tokenizer runs in a process of its own: against a real server, a costly
tokenizer.json stalls no other client while it compiles, and a tokenization past --run-timeout
answers 504 and frees its worker.

The server runs with one inference worker (a held worker is seen by the next request),
--run-timeout 1, the default --compile-memory (2 GiB: tokenizer.json files of up to 26.8 MB),
and --compile-timeout 120 (a busy test machine compiled the costly file in more than 30 s).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tokenizers import Tokenizer, normalizers

import blindai
from blindai.errors import InferenceTimeout, ModelNotReady
from blindai.pipeline import Embedding, Pipeline
from blindai.server.model_host import CRASH_LIMIT
from tests import models
from tests._server import ServerProcess, connect, start_server
from tests.unit.pipeline._factory import VOCAB, wordpiece_json
from tests.unit.pipeline.test_tokenizer_memory import costly_unigram

MiB = 1 << 20
COMPILE_MEMORY = 2 << 30  # the default: tokenizer.json files of up to 26.8 MB (80 times)
RUN_TIMEOUT = 1.0
TEXT = {"kind": "text", "tokenizer": "tokenizer.json", "max_length": 8}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(
        tmp_path_factory.mktemp("tokenizer-process"),
        "--compile-memory",
        str(COMPILE_MEMORY),
        "--run-timeout",
        str(RUN_TIMEOUT),
        "--inference-threads",
        "1",
        "--compile-timeout",
        "120",  # the costly file takes some 14 s of CPU, and the probe's client and server share
    )
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def conn(server: ServerProcess) -> Iterator[blindai.Connection]:
    with connect(server) as c:
        yield c


def _upload(conn: blindai.Connection, tokenizer: bytes) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    table = np.random.default_rng(0).standard_normal((len(VOCAB), 3)).astype(np.float32)
    pipe = Pipeline({"input": TEXT, "output": {"kind": "embedding"}}, {"tokenizer.json": tokenizer})
    conn.upload_model(models.token_table_embedding(table), model_name=name, pipeline=pipe)
    return name


@pytest.fixture(scope="module")
def plain(conn: blindai.Connection) -> str:
    return _upload(conn, wordpiece_json())


def _probing(server: ServerProcess, run: str, **inputs: object) -> Any:
    """Run ``run`` in a loop in another client until the block ends; its latencies."""
    stalls: list[float] = []
    done = threading.Event()

    def probe() -> None:
        with connect(server) as other:
            while not done.is_set():
                start = time.perf_counter()
                other.predict(run, **inputs)
                stalls.append(time.perf_counter() - start)

    class _Probe:
        def __enter__(self) -> list[float]:
            self.pool = ThreadPoolExecutor(1)
            self.running = self.pool.submit(probe)
            while not stalls:  # served once before the block starts
                if self.running.done():
                    self.running.result()
                time.sleep(0.01)
            return stalls

        def __exit__(self, *exc: object) -> None:
            done.set()
            self.running.result()
            self.pool.shutdown()

    return _Probe()


def test_compiling_a_costly_tokenizer_json_stalls_no_other_client(
    conn: blindai.Connection, server: ServerProcess
):
    """Before, the tokenizers library parsed the file in the server's process holding the GIL
    (22.5 MB, the most the generator makes, near the largest taken: 5.8 s in the library alone,
    and some 8 s more in the server's own reading of it), and another client's run of a tiny
    model waited that long. The file is compiled in the tokenizer's own process now."""
    tiny = f"tiny-{uuid.uuid4().hex[:8]}"
    conn.upload_model(models.matmul(2, 2), model_name=tiny)
    data = costly_unigram(COMPILE_MEMORY // 80 - 4096)  # 22.5 MB: it runs out of pieces
    x = np.ones((1, 2), np.float32)
    with _probing(server, tiny, inputs=x) as stalls:
        start = time.perf_counter()
        table = np.zeros((8, 3), np.float32)
        pipe = Pipeline({"input": TEXT, "output": {"kind": "embedding"}}, {"tokenizer.json": data})
        conn.upload_model(models.token_table_embedding(table), model_name="costly", pipeline=pipe)
        took = time.perf_counter() - start
        served = len(stalls)
    assert took > 2.0, took  # it did take a while to compile
    assert served > 5, (served, took)  # the other client was served meanwhile
    assert max(stalls) < 2.0, (max(stalls), took)


def _expanding() -> bytes:
    """A tokenizer whose normalizer makes 8 tokens of each "a": the longest text taken, all
    "a", took 11 s to tokenize here in the server's process."""
    tok = Tokenizer.from_str(wordpiece_json().decode())
    tok.normalizer = normalizers.Replace("a", " a" * 8)
    return tok.to_str().encode()


def test_a_tokenization_past_the_run_timeout_answers_504_and_frees_its_worker(
    conn: blindai.Connection, server: ServerProcess, plain: str
):
    """Before, the tokenization could not be stopped, and held the GIL throughout: another
    client's listing waited for seconds, the 504 came only once the text was tokenized (10 s
    here), and the worker (the only one here) was held as long. The tokenizer's process is
    killed at the timeout now (the worker free at once), and started again for the next
    request."""
    hostile = _upload(conn, _expanding())
    text = "a" * 416_179  # the longest this tokenizer takes at the default budgets
    with connect(server) as other, ThreadPoolExecutor(1) as pool:
        assert isinstance(other.predict(plain, text="the cat sat"), Embedding)
        start = time.perf_counter()
        running = pool.submit(conn.predict, hostile, text=text)
        listed: list[float] = []  # another client served meanwhile (on the event loop)
        while not running.done():
            asked = time.perf_counter()
            other.list_models()
            listed.append(time.perf_counter() - asked)
        with pytest.raises(InferenceTimeout) as info:
            running.result()
        took = time.perf_counter() - start
        assert info.value.status_code == 504
        assert "--run-timeout" in info.value.message
        start = time.perf_counter()
        assert isinstance(other.predict(plain, text="the cat sat"), Embedding)
        waited = time.perf_counter() - start
    assert max(listed) < 0.5, (max(listed), len(listed))
    assert took < RUN_TIMEOUT + 1.0, took
    assert waited < RUN_TIMEOUT / 2, waited
    # started again in the background (compiling the file anew: its process's start may take
    # longer than this server's 1 s run timeout on a busy machine, so a request may time out
    # waiting for it)
    deadline = time.monotonic() + 20
    while True:
        try:
            assert isinstance(conn.predict(hostile, text="a cat"), Embedding)
            break
        except InferenceTimeout:
            assert time.monotonic() < deadline


def test_a_tokenizer_killed_too_often_answers_503_and_others_are_served(
    conn: blindai.Connection, server: ServerProcess, plain: str
):
    """Before, each text past the run timeout killed the tokenizer's process and started it
    again, compiling the file anew (up to some 14 s of CPU for the largest file taken), without
    limit: a tenant sending such texts kept the server compiling. After CRASH_LIMIT ends within
    CRASH_WINDOW_S it is not started again while they lie within the window (503), as a model
    host that crashed that often; other pipelines are served meanwhile."""
    hostile = _upload(conn, _expanding())
    text = "a" * 416_179
    timeouts = 0
    with connect(server) as other:
        for _ in range(4 * CRASH_LIMIT):
            try:
                conn.predict(hostile, text=text)
            except InferenceTimeout:
                timeouts += 1
                continue
            except ModelNotReady as exc:
                refused = exc
                break
        else:
            pytest.fail(f"never refused after {timeouts} timeouts")
        assert timeouts >= CRASH_LIMIT
        assert refused.status_code == 503
        assert "not started again" in refused.message and len(refused.message) < 300
        with pytest.raises(ModelNotReady):  # even a short text: nothing is compiled now
            conn.predict(hostile, text="a cat")
        assert isinstance(other.predict(plain, text="the cat sat"), Embedding)


def test_without_compile_isolation_the_tokenizer_runs_in_the_server(tmp_path: Path):
    """--no-compile-isolation (Gramine, where a process is a new enclave): the tokenizer is
    compiled and run in the server's process, and the pipeline works as before."""
    proc = start_server(tmp_path, "--no-compile-isolation")
    try:
        with connect(proc) as c:
            name = _upload(c, wordpiece_json())
            assert isinstance(c.predict(name, text="the cat sat"), Embedding)
            tasks = Path(f"/proc/{proc.process.pid}/task")
            children = [c for t in tasks.iterdir() for c in (t / "children").read_text().split()]
            assert children == []  # no tokenizer's process (nor the compile guard's)
    finally:
        proc.stop()
