"""A text pipeline's tokenizer in a process of its own (``blindai.server.tokenizer_host``):
the same tokens as in the server's process, refusals naming their setting, a stopped
tokenization that kills the child, and no child left behind."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterator

import pytest
from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers

from blindai.errors import InferenceFailed, ModelNotReady, PipelineError
from blindai.pipeline._text import TextStep, compile_text
from blindai.pipeline.limits import PipelineLimits
from blindai.pipeline.spec import TextInput
from blindai.server.tokenizer_host import TokenizerHosts, TokenizerLimits
from tests.unit.pipeline._factory import wordpiece_json
from tests.unit.pipeline.test_text import BERT
from tests.unit.pipeline.test_tokenizer_memory import costly_unigram

FILES = {"tokenizer.json": wordpiece_json()}


def _spec(**kw: object) -> TextInput:
    return TextInput(kind="text", tokenizer="tokenizer.json", max_length=8, **kw)  # type: ignore[arg-type]


@pytest.fixture
def hosts() -> Iterator[TokenizerHosts]:
    made = TokenizerHosts(limits=TokenizerLimits(timeout_s=30.0, memory_bytes=1 << 30))
    yield made
    made.close()


def _hosted(hosts: TokenizerHosts, files: dict[str, bytes] = FILES, **kw: object) -> TextStep:
    return compile_text(_spec(**kw), files, BERT, PipelineLimits(), loader=hosts.load)


def _pid(step: TextStep) -> int:
    return step.tokenizer._child[0][0].pid  # type: ignore[attr-defined]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize(
    "kw", [{}, {"padding": "none"}, {"add_special_tokens": False, "padding": "none"}]
)
def test_the_child_makes_the_tokens_the_server_made(hosts: TokenizerHosts, kw: dict[str, object]):
    hosted = _hosted(hosts, **kw)
    local = compile_text(_spec(**kw), FILES, BERT, PipelineLimits())
    assert hosted.facts == local.facts
    for text in ("a man eats food", "the cat sat on the mat with a dog", "??", "\u00e9t\u00e9"):
        one, two = hosted(text), local(text)
        assert one.feeds.keys() == two.feeds.keys()
        for name in one.feeds:
            assert one.feeds[name].dtype == two.feeds[name].dtype
            assert (one.feeds[name] == two.feeds[name]).all()
    every = list(range(hosted.facts.vocab_size))
    assert hosted.tokenizer.decode(every) == local.tokenizer.decode(every)  # one round trip


def test_a_refused_tokenizer_json_is_refused_by_the_child_with_the_same_message(
    hosts: TokenizerHosts,
):
    tok = Tokenizer.from_str(wordpiece_json().decode())
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("(a+)+$"), "isolated")
    files = {"tokenizer.json": tok.to_str().encode()}
    with pytest.raises(PipelineError, match=r"its pre_tokenizer \(Split\) has a regular"):
        _hosted(hosts, files)
    with pytest.raises(PipelineError, match=r"is not a valid tokenizer\.json"):
        _hosted(hosts, {"tokenizer.json": b'{"model": 3}'})


def test_a_compile_past_the_compile_timeout_is_refused_naming_it():
    hosts = TokenizerHosts(limits=TokenizerLimits(timeout_s=0.2, memory_bytes=1 << 30))
    try:
        with pytest.raises(PipelineError, match=r"took longer than .*0\.2 s, --compile-timeout"):
            _hosted(hosts, {"tokenizer.json": costly_unigram(4 << 20)})
    finally:
        hosts.close()


def test_a_compile_past_the_compile_memory_is_refused_naming_it():
    """A 4 MB costly vocabulary takes some 250 MB to compile: refused within 64 MiB."""
    hosts = TokenizerHosts(limits=TokenizerLimits(timeout_s=60.0, memory_bytes=64 << 20))
    try:
        with pytest.raises(PipelineError, match=r"more memory .*67108864 bytes, --compile-memory"):
            _hosted(hosts, {"tokenizer.json": costly_unigram(4 << 20)})
    finally:
        hosts.close()


def _expanding() -> dict[str, bytes]:
    tok = Tokenizer.from_str(wordpiece_json().decode())
    tok.normalizer = normalizers.Replace("a", " a" * 8)
    return {"tokenizer.json": tok.to_str().encode()}


def test_a_stopped_tokenization_kills_the_child_at_once_and_the_next_starts_it_again(
    hosts: TokenizerHosts,
):
    """Before, a tokenization could not be stopped (this text took 11 s in the server's
    process); the run's stop kills the child now, and the next text starts it again."""
    step = _hosted(hosts, _expanding())
    first = _pid(step)
    start = time.perf_counter()
    with pytest.raises(InferenceFailed) as info:
        step("a" * step.largest_text, stop=lambda: time.perf_counter() - start > 0.2)
    took = time.perf_counter() - start
    assert isinstance(info.value.__cause__, RuntimeError)  # the server answers 504 at its timeout
    assert took < 1.0, took
    assert not _alive(first)
    deadline = time.monotonic() + 10
    while not step.tokenizer._child and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.01)  # started again in the background, ahead of the next request
    assert _pid(step) != first
    assert step("a cat").mask.any()


