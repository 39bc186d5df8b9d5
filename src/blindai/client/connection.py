"""Connection: upload, run, predict and delete over the attested channel."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from blindai import errors
from blindai._documents import loads_cbor
from blindai.attestation import Verifier
from blindai.attestation.claims import VerifiedClaims
from blindai.attestation.policy import Policy
from blindai.client._access import ApiKeyInfo, NewApiKey, check_api_key, decode_key
from blindai.client._attest import Attested, attest_server
from blindai.client._http11 import DEFAULT_MAX_BODY
from blindai.client._peers import (
    AttestationCache,
    AttestationStats,
    PeerAttestation,
    PeerGate,
    VerifyOptions,
)
from blindai.client._ports import PortRole, no_route
from blindai.client._tensors import PredictResponse, Tensor, to_wire_tensors
from blindai.client._transport import AttestedTlsTransport, HttpResponse, PlainTransport
from blindai.client._upload import model_source, upload_body
from blindai.errors import ConfigurationError, ProtocolError, ServerError
from blindai.pipeline.bundle import Pipeline
from blindai.pipeline.results import PipelineResult, result_from_wire
from blindai.protocol import codec, streaming
from blindai.protocol.names import ERROR_HEADER
from blindai.protocol.replication import (
    EXPORT_PATH,
    MODELS_PATH,
    ExportedModel,
    ListedModel,
    decode_export,
    decode_models,
)

if TYPE_CHECKING:
    from blindai.attestation._collateral import CollateralSource
    from blindai.attestation._kds import SnpCertificateSource
    from blindai.attestation.nvidia_gpu import NvidiaGpuClaims, NvidiaGpuVerifier

__all__ = [
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


def _error_class(name: str | None, status: int) -> type[ServerError]:
    """The class the server named in ``X-BlindAI-Error``, else the one its status belongs to.

    Servers without that header (the original BlindAI server) are mapped by status alone.
    """
    family = [
        cls
        for cls in vars(errors).values()  # in definition order: a bare 404 is ModelNotFound
        if isinstance(cls, type) and issubclass(cls, ServerError)
    ]
    for cls in family:
        if cls.__name__ == name:
            return cls
    return next(
        (c for c in family if c is not ServerError and c.http_status == status), ServerError
    )


_MAX_SERVER_TEXT = 500
"""Characters of a server's error message kept in the exception (the CLI prints one line)."""


def _server_text(text: str) -> str:
    """A server's message as one bounded line: no newline, no terminal control sequence."""
    line = "".join(c if c.isprintable() else " " for c in text[:_MAX_SERVER_TEXT])
    return line + (" [...]" if len(text) > _MAX_SERVER_TEXT else "")


def _error_text(resp: HttpResponse) -> str:
    """The message of an error answer: a body that is one CBOR text string and nothing else
    (our routes, the original server), else the body's start as text (the connection layer
    answers in plain text, whose first letter reads as a CBOR string's head)."""
    body = bytes(resp.body)
    if not resp.headers.get("content-type", "").startswith("text/"):
        try:
            msg = loads_cbor(body)  # maybe from a server not verified yet (GET /attestation)
        except Exception:
            msg = None
        if isinstance(msg, str) and len(cbor2.dumps(msg)) == len(body):  # nothing after it
            return msg
    return body[: _MAX_SERVER_TEXT + 1].decode("utf-8", "replace")


def _raise_for(resp: HttpResponse, what: str) -> None:
    if 200 <= resp.status < 300:
        return
    cls = _error_class(resp.headers.get(ERROR_HEADER.lower()), resp.status)
    raise cls(f"{what}: {_server_text(_error_text(resp))}", status_code=resp.status)


def _check_route(transport: AttestedTlsTransport, resp: HttpResponse, path: str) -> None:
    """A 404 or 405 that our routes did not write (they answer in CBOR): no such route here."""
    if resp.status in (404, 405) and not resp.headers.get("content-type", "").startswith(
        "application/cbor"
    ):
        raise no_route(transport.port, transport.role, path)


