"""Output steps: activation and top-k labels, next token, pooled embedding, CTC decoding.

The numeric parts are pure functions on numpy arrays; each step checks the model's output
against what it expects when the pipeline is compiled, and again on every run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from blindai._documents import loads_json
from blindai.errors import InferenceFailed, PipelineError
from blindai.pipeline._ports import Port, Prepared
from blindai.pipeline.results import Classification, Embedding, Label, Transcript
from blindai.pipeline.spec import CtcOutput, EmbeddingOutput, LabelsOutput, NextTokenOutput
from blindai.server._shown import shown

__all__ = [
    "BYTES_PER_VALUE",
    "MAX_RESULT_BYTES",
    "CtcStep",
    "EmbeddingStep",
    "LabelsStep",
    "NextTokenStep",
    "ctc_greedy",
    "l2_normalize",
    "mean_pool",
    "parse_labels",
    "parse_vocab",
    "sigmoid",
    "softmax",
    "top_k",
    "top_k_named",
]

BYTES_PER_VALUE = 25
"""Most bytes one value of an embedding takes in a reply (JSON: ``-2.2250738585072014e-308``
and its comma)."""
MAX_RESULT_BYTES = 64 << 20
"""The default of a step's ``max_result_bytes`` (``PipelineLimits.max_result_bytes``)."""
MAX_VOCAB = 1 << 20
"""Most tokens of a CTC vocabulary, and most labels of a labels file."""


