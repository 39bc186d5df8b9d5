"""A tokenizer.json's normalizers and post-processor are bounded at upload; texts by them."""

from __future__ import annotations

import base64
import json
import struct

import pytest
from tokenizers import Regex, Tokenizer, normalizers, processors

from blindai.errors import PipelineError
from blindai.pipeline._text import compile_text
from blindai.pipeline._tokenizer_bounds import (
    EXPANSION_BUDGET,
    MAX_PIECE_CHARACTERS,
    MAX_WORD_CHARACTERS,
    Expansion,
    added_ids,
    bound_of,
    decoding,
    expansion,
)
from blindai.pipeline.limits import PipelineLimits
from blindai.pipeline.spec import TextInput
from tests.unit.pipeline._factory import wordpiece_json
from tests.unit.pipeline.test_text import BERT


def _with(normalizer=None, post=None) -> bytes:
    tok = Tokenizer.from_str(wordpiece_json().decode())
    if normalizer is not None:
        tok.normalizer = normalizer
    if post is not None:
        tok.post_processor = post
    return tok.to_str().encode()


def _spec() -> TextInput:
    return TextInput(kind="text", tokenizer="tokenizer.json", max_length=8)


def test_the_bounds_of_what_the_library_writes() -> None:
    seq = normalizers.Sequence(
        [normalizers.Replace("a", "bb"), normalizers.NFKC(), normalizers.Prepend("__")]
    )
    assert bound_of(_with(seq), max_added=4096) == Expansion(36, 2)  # ((n*2)*18)+2
    spaces = normalizers.Replace(Regex(" {2,}"), "yyy")  # a pattern the server runs (T5's)
    assert bound_of(_with(spaces), max_added=9) == Expansion(4, 3)
    assert bound_of(_with(normalizers.Replace("abcd", "xy")), max_added=9) == Expansion(1)
    # bytes, not characters: each byte may be a token of a byte-level tokenizer
    emoji = normalizers.Replace("a", "\U0001f600" * 16)
    assert bound_of(_with(emoji), max_added=9) == Expansion(64)
    assert bound_of(_with(normalizers.Prepend("\u2581")), max_added=9) == Expansion(1, 3)
    assert bound_of(_with(normalizers.BertNormalizer(lowercase=True)), max_added=9).factor == 12
    plain = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    assert bound_of(_with(plain), max_added=9).factor == 3
    assert Expansion(36, 2).largest_text(38) == 1


def test_the_wordpiece_fixture_is_bounded_as_bert() -> None:
    assert bound_of(wordpiece_json(), max_added=4096).factor <= EXPANSION_BUDGET


