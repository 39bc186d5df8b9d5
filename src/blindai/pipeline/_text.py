"""Text step: a Hugging Face ``tokenizer.json`` through the ``tokenizers`` library."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from tokenizers import Tokenizer

from blindai._documents import loads_json
from blindai.errors import PipelineError
from blindai.pipeline._ports import Port, Prepared, dims_fit, require_file
from blindai.pipeline._tokenizer_bounds import (
    EXPANSION_BUDGET,
    Expansion,
    bound_of,
    decoder_bound,
)
from blindai.pipeline._tokenizer_patterns import check_patterns
from blindai.pipeline.limits import PipelineLimits
from blindai.pipeline.spec import TextInput
from blindai.server._shown import shown, shown_names

__all__ = [
    "TOKENIZER_MEMORY_FACTOR",
    "Encoded",
    "LocalTokenizer",
    "TextStep",
    "Tokenize",
    "TokenizerFacts",
    "TokenizerLoader",
    "compile_text",
    "decode_each",
    "encode_text",
    "load_local",
    "load_tokenizer",
    "study_tokenizer",
]

_FIELDS = ("input_ids", "attention_mask", "token_type_ids")
_INT_TYPES = (np.dtype("int64"), np.dtype("int32"))
BYTES_PER_TOKEN = 640
"""Memory per token of an encoding, its token string aside (measured: 560 for a text of
1 MiB of "." through a WordPiece tokenizer, one token a character; 346 for a byte-level BPE)."""
TOKENIZER_MEMORY_FACTOR = 80
"""Memory compiling a ``tokenizer.json`` may take, per byte of it: the library's vocabulary
and merges, this module's parse of the file and the vocabulary read back, all at once
(measured peaks: 39 for all-MiniLM-L6-v2's real one; for files made to be costly, a vocabulary
of short tokens or pieces, 33-40 as WordLevel, 25-40 as BPE merges, 53-64 as Unigram pieces)."""


def load_tokenizer(data: bytes, name: str) -> Tokenizer:
    """Parse a ``tokenizer.json``; PipelineError when the tokenizers library refuses it, or
    when it holds a regular expression that is not a published one
    (:func:`~blindai.pipeline._tokenizer_patterns.check_patterns`), checked before the library
    reads the file: it compiles each pattern as it parses, holding the GIL (a long case-folded
    pattern took it seconds, every thread of the server waiting)."""
    _check_patterns_first(data)
    try:
        return Tokenizer.from_str(data.decode("utf-8"))
    except BaseException as exc:  # a bare Exception on malformed files; panics on some
        if not isinstance(exc, Exception) and not _rust_panic(exc):
            raise
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise PipelineError(f"{name} is not a valid tokenizer.json: {first}") from None


def _check_patterns_first(data: bytes) -> None:
    """PipelineError for a regular expression not listed; a file that is not a JSON object is
    left to the library, which says what is wrong with it. The parse is dropped before the
    library makes its own."""
    try:
        doc = loads_json(data)
    except ValueError:
        return
    if isinstance(doc, Mapping):
        check_patterns(doc)


def _rust_panic(exc: BaseException) -> bool:
    """Whether ``exc`` is a panic of the Rust library (pyo3's PanicException, a BaseException)."""
    kind = type(exc)
    return kind.__module__ == "pyo3_runtime" and kind.__name__ == "PanicException"


Encoded = tuple[np.ndarray, np.ndarray, np.ndarray]
"""A text's ``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64, one dimension)."""
Stop = Callable[[], bool]
"""Whether the run was stopped (its timeout, its client gone): looked at while a tokenizer that
can be stopped works."""


def _never() -> bool:
    return False


@dataclass(frozen=True)
class TokenizerFacts:
    """What a text step needs to know of its ``tokenizer.json``, learnt where it was compiled
    (in the server's process, or a tokenizer's own: ``blindai.server.tokenizer_host``)."""

    expansion: Expansion
    """What its normalizers can make of a text (``_tokenizer_bounds.bound_of``)."""
    longest_token: int
    """UTF-8 bytes of its longest token (its vocabulary's, added tokens included)."""
    vocab_size: int
    """Its tokens, added ones included."""
    decoded: Expansion | str | None = None
    """What its decoder can make of a token (``decoder_bound``); its refusal's message when it
    cannot be bounded; None when not asked for (no ``next_token`` output)."""


class Tokenize(Protocol):
    """A compiled tokenizer: in this process (:class:`LocalTokenizer`), or in a process of its
    own that a run's stop kills (``blindai.server.tokenizer_host.HostedTokenizer``)."""

    def encode(self, text: str, *, add_special_tokens: bool, stop: Stop) -> Encoded:
        """The text's tokens (truncated and padded as configured); PipelineError when the
        library fails on it (a message that does not quote the text)."""
        ...

    def decode(self, tokens: list[int]) -> list[str]:
        """Each token's label, by the tokenizer's decoder (ids within its vocabulary)."""
        ...


TokenizerLoader = Callable[
    [bytes, str, TextInput, PipelineLimits, bool], tuple[Tokenize, TokenizerFacts]
]
"""Compiles a ``tokenizer.json`` (its bytes, its name, the step, the limits, whether its decoder's
bound is wanted) into a tokenizer and its facts: :func:`load_local` here; the server's loader
compiles it in a limited process of its own."""


_TEXT_FAILED = (
    "the tokenizer failed on this text (its tokenizer.json gave up on it or lacks "
    "a token it needs, such as its unknown token)"
)
"""Not the library's message: it may quote the text."""


@dataclass(frozen=True)
class LocalTokenizer:
    """A tokenizer run in this process: it holds the GIL while it works and cannot be stopped
    (``stop`` is not looked at)."""

    tokenizer: Tokenizer = field(repr=False)

    def encode(self, text: str, *, add_special_tokens: bool, stop: Stop = _never) -> Encoded:
        """See :meth:`Tokenize.encode`."""
        return encode_text(self.tokenizer, text, add_special_tokens=add_special_tokens)

    def decode(self, tokens: list[int]) -> list[str]:
        """See :meth:`Tokenize.decode`."""
        return decode_each(self.tokenizer, tokens)


def decode_each(tok: Tokenizer, tokens: list[int]) -> list[str]:
    """Each token's label, by ``tok``'s decoder."""
    return [str(tok.decode([t], skip_special_tokens=False)) for t in tokens]


def encode_text(tok: Tokenizer, text: str, *, add_special_tokens: bool) -> Encoded:
    """``tok`` on ``text`` as three int64 arrays; PipelineError when the library fails."""
    try:
        enc = tok.encode(text, add_special_tokens=add_special_tokens)
    except BaseException as exc:  # tokenizers raises bare Exceptions, and panics
        if not isinstance(exc, Exception) and not _rust_panic(exc):
            raise
        raise PipelineError(_TEXT_FAILED) from None
    return (
        np.asarray(enc.ids, dtype=np.int64),
        np.asarray(enc.attention_mask, dtype=np.int64),
        np.asarray(enc.type_ids, dtype=np.int64),
    )


def study_tokenizer(
    data: bytes, name: str, spec: TextInput, limits: PipelineLimits, decoder: bool
) -> tuple[Tokenizer, TokenizerFacts]:
    """Compile a ``tokenizer.json`` (already held to its size bound), configure it for the step
    and learn its facts; PipelineError for what is refused. Every part of it holds the GIL
    (measured on a 22.5 MB costly vocabulary: 1.4 s checking patterns, 5.8 s the library's
    parse, 2.7 s the bounds, 3.8 s the vocabulary read back)."""
    tok = load_tokenizer(data, name)
    bound = bound_of(data, max_added=limits.max_sequence_length)
    _configure(tok, spec)
    vocab = tok.get_vocab(with_added_tokens=True)
    longest = max((len(t.encode("utf-8", "replace")) for t in vocab), default=0)
    decoded: Expansion | str | None = None
    if decoder:
        try:
            decoded = decoder_bound(data)
        except PipelineError as exc:
            decoded = str(exc)
    facts = TokenizerFacts(bound, longest, tok.get_vocab_size(with_added_tokens=True), decoded)
    return tok, facts


def load_local(
    data: bytes, name: str, spec: TextInput, limits: PipelineLimits, decoder: bool
) -> tuple[Tokenize, TokenizerFacts]:
    """The tokenizer compiled and run in this process (:class:`LocalTokenizer`): a
    :data:`TokenizerLoader` for where no process of its own can be started (Gramine)."""
    tok, facts = study_tokenizer(data, name, spec, limits, decoder)
    return LocalTokenizer(tok), facts


def _pad_token(tok: Tokenizer) -> tuple[int, str]:
    current = tok.padding
    if current:
        return int(current["pad_id"]), str(current["pad_token"])
    for token in ("[PAD]", "<pad>", "<|endoftext|>"):
        found = tok.token_to_id(token)
        if found is not None:
            return found, token
    return 0, tok.id_to_token(0) or "[PAD]"


def _configure(tok: Tokenizer, spec: TextInput) -> None:
    tok.no_padding()
    tok.no_truncation()
    if spec.truncation:
        tok.enable_truncation(spec.max_length)
    if spec.padding == "max_length":
        pad_id, pad_token = _pad_token(tok)
        tok.enable_padding(length=spec.max_length, pad_id=pad_id, pad_token=pad_token)


def _targets(spec: TextInput, inputs: Sequence[Port]) -> list[tuple[str, Port]]:
    by_name = {p.name: p for p in inputs}
    explicit = spec.names.model_dump()
    targets: list[tuple[str, Port]] = []
    for fld in _FIELDS:
        name = explicit[fld]
        if name is not None and name not in by_name:
            raise PipelineError(f"input.names.{fld}: the model has no input {shown(name)}")
        port = by_name.get(name if name is not None else fld)
        if port is not None:
            targets.append((fld, port))
    fed = {port.name for _, port in targets}
    if "input_ids" not in {f for f, _ in targets}:
        raise PipelineError("no model input receives input_ids (set input.names.input_ids)")
    unfed = [p.name for p in inputs if p.name not in fed]
    if unfed:
        raise PipelineError(f"the text step feeds no value to model input(s) {shown_names(unfed)}")
    return targets


def _check_port(port: Port, spec: TextInput) -> np.dtype[Any]:
    if port.dtype not in _INT_TYPES:
        raise PipelineError(
            f"model input {shown(port.name)} is {port.dtype}; tokens need int64/int32"
        )
    length = spec.max_length if spec.padding == "max_length" else None
    fixed = len(port.shape) == 2 and port.shape[1] is not None
    if not dims_fit((1, length), port.shape) or (length is None and fixed):
        raise PipelineError(
            f"model input {shown(port.name)} has shape {list(port.shape)}; the text step makes "
            f"[1, {length or 'tokens'}]"
        )
    assert port.dtype is not None
    return port.dtype


@dataclass(frozen=True)
class TextStep:
    """Tokenize one text into the model's token inputs (batch of one)."""

    tokenizer: Tokenize = field(repr=False)
    targets: tuple[tuple[str, str, np.dtype[Any]], ...]
    spec: TextInput
    max_text_bytes: int
    facts: TokenizerFacts
    max_cost: int | None = None
    """Most memory one text may take to tokenize (:meth:`cost`); None: not bounded here."""
    kind: str = "text"

    @property
    def expansion(self) -> Expansion:
        """What the tokenizer's normalizers can make of a text (``_tokenizer_bounds``)."""
        return self.facts.expansion

    @property
    def longest_token(self) -> int:
        """UTF-8 bytes of the tokenizer's longest token (its vocabulary's, added tokens
        included)."""
        return self.facts.longest_token

    @property
    def largest_text(self) -> int:
        """The longest text taken: ``max_text_bytes``, less for a tokenizer that expands."""
        normalized = EXPANSION_BUDGET * self.max_text_bytes
        if self.max_cost is not None:
            normalized = min(normalized, self.max_cost // (BYTES_PER_TOKEN + self.longest_token))
        return min(self.max_text_bytes, self.expansion.largest_text(normalized))

    def _size(self, raw: bytes | str) -> int:
        """The text's UTF-8 bytes; PipelineError beyond :attr:`largest_text`."""
        size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "replace"))
        if size > self.largest_text:
            why = "this server takes"
            if self.largest_text < self.max_text_bytes:
                why = (
                    f"this pipeline's tokenizer can make a text up to {self.expansion.factor} "
                    "times longer, so it takes"
                )
            memory = ""
            if self.largest_text < self.max_text_bytes and self.max_cost is not None:
                memory = (
                    f" (each byte of the normalized text may become a token of up to "
                    f"{self.longest_token} bytes, and tokenizing may take at most "
                    f"{self.max_cost} bytes of memory: --max-preprocess-memory)"
                )
            raise PipelineError(f"text is {size} bytes; {why} at most {self.largest_text}{memory}")
        return size

    def cost(self, raw: bytes | str) -> int:
        """The most memory (bytes) tokenizing ``raw`` may take: every byte its normalized
        form may have made one token (a token covers a byte at least; a byte-level
        tokenizer's cover one each, and take less per token), each with its string (up to the
        longest token) and offsets, words, ids and masks in the library and as Python lists."""
        normalized = self.expansion.factor * self._size(raw) + self.expansion.extra
        return normalized * (BYTES_PER_TOKEN + self.longest_token)

    def __call__(self, raw: bytes | str, *, stop: Stop = _never) -> Prepared:
        """Tokenize, truncate and pad as the spec says; ``stop()`` true (the run's timeout)
        stops a tokenizer that runs in a process of its own."""
        self._size(raw)
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise PipelineError("text is not valid UTF-8") from None
        ids, attention, types = self.tokenizer.encode(
            raw, add_special_tokens=self.spec.add_special_tokens, stop=stop
        )
        if not self.spec.truncation and len(ids) > self.spec.max_length:
            raise PipelineError(
                f"text is {len(ids)} tokens; this model takes at most {self.spec.max_length}"
            )
        mask = attention[None, :]
        if not mask.any():
            raise PipelineError("text is empty (no tokens)")
        values: Mapping[str, np.ndarray] = {
            "input_ids": ids,
            "attention_mask": attention,
            "token_type_ids": types,
        }
        feeds = {name: np.asarray(values[f], dtype=dt)[None, :] for f, name, dt in self.targets}
        return Prepared(feeds, mask)


