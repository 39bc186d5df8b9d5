"""Connection: upload, run, predict and delete over the attested channel."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from blindai.attestation.claims import VerifiedClaims
from blindai.client._access import ApiKeyInfo, NewApiKey, decode_key
from blindai.client._answers import check_route, raise_for
from blindai.client._peers import (
    AttestationCache,
    AttestationStats,
    PeerAttestation,
)
from blindai.client._tensors import PredictResponse, Tensor, to_wire_tensors
from blindai.client._transport import AttestedTlsTransport, HttpResponse
from blindai.client._upload import model_source, upload_body
from blindai.errors import ConfigurationError, ProtocolError
from blindai.localfiles import read_small
from blindai.pipeline.bundle import Pipeline
from blindai.pipeline.results import PipelineResult, result_from_wire
from blindai.protocol import codec, streaming
from blindai.protocol.replication import (
    EXPORT_PATH,
    MODELS_PATH,
    ExportedModel,
    ListedModel,
    decode_export,
    decode_models,
)

if TYPE_CHECKING:
    from blindai.attestation.nvidia_gpu import NvidiaGpuClaims
    from blindai.client._connect import connect

__all__ = [
    "MAX_RAW_FILE_BYTES",
    "PROGRESS_MIN_BYTES",
    "Connection",
    "PredictResponse",
    "RunModelResponse",
    "UploadModelResponse",
    "connect",
]

PROGRESS_MIN_BYTES = 8 << 20
_SMALL_BODY = 1 << 16
"""Bodies up to this size are sent in one piece (with the request's head)."""


@dataclass(frozen=True)
class UploadModelResponse:
    """The id the server gave the model, and the SHA-256 of its bytes."""

    model_id: str
    hash: bytes


@dataclass(frozen=True)
class RunModelResponse:
    """Outputs of a run, in the model's output order."""

    output: list[Tensor]


MAX_RAW_FILE_BYTES = 64 << 20
"""Largest image or audio file :meth:`Connection.predict` reads when given its path: the
server's default ``--max-request-bytes``, past which such a server refuses the request (413).
A larger file is refused before it is read (a multi-GB file was read whole into memory, then
copied into the request); for a server that takes more, give the file's bytes instead."""


def _file_bytes(value: bytes | str | os.PathLike[str], what: str) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    # a FIFO or a device: refused, never waited on
    return read_small(
        value,
        f"{what} file",
        limit=MAX_RAW_FILE_BYTES,
        reason="more than a server takes by default (--max-request-bytes); give its bytes "
        "for a server that takes more",
    )


def _raw_input(
    inputs: Any,
    *,
    text: str | None,
    image: bytes | str | os.PathLike[str] | None,
    audio: bytes | str | os.PathLike[str] | None,
) -> tuple[str, bytes | str] | None:
    given = {k: v for k, v in (("text", text), ("image", image), ("audio", audio)) if v is not None}
    if not given:
        if inputs is None:
            raise ConfigurationError("give inputs (tensors), or text=, image= or audio=")
        return None
    if len(given) > 1 or inputs is not None:
        raise ConfigurationError("give one of inputs, text=, image= and audio=")
    kind, value = next(iter(given.items()))
    if kind == "text":
        if not isinstance(value, str):
            raise ConfigurationError("text must be a str")
        return kind, value
    return kind, _file_bytes(value, kind)


def _post(
    transport: AttestedTlsTransport, path: str, parts: list[bytes | memoryview]
) -> HttpResponse:
    """POST a body given in pieces: joined when small, else each piece sent from its buffer
    (a tensor's bytes go from the caller's array to the socket)."""
    if len(parts) == 1 and isinstance(parts[0], bytes):
        return transport.request("POST", path, parts[0])  # a message with no large buffer
    length = sum(memoryview(p).nbytes for p in parts)
    if length <= _SMALL_BODY:
        return transport.request("POST", path, b"".join(parts))
    return transport.request("POST", path, lambda: iter(parts), body_length=length)


class Connection:
    """An attested connection to a BlindAI server, or to replicas behind one address.

    Every TCP connection it opens (the first, a reconnect, one per request without keep-alive)
    is verified before a request is sent on it: see :func:`connect`. Use as a context manager
    or close(); after ``close()`` every request raises
    :class:`~blindai.errors.ConfigurationError`.
    """

    def __init__(
        self,
        attested: AttestedTlsTransport,
        management: AttestedTlsTransport,
        first: PeerAttestation,
        attestation_seconds: float,
    ) -> None:
        self._attested = attested
        self._management = management
        self._gate = attested.gate
        self.claims: VerifiedClaims = first.claims
        """The verified claims of the first replica's evidence (the server's, when alone)."""
        self.gpu_claims: NvidiaGpuClaims | None = first.gpu_claims
        """The verified claims of that replica's GPU, when the policy required one."""
        self.server_info: dict[str, Any] = first.server_info
        """That replica's ``/info`` (empty for servers without that extension)."""
        self.attestation_seconds = attestation_seconds
        """Wall time spent opening the first connection and verifying it in connect()."""
        self.certificate: bytes = first.cert_der
        """The first replica's attested TLS certificate (DER): pin it to use other clients,
        e.g. tritonclient, with that replica (behind a balancer, each has its own)."""

    @property
    def attestation_stats(self) -> AttestationStats:
        """Replicas verified, connections admitted from the cache, connections refused."""
        return self._gate.stats

    @property
    def replicas(self) -> list[PeerAttestation]:
        """The replicas verified for this connection's settings whose verification has not
        expired (from its attestation cache), oldest first."""
        return self._gate.peers()

    @property
    def attestation_cache(self) -> AttestationCache:
        """The cache of verified replicas this connection uses (give it to other connects)."""
        return self._gate.cache

    @property
    def certificate_pem(self) -> str:
        """The attested TLS certificate in PEM, for ``ssl.create_default_context(cadata=...)``."""
        return (
            x509.load_der_x509_certificate(self.certificate)
            .public_bytes(serialization.Encoding.PEM)
            .decode("ascii")
        )

    def upload_model(
        self,
        model: Any,
        model_name: str | None = None,
        optimize: bool = True,
        *,
        pipeline: Pipeline | str | os.PathLike[str] | None = None,
        public: bool = False,
        max_batch_size: int | None = None,
        max_queue_delay_us: int | None = None,
        max_concurrent_runs: int | None = None,
        intra_op_threads: int | None = None,
    ) -> UploadModelResponse:
        """Upload an ONNX model (path, bytes or ModelProto); returns its id and hash.

        A path is streamed from the file (never read into memory whole).

        ``pipeline`` (a :class:`~blindai.pipeline.Pipeline`, or a folder holding
        ``pipeline.toml``) makes the model take raw text, images or audio in :meth:`predict`;
        the server checks it against the model and refuses it (400) when it cannot work.
        ``public=True`` (access control): every valid API key may run it, only its uploader
        may delete it.

        How the model runs, each left to the server's setting when None: ``max_batch_size``
        (rows of concurrent requests run together; the server refuses it, 400, for a model
        that cannot be batched), ``max_queue_delay_us`` (longest wait for batch partners),
        ``max_concurrent_runs`` and ``intra_op_threads`` (onnxruntime threads per run).
        """
        source = model_source(model)
        fields: dict[str, Any] = {"model_name": model_name, "optimize": optimize}
        settings = {
            key: value
            for key, value in (
                ("max_batch_size", max_batch_size),
                ("max_queue_delay_us", max_queue_delay_us),
                ("max_concurrent_runs", max_concurrent_runs),
                ("intra_op_threads", intra_op_threads),
            )
            if value is not None
        }
        if settings:
            fields["settings"] = settings
        if pipeline is not None:
            bundle = pipeline if isinstance(pipeline, Pipeline) else Pipeline.from_dir(pipeline)
            fields["pipeline"] = bundle.to_wire()
        if public:
            fields["public"] = True
        body = upload_body(fields, source, progress=source.length >= PROGRESS_MIN_BYTES)
        if body.length <= _SMALL_BODY:
            whole = b"".join(body.chunks())
            resp = self._management.request("POST", "/upload", whole)
        else:
            resp = self._management.request("POST", "/upload", body.chunks, body_length=body.length)
        check_route(self._management, resp, "/upload")
        raise_for(resp, "upload")
        reply = codec.decode_map(resp.body, what="upload reply")
        model_id, digest = reply.get("model_id"), reply.get("hash")
        if not isinstance(model_id, str) or not isinstance(digest, bytes | list):
            raise ProtocolError("upload reply must hold model_id and hash")
        try:
            return UploadModelResponse(model_id, bytes(digest))
        except (TypeError, ValueError):  # a list of other than byte values
            raise ProtocolError("upload reply's hash must be bytes") from None

    def run_model(
        self,
        model_id: str = "",
        model_hash: str = "",
        input_tensors: Any = None,
        dtypes: Any = None,
        shapes: Any = None,
    ) -> RunModelResponse:
        """Run a model by id (or name) or by hash on the given inputs.

        With neither, the server runs its most recently uploaded model.
        """
        for what, given in (("model_id", model_id), ("model_hash", model_hash)):
            if not isinstance(given, str):
                raise ConfigurationError(
                    f"{what} must be a string (got {type(given).__name__}); the inputs go in "
                    "input_tensors="
                )
        if model_id and model_hash:
            raise ConfigurationError("give at most one of model_id and model_hash")
        if input_tensors is None:
            raise ConfigurationError("input_tensors is required")
        tensors = to_wire_tensors(input_tensors, dtypes, shapes)
        message = {
            "model_id": model_id,
            "model_hash": model_hash,
            "inputs": [codec.encode_tensor(t) for t in tensors],
        }
        if all(type(t.bytes_data) is bytes for t in tensors):  # small tensors: one cbor2 call
            resp = self._attested.request("POST", "/run", cbor2.dumps(message))
        else:
            resp = _post(self._attested, "/run", streaming.dumps_parts(message))
        check_route(self._attested, resp, "/run")
        raise_for(resp, "run")
        # the outputs' bytes stay in the reply's buffer: Tensor.as_numpy() copies them anyway
        reply = codec.decode_map(resp.body, what="run reply", views=True)
        outputs = codec.decode_tensors(reply.get("outputs"), what="outputs")
        return RunModelResponse([Tensor(t) for t in outputs])

    @overload
    def predict(self, model_id_or_name: str, inputs: Any) -> PredictResponse: ...

    @overload
    def predict(
        self,
        model_id_or_name: str,
        inputs: None = None,
        *,
        text: str | None = None,
        image: bytes | str | os.PathLike[str] | None = None,
        audio: bytes | str | os.PathLike[str] | None = None,
    ) -> PredictResponse | PipelineResult: ...

    def predict(
        self,
        model_id_or_name: str,
        inputs: Any = None,
        *,
        text: str | None = None,
        image: bytes | str | os.PathLike[str] | None = None,
        audio: bytes | str | os.PathLike[str] | None = None,
    ) -> PredictResponse | PipelineResult:
        """Run a model; its outputs as numpy arrays, in order (``.output``) and by name.

        Given tensors, the answer is a :class:`~blindai.PredictResponse` (so typed for type
        checkers too).

        ``predict(...).output[0].argmax()``, ``predict(...)["probabilities"]``.

        For a model uploaded with a pipeline, give the raw input instead of tensors:
        ``text="..."``, ``image=`` (PNG/JPEG bytes or path) or ``audio=`` (WAV bytes or path;
        a path names a regular file of at most :data:`MAX_RAW_FILE_BYTES`, else
        ConfigurationError before it is read).
        The server preprocesses it and returns the pipeline's typed result
        (:class:`~blindai.pipeline.Classification`, :class:`~blindai.pipeline.Embedding` or
        :class:`~blindai.pipeline.Transcript`), or the outputs when the pipeline has no
        output step.
        """
        raw = _raw_input(inputs, text=text, image=image, audio=audio)
        if raw is None:
            response = self.run_model(model_id=model_id_or_name, input_tensors=inputs)
            return PredictResponse(
                (t.node_name or str(i), t.as_numpy()) for i, t in enumerate(response.output)
            )
        return self._predict_raw(model_id_or_name, *raw)

    def _predict_raw(
        self, model: str, kind: str, value: bytes | str
    ) -> PredictResponse | PipelineResult:
        body = codec.dumps({"model_id": model, "model_hash": "", kind: value})
        resp = self._attested.request("POST", "/run", body)
        check_route(self._attested, resp, "/run")
        raise_for(resp, "run")
        reply = codec.decode_map(resp.body, what="run reply")
        if "result" in reply:
            return result_from_wire(reply["result"])
        outputs = codec.decode_tensors(reply.get("outputs"), what="outputs")
        return PredictResponse(
            (t.info.node_name or str(i), t.as_numpy()) for i, t in enumerate(outputs)
        )

    def delete_model(self, model_id: str) -> None:
        """Delete a model from the server."""
        body = codec.dumps({"model_id": model_id})
        resp = self._management.request("POST", "/delete", body)
        check_route(self._management, resp, "/delete")
        raise_for(resp, "delete")

    def list_models(self) -> list[ListedModel]:
        """The models this server (the replica reached) holds that this key may see, oldest
        first: its own and public ones (every model for the admin key or on an open server),
        with their owner's key name, visibility and upload time."""
        resp = self._management.request("GET", MODELS_PATH)
        check_route(self._management, resp, MODELS_PATH)
        raise_for(resp, "list models")
        return decode_models(resp.body)

    def create_key(self, name: str) -> NewApiKey:
        """Create a tenant API key (admin key only); its ``key`` is shown this once."""
        resp = self._management.request("POST", "/keys/create", codec.dumps({"name": name}))
        raise_for(resp, "create key")
        created = decode_key(codec.loads(resp.body, what="new key"))
        if not isinstance(created, NewApiKey):
            raise ProtocolError("the server did not return the new key")
        return created

    def list_keys(self) -> list[ApiKeyInfo]:
        """The tenant API keys (admin key only): names, ids, creation times."""
        resp = self._management.request("GET", "/keys")
        raise_for(resp, "list keys")
        reply = codec.loads(resp.body, what="key list")
        if not isinstance(reply, list):
            raise ProtocolError("the key list must be a list")
        return [decode_key(doc) for doc in reply]

    def revoke_key(self, name: str) -> ApiKeyInfo:
        """Revoke a tenant API key (admin key only); the models it uploaded stay."""
        resp = self._management.request("POST", "/keys/revoke", codec.dumps({"name": name}))
        raise_for(resp, "revoke key")
        return decode_key(codec.loads(resp.body, what="revoked key"))

    def export_model(self, model_id: str) -> ExportedModel:
        """A model's bytes, name, optimisation setting and pipeline, as uploaded: for
        :func:`~blindai.client.replicas.sync_models`. The server must allow it
        (``--allow-model-export``); the bytes must hash to the model's SHA-256."""
        resp = self._management.request("POST", EXPORT_PATH, codec.dumps({"model_id": model_id}))
        check_route(self._management, resp, EXPORT_PATH)
        raise_for(resp, "export")
        exported = decode_export(resp.body)
        if hashlib.sha256(exported.model).digest() != exported.hash:
            raise ProtocolError("the exported model's bytes do not hash to its SHA-256")
        return exported

    def close(self) -> None:
        """Close the connections; the connection cannot be used afterwards."""
        self._attested.close()
        self._management.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def __getattr__(name: str) -> Any:
    """``connect``, which this module exported before it moved to ``_connect``; imported on
    first use (PEP 562): ``_connect`` imports this module for :class:`Connection`."""
    if name == "connect":
        from blindai.client._connect import connect

        return connect
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