def softmax(x: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis."""
    z = x.astype(np.float64) - np.max(x, axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, elementwise."""
    return np.asarray(1.0 / (1.0 + np.exp(-x.astype(np.float64))))


def top_k(scores: np.ndarray, k: int, name: Callable[[int], str]) -> tuple[Label, ...]:
    """The ``k`` best of a 1-D score vector, best first (ties: lower index first)."""
    return top_k_named(scores, k, lambda ids: [name(i) for i in ids])


def top_k_named(
    scores: np.ndarray, k: int, names: Callable[[list[int]], Sequence[str]]
) -> tuple[Label, ...]:
    """:func:`top_k`, the labels of the ``k`` asked for at once (``names``: one call, e.g. a
    tokenizer in a process of its own, one round trip)."""
    order = [int(i) for i in np.argsort(-scores, kind="stable")[:k]]
    labels = names(order)
    return tuple(Label(label, float(scores[i]), i) for i, label in zip(order, labels, strict=True))


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of token vectors ``[1, seq, dim]`` over the tokens whose mask ``[1, seq]`` is 1."""
    m = mask.astype(np.float64)[..., None]
    total = (hidden.astype(np.float64) * m).sum(axis=1)[0]
    return np.asarray(total / max(float(m.sum()), 1e-9))


def l2_normalize(v: np.ndarray) -> np.ndarray:
    """``v / ||v||`` (a zero vector stays zero)."""
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 1e-12 else v


def ctc_greedy(
    logits: np.ndarray, tokens: Sequence[str], *, blank: int, delimiter: str, skip: set[int]
) -> str:
    """Best path decoding of ``[frames, vocab]``: argmax, merge repeats, drop blanks."""
    ids = np.argmax(logits, axis=-1)
    keep = np.ones(len(ids), dtype=bool)
    keep[1:] = ids[1:] != ids[:-1]
    pieces = [tokens[i] for i in ids[keep] if i != blank and i not in skip]
    text = "".join(" " if p == delimiter else p for p in pieces)
    return " ".join(text.split())


def parse_labels(data: bytes, name: str) -> tuple[str, ...]:
    """One label per line (UTF-8); a final newline is allowed; at most :data:`MAX_VOCAB`,
    counted before the file is decoded and split (each label is a Python string of 50 bytes
    and more: 32 MiB of short lines made 924 MiB at upload)."""
    if data.count(b"\n", 0, len(data) - 1) >= MAX_VOCAB:
        raise PipelineError(f"{name} holds more than {MAX_VOCAB} labels")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PipelineError(f"{name} is not UTF-8 text") from None
    labels = tuple(line.rstrip("\r") for line in text.split("\n"))
    labels = labels[:-1] if labels and labels[-1] == "" else labels
    if not labels:
        raise PipelineError(f"{name} holds no labels")
    return labels


def parse_vocab(data: bytes, name: str) -> tuple[str, ...]:
    """A ``{token: id}`` JSON object with ids 0..n-1, as tokens by id; at most
    :data:`MAX_VOCAB`, counted before the file is parsed by its colons (one an entry, more in
    a token that holds one): each entry is Python objects of about 150 bytes, and 30 MiB of
    short ones took 469 MB and 16 s at upload."""
    if data.count(b":") > MAX_VOCAB:
        raise PipelineError(
            f"{name} holds more than {MAX_VOCAB} tokens (counted by its ':' before it is parsed)"
        )
    try:
        vocab = loads_json(data)
    except ValueError:  # not UTF-8, not JSON, or nested too deeply
        raise PipelineError(f"{name} is not a JSON object of token ids") from None
    if not isinstance(vocab, dict) or not 0 < len(vocab) <= MAX_VOCAB:
        raise PipelineError(f"{name} must be a non-empty JSON object of token ids")
    ids = sorted(vocab.values(), key=lambda v: v if isinstance(v, int) else -1)
    if any(isinstance(v, bool) or not isinstance(v, int) for v in ids) or ids != list(
        range(len(ids))
    ):
        raise PipelineError(f"{name}: token ids must be the integers 0..{len(vocab) - 1}")
    tokens = [""] * len(vocab)
    for token, i in vocab.items():
        tokens[i] = token
    return tuple(tokens)


def _output(outputs: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    try:
        return outputs[name]
    except KeyError:
        raise InferenceFailed(f"the model gave no output {shown(name)}", status_code=500) from None


def _vector(array: np.ndarray, name: str) -> np.ndarray:
    """A ``[C]`` vector from ``[C]``, ``[1, C]``, ``[1, 1, C]``..."""
    if array.ndim == 0 or any(d != 1 for d in array.shape[:-1]):
        raise InferenceFailed(
            f"output {shown(name)} has shape {list(array.shape)}; expected one row of scores",
            status_code=422,
        )
    return array.reshape(-1)


@dataclass(frozen=True)
class LabelsStep:
    """Activation, then the top-k labels."""

    spec: LabelsOutput
    output: str
    labels: tuple[str, ...] | None

    def __call__(self, outputs: Mapping[str, np.ndarray], prepared: Prepared) -> Classification:
        """Scores of one row to labels."""
        scores = _vector(_output(outputs, self.output), self.output)
        if scores.size == 0:
            raise InferenceFailed(
                f"output {self.output!r} has shape {list(scores.shape)}; it holds no score",
                status_code=422,
            )
        if self.labels is not None and len(self.labels) != scores.size:
            raise InferenceFailed(
                f"output {self.output!r} has {scores.size} classes; the pipeline has "
                f"{len(self.labels)} labels",
                status_code=422,
            )
        if self.spec.activation == "softmax":
            scores = softmax(scores)
        elif self.spec.activation == "sigmoid":
            scores = sigmoid(scores)
        labels = self.labels
        return Classification(
            top_k(scores, self.spec.top_k, lambda i: labels[i] if labels else str(i))
        )


@dataclass(frozen=True)
class NextTokenStep:
    """Softmax over the logits after the last real token, labelled by the tokenizer."""

    spec: NextTokenOutput
    output: str
    decode: Callable[[list[int]], Sequence[str]] = field(repr=False)
    """The labels of tokens (one call for the top k)."""

    def __call__(self, outputs: Mapping[str, np.ndarray], prepared: Prepared) -> Classification:
        """``[1, seq, vocab]`` logits to the top-k next tokens."""
        logits = _output(outputs, self.output)
        if logits.ndim != 3 or logits.shape[0] != 1 or 0 in logits.shape:
            raise InferenceFailed(
                f"output {self.output!r} has shape {list(logits.shape)}; expected "
                "[1, tokens, vocab] (no token or no vocabulary: nothing to rank)",
                status_code=422,
            )
        last = logits.shape[1] - 1
        if prepared.mask is not None and prepared.mask.shape[1] == logits.shape[1]:
            last = int(np.flatnonzero(prepared.mask[0])[-1])
        return Classification(top_k_named(softmax(logits[0, last]), self.spec.top_k, self.decode))


@dataclass(frozen=True)
class EmbeddingStep:
    """Pool token vectors into one vector; L2-normalise it."""

    spec: EmbeddingOutput
    output: str
    max_result_bytes: int = MAX_RESULT_BYTES
    """Largest reply the vector may make, :data:`BYTES_PER_VALUE` a value."""

    def __call__(self, outputs: Mapping[str, np.ndarray], prepared: Prepared) -> Embedding:
        """``[1, seq, dim]`` (or ``[1, dim]`` with pooling none) to a vector."""
        hidden = _output(outputs, self.output)
        values = hidden.shape[-1] if hidden.ndim else 1
        if self.spec.pooling == "none":
            values = hidden.size
        if values * BYTES_PER_VALUE > self.max_result_bytes:
            raise InferenceFailed(
                f"output {self.output!r} makes an embedding of {values} values; the reply "
                f"would pass {self.max_result_bytes} bytes (--max-response-bytes)",
                status_code=422,
            )
        if self.spec.pooling == "none":
            vec = _vector(hidden, self.output).astype(np.float64)
        elif hidden.ndim != 3 or hidden.shape[0] != 1:
            raise InferenceFailed(
                f"output {self.output!r} has shape {list(hidden.shape)}; pooling needs "
                "[1, tokens, dim]",
                status_code=422,
            )
        elif self.spec.pooling == "first":
            if hidden.shape[1] == 0:
                raise InferenceFailed(
                    f"output {self.output!r} has shape {list(hidden.shape)}: no token to pool",
                    status_code=422,
                )
            vec = hidden[0, 0].astype(np.float64)
        else:
            assert prepared.mask is not None  # parse_spec requires a text step
            if hidden.shape[1] not in (1, prepared.mask.shape[1]):  # one: already pooled
                raise InferenceFailed(
                    f"output {self.output!r} has {hidden.shape[1]} tokens; the text step made "
                    f"{prepared.mask.shape[1]}: mean pooling needs one vector a token",
                    status_code=422,
                )
            vec = mean_pool(hidden, prepared.mask)
        if self.spec.normalize:
            vec = l2_normalize(vec)
        return Embedding(tuple(float(v) for v in vec))


@dataclass(frozen=True)
class CtcStep:
    """Greedy CTC decoding with a vocabulary."""

    spec: CtcOutput
    output: str
    tokens: tuple[str, ...]
    blank: int
    skip: frozenset[int]
    max_result_bytes: int = MAX_RESULT_BYTES
    """Largest transcript, counted before it is joined in the bytes its tokens take in the
    reply's JSON (:func:`_json_size`)."""
    _sizes: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        sizes = np.fromiter((_json_size(t) for t in self.tokens), np.int64)
        sizes[[self.blank, *self.skip]] = 0  # dropped from the transcript
        object.__setattr__(self, "_sizes", sizes)

    def __call__(self, outputs: Mapping[str, np.ndarray], prepared: Prepared) -> Transcript:
        """``[1, frames, vocab]`` logits to text."""
        logits = _output(outputs, self.output)
        if logits.ndim != 3 or logits.shape[0] != 1 or logits.shape[2] != len(self.tokens):
            raise InferenceFailed(
                f"output {self.output!r} has shape {list(logits.shape)}; expected "
                f"[1, frames, {len(self.tokens)}]",
                status_code=422,
            )
        size = _transcript_bytes(logits[0], self._sizes)
        if size > self.max_result_bytes:
            raise InferenceFailed(
                f"output {self.output!r} makes a transcript of {size} bytes; the reply would "
                f"pass {self.max_result_bytes} bytes (--max-response-bytes)",
                status_code=422,
            )
        text = ctc_greedy(
            logits[0],
            self.tokens,
            blank=self.blank,
            delimiter=self.spec.word_delimiter,
            skip=set(self.skip),
        )
        return Transcript(text)


def _json_size(token: str) -> int:
    """The bytes ``token`` takes in a JSON string as the server writes a result (ASCII: a
    control character is 6 bytes, ``\\u0001``, a non-ASCII one 6 or 12)."""
    return len(json.dumps(token)) - 2


def _transcript_bytes(logits: np.ndarray, sizes: np.ndarray) -> int:
    """At most the bytes of ``ctc_greedy``'s pieces (repeats merged), by token ``sizes``."""
    ids = np.argmax(logits, axis=-1)
    keep = np.ones(len(ids), dtype=bool)
    keep[1:] = ids[1:] != ids[:-1]
    return int(sizes[ids[keep]].sum())


def last_dim(port: Port) -> int | None:
    """The static size of a port's last axis, if any."""
    return port.shape[-1] if port.shape else None
