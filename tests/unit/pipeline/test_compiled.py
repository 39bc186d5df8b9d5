"""Whole pipelines on real onnxruntime sessions of tiny models built in the test."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from blindai.errors import PipelineError
from blindai.pipeline import Classification, Embedding, Pipeline, PipelineLimits, Transcript
from blindai.pipeline.compiled import compile_pipeline
from blindai.server.runtime import OnnxModel
from tests import models
from tests.unit.pipeline._factory import VOCAB, encode, wav_bytes, wordpiece_json

LIMITS = PipelineLimits()
TEXT = {"kind": "text", "tokenizer": "tokenizer.json", "max_length": 8}


def _run(model_bytes: bytes, pipe: Pipeline, raw: bytes | str):
    model = OnnxModel(model_bytes)
    compiled = compile_pipeline(pipe, inputs=model.inputs, outputs=model.outputs, limits=LIMITS)
    prepared = compiled.preprocess(raw)
    return compiled.postprocess(dict(model.predict(prepared.feeds)), prepared)


def test_text_to_sentence_embedding():
    # "cat" and "dog" get near vectors, "food" a far one: mean pooling over the real tokens
    table = np.zeros((len(VOCAB), 3), np.float32)
    table[VOCAB["cat"]] = [1, 0.1, 0]
    table[VOCAB["dog"]] = [1, 0, 0.1]
    table[VOCAB["food"]] = [0, 0, 1]
    pipe = Pipeline(
        {"input": TEXT, "output": {"kind": "embedding", "output": "last_hidden_state"}},
        {"tokenizer.json": wordpiece_json()},
    )
    model = models.token_table_embedding(table)
    cat, dog, food = (_run(model, pipe, t) for t in ("the cat", "the dog", "food"))
    assert isinstance(cat, Embedding) and len(cat.vector) == 3
    assert np.linalg.norm(cat.vector) == pytest.approx(1.0)
    assert cat.cosine(dog) > 0.95 and cat.cosine(food) < 0.1


def test_text_without_output_step_returns_none():
    pipe = Pipeline({"input": TEXT}, {"tokenizer.json": wordpiece_json()})
    assert _run(models.token_embedder(len(VOCAB)), pipe, "a cat") is None


def test_next_token_labels_come_from_the_tokenizer():
    pipe = Pipeline(
        {"input": {**TEXT, "add_special_tokens": False}, "output": {"kind": "next_token"}},
        {"tokenizer.json": wordpiece_json()},
    )
    # the toy LM predicts id+1 after the last real token: "the" -> "cat", padding ignored
    result = _run(models.next_token_lm(len(VOCAB)), pipe, "a man eat the")
    assert isinstance(result, Classification)
    assert result.top.label == "cat" and result.top.index == VOCAB["cat"]
    assert result.top.score > 0.99


def _expanding_decoder(times: int) -> bytes:
    """The fixture's tokenizer whose decoder makes 'a' into ``times ** 3`` 'd'."""
    from tokenizers import Tokenizer, decoders

    tok = Tokenizer.from_str(wordpiece_json().decode())
    steps = [decoders.Replace(a, b * times) for a, b in (("a", "b"), ("b", "c"), ("c", "d"))]
    tok.decoder = decoders.Sequence(steps)
    return tok.to_str().encode()


def test_next_token_labels_a_decoder_could_blow_up_are_refused_at_compile():
    # three Replaces of 100 in a 1 KB tokenizer.json: "cat" became 1 000 002 characters, each
    # of the top_k labels (up to 1000) made after the run, outside every memory bound
    model = OnnxModel(models.next_token_lm(len(VOCAB)))
    spec = {"input": {**TEXT, "add_special_tokens": False}, "output": {"kind": "next_token"}}
    bad = Pipeline(spec, {"tokenizer.json": _expanding_decoder(100)})
    with pytest.raises(PipelineError, match=r"decoder can make a label of up to 5000000 bytes"):
        compile_pipeline(bad, inputs=model.inputs, outputs=model.outputs, limits=LIMITS)
    fine = Pipeline(spec, {"tokenizer.json": _expanding_decoder(2)})  # 5 bytes times 8
    result = _run(models.next_token_lm(len(VOCAB)), fine, "a man eat the")
    assert result.top.label == "d" * 10 + "t"  # "cat": "cbbt", "ccccct", then d for c


def test_red_png_is_classified_red():
    pipe = Pipeline(
        {
            "input": {"kind": "image", "resize": [16, 16]},
            "output": {"kind": "labels", "labels": "labels.txt", "top_k": 3},
        },
        {"labels.txt": b"red\ngreen\nblue\n"},
    )
    png = encode(Image.new("RGB", (50, 30), (200, 30, 10)), "PNG")
    result = _run(models.colour_classifier(16), pipe, png)
    assert isinstance(result, Classification)
    assert [x.label for x in result.labels] == ["red", "green", "blue"]


def test_wav_to_ctc_transcript():
    vocab = json.dumps({"<pad>": 0, "A": 1, "B": 2}).encode()
    pipe = Pipeline(
        {
            "input": {"kind": "audio", "sample_rate": 8000, "max_seconds": 1},
            "output": {"kind": "ctc", "vocab": "vocab.json"},
        },
        {"vocab.json": vocab},
    )
    # positive, silence, negative, silence, positive: A, blank, B, blank, A
    x = np.concatenate([np.full(100, 0.5), np.zeros(50), np.full(100, -0.5), np.zeros(50),
                        np.full(100, 0.5)]).astype(np.float32)  # fmt: skip
    result = _run(models.sign_ctc(), pipe, wav_bytes(x, 8000))
    assert result == Transcript("ABA")


@pytest.mark.parametrize(
    ("spec", "files", "fragment"),
    [
        ({"input": TEXT}, {}, "no such file"),
        ({"input": TEXT}, {"tokenizer.json": wordpiece_json(), "x.txt": b""}, "not named by"),
        (
            {"input": TEXT, "output": {"kind": "labels", "labels": "l.txt"}},
            {"tokenizer.json": wordpiece_json(), "l.txt": b"a\nb\n"},
            "l.txt has 2 labels; output 'last_hidden_state' has 4 classes",
        ),
        (
            {"input": TEXT, "output": {"kind": "labels", "output": "probs"}},
            {"tokenizer.json": wordpiece_json()},
            "the model has no output named 'probs'",
        ),
        (
            {"input": TEXT, "output": {"kind": "ctc", "vocab": "v.json", "blank": "_"}},
            {"tokenizer.json": wordpiece_json(), "v.json": b'{"a": 0}'},
            "output.blank: '_' is not in v.json",
        ),
        (
            {"input": TEXT, "output": {"kind": "ctc", "vocab": "v.json", "blank": "a"}},
            {"tokenizer.json": wordpiece_json(), "v.json": b'{"a": 0}'},
            "v.json has 1 tokens; output 'last_hidden_state' has 4",
        ),
        ({"input": {"kind": "image"}}, {}, "name the one this step feeds"),
    ],
)
def test_pipelines_that_cannot_work_are_refused_at_compile_time(spec, files, fragment):
    model = OnnxModel(models.token_embedder(len(VOCAB)))
    with pytest.raises(PipelineError) as info:
        compile_pipeline(Pipeline(spec, files), inputs=model.inputs, outputs=model.outputs,
                         limits=LIMITS)  # fmt: skip
    assert fragment in str(info.value)
