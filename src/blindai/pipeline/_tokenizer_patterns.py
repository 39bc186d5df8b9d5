"""The regular expressions a ``tokenizer.json`` may hold: published ones, measured linear.

The ``tokenizers`` library compiles a ``Split`` pre-tokenizer's ``Regex`` pattern and a
``Replace`` normalizer's or decoder's with Oniguruma, a backtracking engine, and runs it over
the whole normalized text in Rust, where nothing can stop it (the run timeout answers 504, but
the worker stays busy). Oniguruma gives up on one match attempt past its retry limit, but an
attempt just under it at every character is not refused: ``(?:a|a){1,20}b|a`` took 2.6 s for
100 characters.

So only the patterns below are taken, exactly as written (anything else in a ``Regex`` is
refused at upload, naming where it is). A structural check (refuse nested or alternated
quantifiers, back-references, ...) was measured and is not sound: ``\\s*\\s*\\s*x|\\S+|\\s``
has no nested quantifier and no alternation under one, and 32 KiB of spaces held a worker for
24-33 s before Oniguruma's retry limit ended it; a sequence of overlapping quantifiers is
polynomial in each attempt, and every start position makes an attempt. A check that caught
these would refuse the published patterns too (o200k's ``[\\p{Lu}...]*[\\p{Ll}...]+`` is such
a sequence: it is linear only because what follows cannot fail).

Why each one is linear (the argument, then the measurement): every branch is a sequence of
single-character classes and literals, a fixed set of literal contractions and a one-character
lookahead, with no quantifier over a group that can match in more than one way. Two unbounded
quantifiers in a row either take disjoint classes (``[^\\s\\p{L}\\p{N}]+[\\r\\n]*``: one way
to split a run) or are followed by nothing that can fail (``\\s*[\\r\\n]+``, o200k's
``[\\p{Lu}...]*[\\p{Ll}...]+(?i:...)?``: the first split the second accepts ends the
attempt), so one attempt costs a constant times the run it scans. Where a branch fails after
scanning a run, a later branch matches that same run (GPT-2's, cl100k's, Qwen2's and o200k's
branches together match every character), so the next attempt starts after it; the patterns
of one quantifier fail at the first character they do not match. Time is linear in the text.
Measured with the library on 1 MiB of runs of spaces, newlines, ``" \\n"``, carriage
returns, capitals, capitals then digits, CJK letters, combining marks, apostrophes, letters,
punctuation, spaces before a letter and mixed prose: at most 0.96 s each (GPT-2 on prose, most
of it making a token of each word), and 2 MiB took 1.4 to 2.4 s.

Not checked: a ``String`` pattern is a literal (escaped by the library), linear in the text.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from blindai.errors import PipelineError

__all__ = ["KNOWN_PATTERNS", "check_patterns"]

_CONTRACTIONS = "'s|'t|'re|'ve|'m|'ll|'d"
_TIKTOKEN_TAIL = r"\s*[\r\n]+|\s+(?!\S)|\s+"
_UPPER = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]"
_LOWER = r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"

KNOWN_PATTERNS: Mapping[str, str] = MappingProxyType(
    {
        # GPT-2 (r50k/p50k; the ByteLevel pre-tokenizer's own, as a Split)
        _CONTRACTIONS + r"| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+": "GPT-2",
        # cl100k_base, as Llama 3's tokenizer.json has it
        f"(?i:{_CONTRACTIONS})"
        + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
        + _TIKTOKEN_TAIL: "cl100k (Llama 3)",
        # Qwen2: cl100k with one digit a piece
        f"(?i:{_CONTRACTIONS})"
        + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
        + _TIKTOKEN_TAIL: "Qwen2",
        # o200k_base (GPT-4o)
        rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+(?i:{_CONTRACTIONS})?"
        + rf"|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*(?i:{_CONTRACTIONS})?"
        + r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|"
        + _TIKTOKEN_TAIL: "o200k",
        # the Whitespace pre-tokenizer's own, as a Split
        r"\w+|[^\w\s]+": "Whitespace",
        r"\s+": "whitespace runs",
        r"\p{N}{1,3}": "digits in threes (DeepSeek)",
        # T5's, ALBERT's and XLNet's Replace normalizer (runs of spaces to one)
        " {2,}": "runs of spaces",
    }
)
"""Each pattern taken, with what it is (the text of a ``Regex``, after JSON decoding)."""

_SECTIONS = ("normalizer", "pre_tokenizer", "decoder")
"""The parts of a tokenizer.json the library compiles a ``Regex`` of (Split, Replace)."""
_MAX_DEPTH = 32


def _refuse(where: str) -> PipelineError:
    return PipelineError(
        f"tokenizer.json: its {where} has a regular expression this server does not run: "
        "only the published patterns of GPT-2, cl100k (Llama 3), Qwen2, o200k and a few "
        "simple ones are taken (the library's engine backtracks, and nothing can stop it: "
        "some patterns hold a worker for minutes on a short text); docs/pipelines.md lists them"
    )


def _walk(node: object, where: str, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise PipelineError(f"tokenizer.json: its {where} is nested too deeply")
    if isinstance(node, list):
        for i, item in enumerate(node):
            _walk(item, f"{where}[{i}]", depth + 1)
        return
    if not isinstance(node, Mapping):
        return
    pattern = node.get("pattern")
    if isinstance(pattern, Mapping) and "Regex" in pattern:
        regex = pattern["Regex"]
        if not isinstance(regex, str) or regex not in KNOWN_PATTERNS:
            kind = node.get("type")
            raise _refuse(f"{where} ({str(kind)[:40]})" if isinstance(kind, str) else where)
    for key, value in node.items():
        if isinstance(value, Mapping | list):
            _walk(value, f"{where}.{str(key)[:40]}", depth + 1)


def check_patterns(doc: Mapping[str, Any]) -> None:
    """PipelineError naming the step (``pre_tokenizer.pretokenizers[0] (Split)``) of a
    tokenizer.json's first regular expression that is not one of :data:`KNOWN_PATTERNS`."""
    for section in _SECTIONS:
        _walk(doc.get(section), section, 0)
