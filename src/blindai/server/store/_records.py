"""The two kinds of store entry, and their metadata as written and as read back.

An entry's metadata is a CBOR map; what is read back passed authentication, so a field that is
missing or mistyped means an entry written by other code (another version, a bug), and the
entry is refused (:class:`EntryRefused`), never half-read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cbor2

__all__ = [
    "EntryRefused",
    "StoredKey",
    "StoredModel",
    "key_meta",
    "key_record",
    "model_meta",
    "model_record",
]


@dataclass(frozen=True, kw_only=True)
class StoredModel:
    """A model as kept in the store."""

    model_id: str
    name: str | None
    owner: str | None
    """The key id of the uploader; None when access control was off."""
    public: bool
    hash: bytes
    """SHA-256 of ``model``."""
    uploaded_ns: int
    """Upload time, nanoseconds since the epoch (orders run-without-id)."""
    optimize: bool
    model: bytes = field(repr=False)
    pipeline: bytes | None = field(default=None, repr=False)
    """The pipeline uploaded with the model, as its 0.6 wire CBOR (``Pipeline.to_wire()``)."""
    version: int = 1
    """Its number among the uploads of its name (the Open Inference Protocol's version)."""
    settings: Mapping[str, int] = field(default_factory=dict)
    """The run settings given at upload (``ModelSettings`` fields; empty: the server's). An
    entry written before they were kept has none."""


@dataclass(frozen=True, kw_only=True)
class StoredKey:
    """An API-key record: the key itself is never kept, only its keyed hash."""

    key_id: str
    name: str
    key_hash: bytes
    created_ns: int


class EntryRefused(Exception):
    """One entry cannot be loaded (the reason names no content)."""


def model_meta(entry: StoredModel) -> tuple[bytes, list[bytes]]:
    """The metadata of a model entry, and its payload: the model, then its pipeline."""
    meta = {
        "id": entry.model_id,
        "name": entry.name,
        "owner": entry.owner,
        "public": entry.public,
        "hash": entry.hash,
        "uploaded_ns": entry.uploaded_ns,
        "optimize": entry.optimize,
        "pipeline_size": None if entry.pipeline is None else len(entry.pipeline),
        "version": entry.version,
        "settings": dict(entry.settings),
    }
    parts = [entry.model] if entry.pipeline is None else [entry.model, entry.pipeline]
    return cbor2.dumps(meta), parts


def key_meta(record: StoredKey) -> bytes:
    """The metadata of an API-key entry (it has no payload)."""
    meta = {
        "id": record.key_id,
        "name": record.name,
        "key_hash": record.key_hash,
        "created_ns": record.created_ns,
    }
    return cbor2.dumps(meta)


def model_record(meta: dict[str, Any], payload: bytes) -> StoredModel:
    """The model entry of authenticated ``meta`` and ``payload`` (EntryRefused: malformed)."""
    digest = _get(meta, "hash", bytes)
    pipeline_size = _get(meta, "pipeline_size", (int, type(None)))
    pipeline = None
    if pipeline_size is not None:
        if not 0 <= pipeline_size <= len(payload):
            raise EntryRefused("metadata field pipeline_size is out of range")
        cut = len(payload) - pipeline_size
        payload, pipeline = payload[:cut], payload[cut:]
    if hashlib.sha256(payload).digest() != digest:
        raise EntryRefused("model bytes do not match their hash")
    return StoredModel(
        model_id=_get(meta, "id", str),
        name=_get(meta, "name", (str, type(None))),
        owner=_get(meta, "owner", (str, type(None))),
        public=_get(meta, "public", bool),
        hash=digest,
        uploaded_ns=_get(meta, "uploaded_ns", int),
        optimize=_get(meta, "optimize", bool),
        model=payload,
        pipeline=pipeline,
        version=_get(meta, "version", int),
        settings=_settings(meta),
    )


def key_record(meta: dict[str, Any]) -> StoredKey:
    """The API-key entry of authenticated ``meta`` (EntryRefused: malformed)."""
    return StoredKey(
        key_id=_get(meta, "id", str),
        name=_get(meta, "name", str),
        key_hash=_get(meta, "key_hash", bytes),
        created_ns=_get(meta, "created_ns", int),
    )


def _get(meta: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = meta.get(name)
    # bool is an int: a flag where a number belongs (or the reverse) is mistyped too
    wrong_bool = isinstance(value, bool) and kind is not bool
    if not isinstance(value, kind) or wrong_bool:
        raise EntryRefused(f"metadata field {name} is missing or mistyped")
    return value


def _settings(meta: dict[str, Any]) -> dict[str, int]:
    settings = meta.get("settings", {})  # absent from entries written before they were kept
    if not isinstance(settings, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
        for k, v in settings.items()
    ):
        raise EntryRefused("metadata field settings is mistyped")
    return settings