def _file_bytes(value: bytes | str | os.PathLike[str], what: str) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    try:
        return Path(value).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {what} {value}: {exc.strerror}") from exc


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
        _check_route(self._management, resp, "/upload")
        _raise_for(resp, "upload")
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
        _check_route(self._attested, resp, "/run")
        _raise_for(resp, "run")
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
        ``text="..."``, ``image=`` (PNG/JPEG bytes or path) or ``audio=`` (WAV bytes or path).
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
        _check_route(self._attested, resp, "/run")
        _raise_for(resp, "run")
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
        _check_route(self._management, resp, "/delete")
        _raise_for(resp, "delete")

    def list_models(self) -> list[ListedModel]:
        """The models this server (the replica reached) holds that this key may see, oldest
        first: its own and public ones (every model for the admin key or on an open server),
        with their owner's key name, visibility and upload time."""
        resp = self._management.request("GET", MODELS_PATH)
        _check_route(self._management, resp, MODELS_PATH)
        _raise_for(resp, "list models")
        return decode_models(resp.body)

    def create_key(self, name: str) -> NewApiKey:
        """Create a tenant API key (admin key only); its ``key`` is shown this once."""
        resp = self._management.request("POST", "/keys/create", codec.dumps({"name": name}))
        _raise_for(resp, "create key")
        created = decode_key(codec.loads(resp.body, what="new key"))
        if not isinstance(created, NewApiKey):
            raise ProtocolError("the server did not return the new key")
        return created

    def list_keys(self) -> list[ApiKeyInfo]:
        """The tenant API keys (admin key only): names, ids, creation times."""
        resp = self._management.request("GET", "/keys")
        _raise_for(resp, "list keys")
        reply = codec.loads(resp.body, what="key list")
        if not isinstance(reply, list):
            raise ProtocolError("the key list must be a list")
        return [decode_key(doc) for doc in reply]

    def revoke_key(self, name: str) -> ApiKeyInfo:
        """Revoke a tenant API key (admin key only); the models it uploaded stay."""
        resp = self._management.request("POST", "/keys/revoke", codec.dumps({"name": name}))
        _raise_for(resp, "revoke key")
        return decode_key(codec.loads(resp.body, what="revoked key"))

    def export_model(self, model_id: str) -> ExportedModel:
        """A model's bytes, name, optimisation setting and pipeline, as uploaded: for
        :func:`~blindai.client.replicas.sync_models`. The server must allow it
        (``--allow-model-export``); the bytes must hash to the model's SHA-256."""
        resp = self._management.request("POST", EXPORT_PATH, codec.dumps({"model_id": model_id}))
        _check_route(self._management, resp, EXPORT_PATH)
        _raise_for(resp, "export")
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


