"""What replicas need to be kept alike, on the management port: the model list and export.

==================  ==================  =====================================================
request             body (CBOR)         reply (CBOR)
==================  ==================  =====================================================
``GET /models``     none                ``[{model_id, name, hash, size, owner, public,
                                        uploaded_ns}]``, oldest first: the models the
                                        caller's API key may list (every model on a server
                                        without access control)
``POST /export``    ``{model_id}``      ``{model_id, model, model_name, hash, optimize,
                                        pipeline}``: the model's bytes as uploaded, its name,
                                        whether it was uploaded with optimisation, and its
                                        pipeline (the ``/upload`` map) or null
==================  ==================  =====================================================

``/export`` answers 403 unless the server was started with ``--allow-model-export`` (it keeps
each model's bytes for that) and, with access control, unless the model is the caller's; the
client (``blindai sync``) uploads what it exports to another replica it has verified, so a
model travels only between replicas that a verifying client trusts, inside attested TLS.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import cbor2

from blindai._documents import loads_cbor
from blindai.errors import ProtocolError

__all__ = [
    "EXPORT_PATH",
    "MODELS_PATH",
    "ExportedModel",
    "ListedModel",
    "decode_export",
    "decode_models",
    "encode_export",
    "encode_models",
    "export_frame",
]

MODELS_PATH = "/models"
EXPORT_PATH = "/export"


@dataclass(frozen=True)
class ListedModel:
    """One model a server holds: its id there, name, SHA-256 of its bytes, size, and who
    uploaded it (a key's name, a key id once revoked, None on an open server), whether every
    key may run it, and when it was uploaded (ns since the epoch)."""

    model_id: str
    name: str | None
    hash: bytes
    size: int
    owner: str | None = None
    public: bool = False
    uploaded_ns: int = 0

    @property
    def uploaded(self) -> datetime:
        """The upload time (UTC)."""
        return datetime.fromtimestamp(self.uploaded_ns / 1e9, tz=timezone.utc)


@dataclass(frozen=True)
class ExportedModel:
    """A model as it was uploaded: what ``/upload`` needs to make another replica hold it."""

    model_id: str
    model: bytes
    name: str | None
    hash: bytes
    optimize: bool
    pipeline: dict[str, Any] | None


def _loads(body: bytes | bytearray, what: str) -> Any:
    """A reply as CBOR from another party (:func:`blindai._documents.loads_cbor`): plain cbor2
    built a map of integer keys sharing one hash in quadratic time (a reply of a few MB held
    the client for hours), and reduced a rational tag's terms by a gcd quadratic in their size."""
    try:
        return loads_cbor(body)
    except Exception as exc:  # cbor2 raises several types on garbage
        raise ProtocolError(f"{what} is not valid CBOR") from exc


def _field(doc: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ProtocolError(f"{what} has no valid {name}")
    return value


def _count(doc: dict[str, Any], name: str, what: str) -> int:
    """A size or a time in ns: an integer from 0 below 2**63 (a time past that made
    :attr:`ListedModel.uploaded` raise ValueError: the year is out of range)."""
    value: int = _field(doc, name, int, what)
    if not 0 <= value < 1 << 63:
        raise ProtocolError(f"{what} has no valid {name} (out of range)")
    return value


def encode_models(models: list[ListedModel]) -> bytes:
    """The reply of ``GET /models``."""
    return cbor2.dumps(
        [
            {
                "model_id": m.model_id,
                "name": m.name,
                "hash": m.hash,
                "size": m.size,
                "owner": m.owner,
                "public": m.public,
                "uploaded_ns": m.uploaded_ns,
            }
            for m in models
        ]
    )


def decode_models(body: bytes | bytearray) -> list[ListedModel]:
    """Parse the reply of ``GET /models`` strictly."""
    doc = _loads(body, "the model list")
    if not isinstance(doc, list) or not all(isinstance(d, dict) for d in doc):
        raise ProtocolError("the model list must be a list of maps")
    what = "a model list entry"
    return [
        ListedModel(
            model_id=_field(d, "model_id", str, what),
            name=_field(d, "name", (str, type(None)), what),
            hash=_field(d, "hash", bytes, what),
            size=_count(d, "size", what),
            owner=_field(d, "owner", (str, type(None)), what) if "owner" in d else None,
            public=_field(d, "public", bool, what) if "public" in d else False,
            uploaded_ns=_count(d, "uploaded_ns", what) if "uploaded_ns" in d else 0,
        )
        for d in doc
    ]


def _bytes_head(size: int) -> bytes:
    """The CBOR head of a byte string of ``size`` bytes (major type 2), written by cbor2."""
    out = io.BytesIO()
    cbor2.CBOREncoder(out).encode_length(2, size)
    return out.getvalue()


def export_frame(model: ExportedModel, size: int) -> tuple[bytes, bytes]:
    """The reply of ``POST /export`` around the model's ``size`` bytes: ``(head, tail)``, so that
    a server can send the bytes piece by piece (``model.model`` is not read)."""
    head = b"\xa6" + cbor2.dumps("model_id") + cbor2.dumps(model.model_id)
    rest = {
        "model_name": model.name,
        "hash": model.hash,
        "optimize": model.optimize,
        "pipeline": model.pipeline,
    }
    tail = b"".join(cbor2.dumps(k) + cbor2.dumps(v) for k, v in rest.items())
    return head + cbor2.dumps("model") + _bytes_head(size), tail


def encode_export(model: ExportedModel) -> bytes:
    """The reply of ``POST /export`` (the map ``{model_id, model, model_name, hash, optimize,
    pipeline}``)."""
    head, tail = export_frame(model, len(model.model))
    return head + model.model + tail


def decode_export(body: bytes | bytearray) -> ExportedModel:
    """Parse the reply of ``POST /export`` strictly (the bytes are checked by their hash
    when uploaded again: the replica that receives them computes it)."""
    doc = _loads(body, "the exported model")
    if not isinstance(doc, dict):
        raise ProtocolError("the exported model must be a CBOR map")
    what = "the exported model"
    return ExportedModel(
        model_id=_field(doc, "model_id", str, what),
        model=_field(doc, "model", bytes, what),
        name=_field(doc, "model_name", (str, type(None)), what),
        hash=_field(doc, "hash", bytes, what),
        optimize=_field(doc, "optimize", bool, what),
        pipeline=_field(doc, "pipeline", (dict, type(None)), what),
    )