def _check_size(data: bytes, name: str, limits: PipelineLimits) -> None:
    """PipelineError for a tokenizer.json that could take more than ``--compile-memory`` to
    compile (:data:`TOKENIZER_MEMORY_FACTOR` times its size), before the library reads it."""
    most = limits.max_compile_bytes // TOKENIZER_MEMORY_FACTOR
    if len(data) > most:
        raise PipelineError(
            f"{name} is {len(data)} bytes; compiling a tokenizer may take "
            f"{TOKENIZER_MEMORY_FACTOR} times its size, so this server "
            f"(--compile-memory {limits.max_compile_bytes}) takes one of at most {most} bytes"
        )


def compile_text(
    spec: TextInput,
    files: Mapping[str, bytes],
    inputs: Sequence[Port],
    limits: PipelineLimits,
    *,
    loader: TokenizerLoader = load_local,
    decoder: bool = False,
) -> TextStep:
    """Load the tokenizer (by ``loader``: in this process unless told otherwise) and map its
    outputs to the model's inputs; check dtypes and shapes. ``decoder``: learn its decoder's
    bound too (a ``next_token`` output labels tokens with it)."""
    data = require_file(files, spec.tokenizer, "tokenizer")
    _check_size(data, spec.tokenizer, limits)
    targets = tuple(
        (fld, port.name, _check_port(port, spec)) for fld, port in _targets(spec, inputs)
    )
    tok, facts = loader(data, spec.tokenizer, spec, limits, decoder)
    return TextStep(tok, targets, spec, limits.max_text_bytes, facts, limits.max_preprocess_bytes)