def test_special_ids_a_post_processor_adds_are_counted_and_capped() -> None:
    template = processors.TemplateProcessing(
        single="[CLS] $A [SEP] [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )  # fmt: skip
    assert added_ids(json.loads(_with(post=template))["post_processor"]) == 3
    doc = json.loads(_with(post=template))
    doc["post_processor"]["special_tokens"]["[SEP]"]["ids"] = [3] * 5000
    doc["post_processor"]["special_tokens"]["[SEP]"]["tokens"] = ["[SEP]"] * 5000
    data = json.dumps(doc).encode()
    Tokenizer.from_str(data.decode())  # the library takes it: 10 000 ids added to every text
    with pytest.raises(PipelineError, match="adds up to 10001 ids to a text, more than"):
        bound_of(data, max_added=4096)


@pytest.mark.parametrize(
    ("normalizer", "fragment"),
    [
        ({"type": "Mystery"}, "normalizer type 'Mystery' is not one this server can bound"),
        ({"type": "Replace", "pattern": {"Other": 1}, "content": "x"}, "String or Regex"),
        ({"type": "Precompiled", "precompiled_charsmap": "!!"}, "does not read"),
        ({"type": "Sequence", "normalizers": 3}, "without its list"),
        ([], "not an object"),
    ],
)
def test_what_cannot_be_bounded_is_refused(normalizer: object, fragment: str) -> None:
    with pytest.raises(PipelineError, match=fragment):
        expansion(normalizer)


def test_a_wordpiece_model_taking_words_longer_than_200_characters_is_refused() -> None:
    # a word of n characters takes WordPiece more than n^2 steps: "a" + "ing" * 6400 (19 KB,
    # one word of a tokenizer.json allowing 10**9 characters) took 66 s, past the run timeout
    doc = json.loads(wordpiece_json())
    for most in (100, MAX_WORD_CHARACTERS):
        doc["model"]["max_input_chars_per_word"] = most
        assert bound_of(json.dumps(doc).encode(), max_added=9) == Expansion(12)
    for bad, fragment in ((10**9, "of 1000000000, more"), ("many", "of 'many', more")):
        doc["model"]["max_input_chars_per_word"] = bad
        with pytest.raises(PipelineError, match=f"max_input_chars_per_word {fragment}"):
            bound_of(json.dumps(doc).encode(), max_added=9)


def _unigram(longest: int) -> bytes:
    from tokenizers.models import Unigram

    pieces = [("<unk>", 0.0)] + [("a" * k, -float(k)) for k in range(1, longest + 1)]
    return Tokenizer(Unigram(pieces, unk_id=0)).to_str().encode()


def test_a_unigram_model_of_pieces_longer_than_100_characters_is_refused() -> None:
    # Unigram's lattice holds every piece of the vocabulary that starts at each character:
    # time in the text's length times the longest piece's ("a" * 1..1000, 40 000 "a": 8 s)
    assert bound_of(_unigram(MAX_PIECE_CHARACTERS), max_added=9) == Expansion()
    with pytest.raises(PipelineError, match="its Unigram model has a piece of 101 characters"):
        bound_of(_unigram(MAX_PIECE_CHARACTERS + 1), max_added=9)


def test_the_decoders_of_real_tokenizers_are_bounded() -> None:
    from tokenizers import decoders

    llama = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
         decoders.Strip(" ", 1, 0)]
    )  # fmt: skip
    for decoder, bound in (
        (decoders.WordPiece(), Expansion()),
        (decoders.ByteLevel(), Expansion(3)),
        (decoders.Metaspace(), Expansion()),
        (llama, Expansion()),
        (decoders.CTC(), Expansion(2, 1)),
        (decoders.Sequence([decoders.Replace("a", "bb")] * 3), Expansion(8)),
    ):
        assert decoding(json.loads(decoder.__getstate__())) == bound, decoder
    with pytest.raises(PipelineError, match="decoder type 'Mystery' is not one"):
        decoding({"type": "Mystery"})


def test_a_precompiled_map_is_bounded_by_its_longest_replacement() -> None:
    trie = b"\0" * 8
    pool = "ﬃ\0ﷺ-expanded\0".encode()
    blob = base64.b64encode(struct.pack("<I", len(trie)) + trie + pool).decode()
    node = {"type": "Precompiled", "precompiled_charsmap": blob}
    assert expansion(node) == Expansion(len("ﷺ-expanded".encode()))  # bytes, 12


def test_a_text_an_expanding_tokenizer_would_blow_up_is_refused_before_it_runs() -> None:
    # "a" -> 1000 characters: 100 KB of text took 3.2 GB and 10 s in the tokenizers library
    files = {"tokenizer.json": _with(normalizers.Replace("a", "b" * 1000))}
    limits = PipelineLimits(max_text_bytes=64 << 10)
    step = compile_text(_spec(), files, BERT, limits)
    most = EXPANSION_BUDGET * limits.max_text_bytes // 1000
    assert step.largest_text == most
    with pytest.raises(PipelineError, match=f"up to 1000 times longer, so it takes at most {most}"):
        step("a" * (most + 1))
    assert step("a cat").feeds  # a short text still runs
    plain = compile_text(_spec(), {"tokenizer.json": wordpiece_json()}, BERT, limits)
    assert plain.largest_text == limits.max_text_bytes  # BERT's own normalizer: no less
