"""Output steps: the numeric functions and their checks."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

from blindai.errors import InferenceFailed, PipelineError
from blindai.pipeline._ports import Prepared
from blindai.pipeline._post import (
    MAX_VOCAB,
    CtcStep,
    EmbeddingStep,
    LabelsStep,
    NextTokenStep,
    ctc_greedy,
    l2_normalize,
    mean_pool,
    parse_labels,
    parse_vocab,
    softmax,
    top_k,
)
from blindai.pipeline.spec import CtcOutput, EmbeddingOutput, LabelsOutput, NextTokenOutput


def test_softmax_is_stable_and_sums_to_one():
    p = softmax(np.array([1000.0, 1001.0, 999.0]))
    assert p.sum() == pytest.approx(1.0) and np.argmax(p) == 1
    assert p[1] == pytest.approx(np.exp(1) / (1 + np.exp(1) + np.exp(-1)))


def test_top_k_best_first_with_labels():
    labels = ("cat", "dog", "bird")
    got = top_k(np.array([0.2, 0.7, 0.1]), 2, lambda i: labels[i])
    assert [(x.label, x.index) for x in got] == [("dog", 1), ("cat", 0)]
    assert got[0].score == pytest.approx(0.7)


def test_labels_step_softmax_sigmoid_none():
    logits = {"y": np.array([[2.0, 0.0, -1.0]], np.float32)}
    step = LabelsStep(LabelsOutput(kind="labels", top_k=3), "y", ("a", "b", "c"))
    result = step(logits, Prepared({}))
    assert result.top.label == "a" and sum(x.score for x in result.labels) == pytest.approx(1)
    sig = LabelsStep(LabelsOutput(kind="labels", activation="sigmoid", top_k=1), "y", None)
    assert sig(logits, Prepared({})).top.score == pytest.approx(1 / (1 + np.exp(-2)))
    assert sig(logits, Prepared({})).top.label == "0"
    raw = LabelsStep(LabelsOutput(kind="labels", activation="none", top_k=1), "y", None)
    assert raw(logits, Prepared({})).top.score == 2.0


def test_labels_step_checks_the_output_at_run_time():
    step = LabelsStep(LabelsOutput(kind="labels"), "y", ("a", "b"))
    with pytest.raises(InferenceFailed, match="3 classes; the pipeline has 2 labels"):
        step({"y": np.zeros((1, 3))}, Prepared({}))
    with pytest.raises(InferenceFailed, match="expected one row of scores"):
        step({"y": np.zeros((2, 2))}, Prepared({}))


def test_mean_pool_ignores_padding_and_normalises():
    hidden = np.array([[[1.0, 0.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = np.array([[1, 1, 0]])
    np.testing.assert_allclose(mean_pool(hidden, mask), [2.0, 2.0])
    np.testing.assert_allclose(l2_normalize(np.array([3.0, 4.0])), [0.6, 0.8])
    np.testing.assert_array_equal(l2_normalize(np.zeros(2)), np.zeros(2))
    step = EmbeddingStep(EmbeddingOutput(kind="embedding"), "h")
    vec = step({"h": hidden}, Prepared({}, mask)).vector
    assert vec == pytest.approx((2**-0.5, 2**-0.5))


def test_first_token_and_no_pooling():
    hidden = np.array([[[3.0, 4.0], [1.0, 1.0]]])
    first = EmbeddingStep(EmbeddingOutput(kind="embedding", pooling="first", normalize=False), "h")
    assert first({"h": hidden}, Prepared({})).vector == (3.0, 4.0)
    none = EmbeddingStep(EmbeddingOutput(kind="embedding", pooling="none"), "h")
    assert none({"h": np.array([[3.0, 4.0]])}, Prepared({})).vector == pytest.approx((0.6, 0.8))
    with pytest.raises(InferenceFailed, match="pooling needs"):
        first({"h": np.zeros((1, 2))}, Prepared({}))


TOKENS = ("<pad>", "<s>", "</s>", "|", "H", "E", "L", "O", "W", "R", "D")


def _logits(path: list[int]) -> np.ndarray:
    out = np.full((len(path), len(TOKENS)), -5.0)
    out[np.arange(len(path)), path] = 5.0
    return out


def test_ctc_greedy_merges_repeats_and_drops_blanks():
    t = {tok: i for i, tok in enumerate(TOKENS)}
    path = [t[c] for c in ["<s>", "H", "H", "E", "L", "<pad>", "L", "O", "O", "|", "|",
                           "W", "O", "R", "L", "D", "<pad>", "</s>"]]  # fmt: skip
    text = ctc_greedy(_logits(path), TOKENS, blank=0, delimiter="|", skip={1, 2})
    assert text == "HELLO WORLD"


def test_ctc_step_checks_vocab_size():
    step = CtcStep(CtcOutput(kind="ctc", vocab="v.json"), "logits", TOKENS, 0, frozenset())
    assert step({"logits": _logits([4, 5])[None]}, Prepared({})).text == "HE"
    with pytest.raises(InferenceFailed, match=r"expected \[1, frames, 11\]"):
        step({"logits": np.zeros((1, 4, 5))}, Prepared({}))


def test_parse_vocab():
    assert parse_vocab(json.dumps({"b": 1, "a": 0}).encode(), "v") == ("a", "b")
    for bad in (
        b"[]",
        b"{}",
        b'{"a": 0, "b": 2}',
        b'{"a": true}',
        b'{"a": "0"}',
        b"\xff",
        b"[" * 100_000,
    ):
        with pytest.raises(PipelineError, match="v"):
            parse_vocab(bad, "v")


def test_a_vocab_of_more_tokens_than_the_bound_is_refused_before_it_is_parsed():
    # the bound was checked on the parsed object: 32 MiB (--max-pipeline-bytes) of short
    # entries made 3 million keys, hundreds of MB of Python objects and seconds at upload
    keys = (f"{i:x}" for i in range(3_000_000))
    hostile = ("{" + ",".join(f'"{k}":0' for k in keys) + "}").encode()
    assert len(hostile) < 32 << 20
    tracemalloc.start()
    try:
        with pytest.raises(PipelineError, match=f"v holds more than {MAX_VOCAB} tokens"):
            parse_vocab(hostile, "v")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < len(hostile)
    whole = {f"{i:x}": i for i in range(MAX_VOCAB)}
    assert len(parse_vocab(json.dumps(whole).encode(), "v")) == MAX_VOCAB
    assert parse_vocab(b'{"a:b": 0, ":": 1}', "v") == ("a:b", ":")  # colons in tokens


def test_parse_labels():
    assert parse_labels(b"cat\r\ndog\n", "l") == ("cat", "dog")
    assert parse_labels("caf\u00e9\nna\u00efve".encode(), "l") == ("caf\u00e9", "na\u00efve")
    with pytest.raises(PipelineError, match="not UTF-8"):
        parse_labels(b"\xff", "l")
    with pytest.raises(PipelineError, match="holds no labels"):
        parse_labels(b"", "l")


def test_a_labels_file_of_more_labels_than_a_vocabulary_is_refused_before_it_is_split():
    # 32 MiB of "ab" lines made 11.5 million labels: 924 MiB at upload, 680 MiB kept
    assert len(parse_labels(b"ab\n" * MAX_VOCAB, "l")) == MAX_VOCAB
    for data in (b"ab\n" * (MAX_VOCAB + 1), b"\n" * (MAX_VOCAB + 1)):
        with pytest.raises(PipelineError, match=f"l holds more than {MAX_VOCAB} labels"):
            parse_labels(data, "l")


def test_results_that_would_pass_the_response_limit_are_refused_before_they_are_made():
    # pooling "none" took any row (a run's 1 GiB of float32 became 8 GB of Python floats),
    # and a CTC transcript is its frames times its longest token: both were made whole
    none = EmbeddingOutput(kind="embedding", pooling="none", normalize=False)
    step = EmbeddingStep(none, "h", max_result_bytes=25 * 100)
    assert len(step({"h": np.ones((1, 100))}, Prepared({})).vector) == 100
    with pytest.raises(InferenceFailed, match="101 values; the reply would pass 2500 bytes"):
        step({"h": np.ones((1, 101))}, Prepared({}))
    long = ("<pad>", "x" * 1000)
    ctc = CtcStep(CtcOutput(kind="ctc", vocab="v.json"), "logits", long, 0, frozenset(), 4000)
    path = np.tile([[-5.0, 5.0], [5.0, -5.0]], (4, 1))[None]  # x, pad, x, pad, ...: 4 x
    assert ctc({"logits": path}, Prepared({})).text == "x" * 4000
    with pytest.raises(
        InferenceFailed, match="transcript of 5000 bytes; the reply would pass 4000 bytes"
    ):
        ctc({"logits": np.tile([[-5.0, 5.0], [5.0, -5.0]], (5, 1))[None]}, Prepared({}))


def _wire(result) -> int:
    """The bytes of a result's JSON text, as the server writes it into its reply."""
    return len(json.dumps(result.to_wire(), separators=(",", ":")))