def connect(
    addr: str,
    unattested_server_port: int = PortRole.UNATTESTED.usual_port,
    attested_server_port: int = PortRole.ATTESTED.usual_port,
    model_management_port: int = PortRole.MANAGEMENT.usual_port,
    hazmat_manifest_path: str | os.PathLike[str] | None = None,
    hazmat_http_on_unattested_port: bool = False,
    simulation_mode: bool = False,
    *,
    policy: Policy | None = None,
    verifier: Verifier | None = None,
    collateral_fetcher: CollateralSource | None = None,
    snp_certificate_source: SnpCertificateSource | None = None,
    gpu_verifier: NvidiaGpuVerifier | None = None,
    nonce: bool = False,
    attestation_cache: AttestationCache | None = None,
    keep_alive: bool = True,
    timeout: float = 300.0,
    max_response_bytes: int = DEFAULT_MAX_BODY,
    simulation_option: str = "simulation_mode=True",
    api_key: str | None = None,
) -> Connection:
    """Verify the server by remote attestation, then open the attested connection.

    Each TCP connection to the attested ports, the first and every later one (reconnects,
    retries, one per request with ``keep_alive=False``), is verified before anything is sent
    on it: its first request is ``GET /attestation``, whose evidence must satisfy the policy
    and bind the certificate of that very TLS connection. Verified replicas are cached by
    certificate hash (``attestation_cache``, default: one per connection, 5 minutes), so a
    replica behind a load balancer is verified once and an unseen one always; a connection that
    fails is closed before any request and the error is raised (counted in
    ``Connection.attestation_stats``). ``nonce=True`` asks each replica for evidence over a
    fresh random nonce (report data: SHA-256(certificate) then SHA-256(nonce)), so replayed
    evidence is refused. A server without ``/attestation`` is verified on its unattested port
    as in BlindAI 0.6, and then only its certificate is accepted.

    Outside simulation mode a policy (``hazmat_manifest_path``: a TOML policy file, or
    ``policy``) names what the evidence must show. ``simulation_mode=True`` accepts a
    simulation server and warns
    (:class:`~blindai.attestation.simulation.SimulationModeWarning`): it protects nothing;
    ``verifier=UnsafeSimulationVerifier(expected_measurement=...)`` then pins the simulated
    measurement. The unattested port carries only public data verified here, over plain HTTP
    (``hazmat_http_on_unattested_port`` is accepted for compatibility).
    ``verifier`` replaces the verifier that trusts the embedded vendor roots (a private
    PKI, or tests); the policy still applies.
    ``collateral_fetcher`` (SGX, TDX) supplies the collateral (TCB Info, QE Identity, CRLs)
    when the server sends none, e.g. a TDX server started without ``--pccs-url``:
    ``collateral_fetcher=PcsCollateralSource.online()`` (Intel's PCS) or
    ``PcsCollateralSource.online("https://pccs.example:8081")``.
    ``snp_certificate_source`` (SEV-SNP) supplies the VCEK, ASK and ARK when the server sends
    no certificates (a host with no certificate table):
    ``snp_certificate_source=KdsCertificateSource.online()`` (AMD's KDS). Nothing is fetched by
    the client unless a source is given; what it fetches is verified like the server's.
    ``timeout`` (seconds) bounds connecting and each answer: a whole response must arrive
    within it plus one second per 64 KiB (:class:`~blindai.errors.RequestTimeout`);
    ``max_response_bytes`` caps one response body (1 GiB by default). ``simulation_option``
    is how a refusal of a simulation server names the opt-in: wrappers with their own option
    (the CLI's ``--simulation``) pass theirs.
    A port that serves another of the three roles raises :class:`~blindai.errors.WrongPort`.
    A policy with an ``[nvidia_gpu]`` section requires each replica's GPU: its report, read
    with ``GET /gpu-evidence`` on the same connection, must verify (``gpu_verifier``, default
    NVIDIA's pinned roots) and answer the nonce derived from the attested certificate, before
    anything else is sent; its claims are ``Connection.gpu_claims``.
    ``api_key`` (a server with access control): sent as ``Authorization: Bearer KEY`` on each
    attested connection once it is verified, never on the unattested port nor with the
    evidence requests that verify a connection.
    """
    del hazmat_http_on_unattested_port
    if api_key is not None:
        check_api_key(api_key)
    if policy is None and hazmat_manifest_path is not None:
        policy = Policy.from_file(hazmat_manifest_path)
    host = addr.split("://", 1)[-1].rstrip("/")
    limit = max_response_bytes
    options = VerifyOptions(
        simulation_mode=simulation_mode,
        policy=policy,
        verifier=verifier,
        collateral_fetcher=collateral_fetcher,
        snp_certificate_source=snp_certificate_source,
        gpu_verifier=gpu_verifier,
        simulation_option=simulation_option,
    )

    def legacy() -> Attested:
        plain = PlainTransport(host, unattested_server_port, timeout, max_response_bytes=limit)
        try:
            return attest_server(
                plain,
                simulation_mode=simulation_mode,
                policy=policy,
                verifier=verifier,
                collateral_fetcher=collateral_fetcher,
                snp_certificate_source=snp_certificate_source,
                simulation_option=simulation_option,
            )
        finally:
            plain.close()

    gate = PeerGate(options, cache=attestation_cache, nonce=nonce, legacy=legacy)

    def transport(port: int, role: PortRole) -> AttestedTlsTransport:
        return AttestedTlsTransport(
            host,
            port,
            timeout,
            gate=gate,
            role=role,
            max_response_bytes=limit,
            keep_alive=keep_alive,
            api_key=api_key,
        )

    attested = transport(attested_server_port, PortRole.ATTESTED)
    start = time.perf_counter()
    try:
        first = attested.open()
    except BaseException:
        attested.close()
        raise
    elapsed = time.perf_counter() - start
    management = transport(model_management_port, PortRole.MANAGEMENT)
    return Connection(attested, management, first, elapsed)
