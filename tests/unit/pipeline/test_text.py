"""Text step: a real tokenizer.json (WordPiece, built by the test) through `tokenizers`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from blindai.errors import PipelineError
from blindai.pipeline._text import LocalTokenizer, compile_text
from blindai.pipeline.limits import PipelineLimits
from blindai.pipeline.spec import TextInput, TokenNames
from tests.unit.pipeline._factory import VOCAB, Port, wordpiece_json

I64 = np.dtype("int64")
BERT = [Port("input_ids", I64, (None, None)), Port("attention_mask", I64, (None, None))]
FILES = {"tokenizer.json": wordpiece_json()}


def _spec(**kw):
    return TextInput(kind="text", tokenizer="tokenizer.json", **{"max_length": 8, **kw})


def test_tokenizes_pads_and_masks():
    step = compile_text(_spec(), FILES, BERT, PipelineLimits())
    out = step("The cat sat")
    v = VOCAB
    assert out.feeds["input_ids"].tolist() == [
        [v["[CLS]"], v["the"], v["cat"], v["sat"], v["[SEP]"], 0, 0, 0]
    ]
    assert out.feeds["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0, 0, 0]]
    assert out.feeds["input_ids"].dtype == np.int64
    assert out.mask is not None and out.mask.sum() == 5


def test_wordpiece_subwords_and_unknown_words():
    step = compile_text(_spec(padding="none"), FILES, BERT, PipelineLimits())
    ids = step("eating zebra").feeds["input_ids"][0].tolist()
    assert ids == [VOCAB["[CLS]"], VOCAB["eat"], VOCAB["##ing"], VOCAB["[UNK]"], VOCAB["[SEP]"]]


def test_truncates_to_max_length():
    step = compile_text(_spec(max_length=4), FILES, BERT, PipelineLimits())
    assert step("the cat sat on the mat").feeds["input_ids"].shape == (1, 4)


def test_refuses_long_text_without_truncation():
    step = compile_text(_spec(max_length=4, truncation=False), FILES, BERT, PipelineLimits())
    with pytest.raises(PipelineError, match="text is 8 tokens; this model takes at most 4"):
        step("the cat sat on the mat")


def test_token_type_ids_and_int32_follow_the_model():
    i32 = np.dtype("int32")
    ports = [Port(n, i32, (1, 8)) for n in ("input_ids", "attention_mask", "token_type_ids")]
    out = compile_text(_spec(), FILES, ports, PipelineLimits())("a man")
    assert set(out.feeds) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(a.dtype == np.int32 and a.shape == (1, 8) for a in out.feeds.values())
    assert out.feeds["token_type_ids"].tolist() == [[0] * 8]


def test_names_map_outputs_to_other_inputs():
    ports = [Port("ids", I64, (1, None)), Port("mask", I64, (1, None))]
    names = TokenNames(input_ids="ids", attention_mask="mask")
    out = compile_text(_spec(names=names), FILES, ports, PipelineLimits())("a cat")
    assert set(out.feeds) == {"ids", "mask"}


def test_no_special_tokens():
    step = compile_text(_spec(add_special_tokens=False, padding="none"), FILES, BERT[:1],
                        PipelineLimits())  # fmt: skip
    assert step("a cat").feeds["input_ids"].tolist() == [[VOCAB["a"], VOCAB["cat"]]]


@pytest.mark.parametrize(
    ("ports", "fragment"),
    [
        ([Port("input_ids", np.dtype("float32"), (1, 8))], "tokens need int64/int32"),
        ([Port("input_ids", I64, (1, 16))], "the text step makes [1, 8]"),
        ([Port("input_ids", I64, (None, None, None))], "the text step makes"),
        ([Port("tokens", I64, (1, 8))], "no model input receives input_ids"),
        ([*BERT, Port("past", np.dtype("float32"), (1, 8))], "feeds no value to model input"),
    ],
)
def test_refuses_models_it_cannot_feed(ports, fragment):
    with pytest.raises(PipelineError) as info:
        compile_text(_spec(), FILES, ports, PipelineLimits())
    assert fragment in str(info.value)


def test_explicit_name_must_exist():
    with pytest.raises(PipelineError, match=r"input.names.attention_mask: .* 'nope'"):
        compile_text(_spec(names=TokenNames(attention_mask="nope")), FILES, BERT, PipelineLimits())


def test_dynamic_length_needs_a_dynamic_model_input():
    with pytest.raises(PipelineError, match="makes \\[1, tokens\\]"):
        compile_text(_spec(padding="none"), FILES, [Port("input_ids", I64, (1, 8))],
                     PipelineLimits())  # fmt: skip


@pytest.mark.parametrize(
    "data",
    [b"{}", b"not json", b'{"model": {"type": "Martian"}}', b"\xff\xfe", b""],
)
def test_malformed_tokenizer_is_a_pipeline_error(data):
    with pytest.raises(PipelineError, match=r"tokenizer\.json is not a valid tokenizer\.json"):
        compile_text(_spec(), {"tokenizer.json": data}, BERT, PipelineLimits())


def test_missing_tokenizer_file():
    with pytest.raises(PipelineError, match="has no such file"):
        compile_text(_spec(), {}, BERT, PipelineLimits())


def test_hostile_text():
    step = compile_text(_spec(), FILES, BERT, PipelineLimits(max_text_bytes=10))
    with pytest.raises(PipelineError, match="text is 11 bytes; this server takes at most 10"):
        step("x" * 11)
    with pytest.raises(PipelineError, match="not valid UTF-8"):
        step(b"\xff\xfe")
    no_special = compile_text(_spec(add_special_tokens=False), FILES, BERT, PipelineLimits())
    with pytest.raises(PipelineError, match="text is empty"):
        no_special("   ")


def test_a_backtracking_pre_tokenizer_regex_is_a_pipeline_error():
    # Oniguruma stops "(a+)+$" at its retry limit and the tokenizers library panics: pyo3's
    # PanicException, a BaseException that went through every `except Exception` (a 500).
    # Such a pattern is refused at upload now (test_tokenizer_patterns.py); a step holding
    # one (made here from a compiled step) still turns the panic into a PipelineError.
    from dataclasses import replace

    from tokenizers import Regex, Tokenizer, pre_tokenizers

    tok = Tokenizer.from_str(wordpiece_json().decode())
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("(a+)+$"), "isolated")
    files = {"tokenizer.json": tok.to_str().encode()}
    with pytest.raises(PipelineError, match=r"its pre_tokenizer \(Split\) has a regular"):
        compile_text(_spec(), files, BERT, PipelineLimits())
    step = replace(
        compile_text(_spec(), FILES, BERT, PipelineLimits()), tokenizer=LocalTokenizer(tok)
    )
    with pytest.raises(PipelineError, match="the tokenizer failed on this text"):
        step("a" * 40 + "b")
    assert step("a cat").mask is not None  # the tokenizer still works


def test_a_tokenizer_error_on_the_text_is_a_pipeline_error():
    # WordPiece without its unknown token raises a bare Exception on an unknown word (a 500)
    doc = json.loads(wordpiece_json())
    doc["model"]["unk_token"] = "[NOPE]"
    files = {"tokenizer.json": json.dumps(doc).encode()}
    step = compile_text(_spec(), files, BERT, PipelineLimits())
    with pytest.raises(PipelineError, match="the tokenizer failed on this text") as info:
        step("zzqx")
    assert "zzqx" not in str(info.value)
    assert step("the cat").mask is not None


def test_a_tokenizer_json_the_library_panics_on_is_refused():
    # BPE merges repeating a pair: tokenizers panics while loading (pyo3's PanicException)
    model = {"type": "BPE", "vocab": {"a": 0, "aa": 1}, "merges": ["a a", "aa aa", "a a"]}
    data = json.dumps({**json.loads(wordpiece_json()), "model": model}).encode()
    with pytest.raises(PipelineError, match=r"tokenizer\.json is not a valid tokenizer\.json"):
        compile_text(_spec(), {"tokenizer.json": data}, BERT, PipelineLimits())