def test_results_are_bounded_by_the_json_the_reply_holds_not_by_their_characters():
    # a transcript was counted in UTF-8 bytes and an embedding at 24 bytes a value, but the
    # reply holds their JSON: a control character is 6 bytes there ("\u0001"), a non-ASCII one
    # 6 or 12, a value 24 and its comma; the server made them whole before the reply's check
    frames = np.tile([[-5.0, 5.0], [5.0, -5.0]], (4, 1))[None]  # token, pad, token, pad, ...
    for token, size in (("\x01" * 1000, 6000), ("é" * 1000, 6000), ('"' * 1000, 2000)):
        vocab = ("<pad>", token)
        limit = 4 * size
        ctc = CtcStep(CtcOutput(kind="ctc", vocab="v.json"), "logits", vocab, 0, frozenset(), limit)
        assert _wire(ctc({"logits": frames}, Prepared({}))) <= limit + 64
        tight = CtcStep(
            CtcOutput(kind="ctc", vocab="v.json"), "logits", vocab, 0, frozenset(), limit - 1
        )
        with pytest.raises(InferenceFailed, match=f"transcript of {limit} bytes"):
            tight({"logits": frames}, Prepared({}))
    none = EmbeddingOutput(kind="embedding", pooling="none", normalize=False)
    tiny = np.full((1, 100), -2.2250738585072014e-308)
    step = EmbeddingStep(none, "h", max_result_bytes=25 * 100)
    assert _wire(step({"h": tiny}, Prepared({}))) <= 25 * 100 + 64
    with pytest.raises(InferenceFailed, match="100 values; the reply would pass 2499 bytes"):
        EmbeddingStep(none, "h", max_result_bytes=25 * 100 - 1)({"h": tiny}, Prepared({}))


@pytest.mark.parametrize(
    ("step", "output", "mask", "fragment"),
    [
        (EmbeddingStep(EmbeddingOutput(kind="embedding"), "h"), (1, 3, 2), (1, 8), "3 tokens"),
        (
            EmbeddingStep(EmbeddingOutput(kind="embedding", pooling="first"), "h"),
            (1, 0, 4),
            None,
            "no token",
        ),
        (NextTokenStep(NextTokenOutput(kind="next_token"), "h", str), (1, 8, 0), (1, 8), "no t"),
        (NextTokenStep(NextTokenOutput(kind="next_token"), "h", str), (1, 0, 5), (1, 8), "no t"),
        (LabelsStep(LabelsOutput(kind="labels"), "h", None), (1, 0), None, "no score"),
    ],
)
def test_outputs_of_shapes_a_step_cannot_use_are_422s(step, output, mask, fragment):
    # numpy raised ValueError or IndexError on them: '500: internal server error'
    prepared = Prepared({}, None if mask is None else np.ones(mask, np.int64))
    with pytest.raises(InferenceFailed, match=fragment) as info:
        step({"h": np.ones(output, np.float32)}, prepared)
    assert info.value.status_code == 422