def test_a_tokenizer_stopped_too_often_is_not_started_until_the_window_passes():
    """Before, every stopped tokenization started the child again (compiling the file anew),
    without limit; at ``restart_limit`` ends within the window none is started (503) until the
    oldest leaves the window."""
    limits = TokenizerLimits(
        timeout_s=30.0, memory_bytes=1 << 30, restart_limit=2, restart_window_s=3.0
    )
    hosts = TokenizerHosts(limits=limits, spare=False)
    try:
        step = _hosted(hosts, _expanding())
        for _ in range(2):
            deadline = time.monotonic() + 10
            while not step.tokenizer._child and time.monotonic() < deadline:  # type: ignore[attr-defined]
                time.sleep(0.01)  # the background start after the first stop
            until = time.perf_counter() + 0.2
            with pytest.raises(InferenceFailed):
                step("a" * step.largest_text, stop=lambda u=until: time.perf_counter() > u)
        time.sleep(0.3)
        assert not step.tokenizer._child  # type: ignore[attr-defined]  # not started again
        with pytest.raises(ModelNotReady, match=r"not started again for [0-3] s"):
            step("a cat")
        time.sleep(3.0)  # the window passes: the next request starts it
        assert step("a cat").mask.any()
    finally:
        hosts.close()


def test_no_child_outlives_its_step_or_the_server(hosts: TokenizerHosts):
    kept = _hosted(hosts)
    dropped = _hosted(hosts)
    pids = _pid(kept), _pid(dropped)
    del dropped
    gc.collect()
    assert not _alive(pids[1])  # the model deleted: its step collected, its child ended
    assert _alive(pids[0])
    hosts.close()
    assert not _alive(pids[0])
    with pytest.raises(InferenceFailed, match="shutting down"):
        kept("a cat")
    assert os.getpid() not in pids


def test_the_servers_end_stops_a_tokenization_in_flight():
    """The server's end kills a child while it tokenizes (it waited for the text's end)."""
    from concurrent.futures import ThreadPoolExecutor

    hosts = TokenizerHosts(limits=TokenizerLimits(timeout_s=30.0, memory_bytes=1 << 30))
    step = compile_text(_spec(), _expanding(), BERT, PipelineLimits(), loader=hosts.load)
    pid = _pid(step)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(step, "a" * step.largest_text)
        time.sleep(0.3)  # it tokenizes (11 s in the server's process)
        start = time.perf_counter()
        hosts.close()
        with pytest.raises(InferenceFailed, match="ended"):
            running.result(timeout=5)
        took = time.perf_counter() - start
    assert took < 1.5, took
    assert not _alive(pid)


def test_a_run_waiting_for_its_turn_is_stopped_too(hosts: TokenizerHosts):
    """A text waits while another is tokenized (they take turns in the child): its stop ends
    its wait, and leaves the other's tokenization alone."""
    from concurrent.futures import ThreadPoolExecutor

    step = compile_text(_spec(), _expanding(), BERT, PipelineLimits(), loader=hosts.load)
    pid = _pid(step)
    with ThreadPoolExecutor(1) as pool:
        long = time.perf_counter()
        running = pool.submit(step, "a" * (step.largest_text // 8))
        time.sleep(0.2)
        start = time.perf_counter()
        with pytest.raises(InferenceFailed) as info:
            step("a cat", stop=lambda: time.perf_counter() - start > 0.1)
        assert time.perf_counter() - start < 0.5
        assert isinstance(info.value.__cause__, RuntimeError)
        assert not running.done(), time.perf_counter() - long  # the first one goes on
        assert running.result(timeout=30).mask.any()
    assert _pid(step) == pid


def test_a_start_takes_the_spare_and_starts_the_next(hosts: TokenizerHosts):
    """One child started ahead (its interpreter and the library imported) is handed to the
    next start, which then starts the next spare; none before the first text pipeline."""
    assert hosts.spare_pid is None
    first = _hosted(hosts)
    spare = hosts.spare_pid
    assert spare is not None and spare != _pid(first)
    second = _hosted(hosts)
    assert _pid(second) == spare
    assert hosts.spare_pid not in (None, spare)
    last = hosts.spare_pid
    assert last is not None
    hosts.close()
    assert not _alive(last)


def test_a_spare_that_ended_is_replaced_and_the_file_is_not_blamed(hosts: TokenizerHosts):
    _hosted(hosts)
    spare = hosts.spare_pid
    assert spare is not None
    os.kill(spare, 9)
    time.sleep(0.1)
    step = _hosted(hosts)  # handed a dead spare: another child is started
    assert _pid(step) != spare
    assert step("a cat").mask.any()


def test_without_spares_none_is_started():
    hosts = TokenizerHosts(
        limits=TokenizerLimits(timeout_s=30.0, memory_bytes=1 << 30), spare=False
    )
    try:
        _hosted(hosts)
        assert hosts.spare_pid is None
    finally:
        hosts.close()


def test_an_upload_whose_client_went_away_stops_its_tokenizers_compile(hosts: TokenizerHosts):
    """The upload's abandon (its client gone) kills the child compiling its file, within
    POLL_S, instead of letting it compile for up to --compile-timeout."""
    data = costly_unigram(4 << 20)  # a few seconds to compile here
    start = time.perf_counter()
    with pytest.raises(InferenceFailed, match="stopped"):
        hosts.load(
            data,
            "tokenizer.json",
            _spec(),
            PipelineLimits(),
            False,
            stop=lambda: time.perf_counter() - start > 0.3,
        )
    assert time.perf_counter() - start < 1.0
