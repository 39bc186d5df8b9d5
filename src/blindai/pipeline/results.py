"""Typed results of a pipeline's output step, and their wire form (CBOR or JSON maps).

Wire form, the same on the 0.6 (CBOR) and v2 (JSON) protocols::

    {"kind": "labels", "labels": [{"label": "cat", "score": 0.91, "index": 3}, ...]}
    {"kind": "embedding", "embedding": [0.01, -0.2, ...]}
    {"kind": "transcript", "text": "hello world"}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from blindai.errors import ProtocolError
from blindai.escape import brief

__all__ = [
    "Classification",
    "Embedding",
    "Label",
    "PipelineResult",
    "Transcript",
    "result_from_wire",
]


@dataclass(frozen=True)
class Label:
    """One class: its label, its score (a probability when the step applied an activation),
    and its index in the model's output."""

    label: str
    score: float
    index: int


@dataclass(frozen=True)
class Classification:
    """The top-k labels, best first."""

    labels: tuple[Label, ...]
    kind: Literal["labels"] = "labels"

    @property
    def top(self) -> Label:
        """The best label."""
        return self.labels[0]

    def to_wire(self) -> dict[str, Any]:
        """The wire map."""
        return {
            "kind": self.kind,
            "labels": [{"label": x.label, "score": x.score, "index": x.index} for x in self.labels],
        }


@dataclass(frozen=True)
class Embedding:
    """A vector (e.g. a sentence embedding, L2-normalised when the step says so)."""

    vector: tuple[float, ...]
    kind: Literal["embedding"] = "embedding"

    def cosine(self, other: Embedding) -> float:
        """Cosine similarity with another embedding of the same size."""
        if len(self.vector) != len(other.vector):
            raise ValueError("embeddings of different sizes")
        dot = sum(a * b for a, b in zip(self.vector, other.vector, strict=True))
        na = math.sqrt(sum(a * a for a in self.vector))
        nb = math.sqrt(sum(b * b for b in other.vector))
        return dot / (na * nb) if na and nb else 0.0

    def to_wire(self) -> dict[str, Any]:
        """The wire map."""
        return {"kind": self.kind, "embedding": list(self.vector)}


@dataclass(frozen=True)
class Transcript:
    """Text decoded from the model's output (e.g. CTC speech to text)."""

    text: str
    kind: Literal["transcript"] = "transcript"

    def to_wire(self) -> dict[str, Any]:
        """The wire map."""
        return {"kind": self.kind, "text": self.text}


PipelineResult = Classification | Embedding | Transcript


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"result {what} must be a number")
    try:
        return float(value)
    except OverflowError:  # an integer past a float's range
        raise ProtocolError(f"result {what} is out of range") from None


def _label(obj: object) -> Label:
    if not isinstance(obj, Mapping):
        raise ProtocolError("result labels must be maps")
    label, index = obj.get("label"), obj.get("index")
    if not isinstance(label, str) or isinstance(index, bool) or not isinstance(index, int):
        raise ProtocolError("a result label needs a text label and an integer index")
    return Label(label, _number(obj.get("score"), "score"), index)


def result_from_wire(obj: object) -> PipelineResult:
    """Parse a result map sent by the server; ProtocolError when it is malformed."""
    if not isinstance(obj, Mapping):
        raise ProtocolError("result must be a map")
    kind = obj.get("kind")
    if kind == "labels":
        labels = obj.get("labels")
        if not isinstance(labels, list) or not labels:
            raise ProtocolError("result labels must be a non-empty list")
        return Classification(tuple(_label(x) for x in labels))
    if kind == "embedding":
        vector = obj.get("embedding")
        if not isinstance(vector, list):
            raise ProtocolError("result embedding must be a list of numbers")
        return Embedding(tuple(_number(v, "embedding") for v in vector))
    if kind == "transcript":
        text = obj.get("text")
        if not isinstance(text, str):
            raise ProtocolError("result text must be a string")
        return Transcript(text)
    raise ProtocolError(f"unknown result kind {brief(kind)}")
