"""Server settings: one typed object, built once at the entry point and passed down.

Each field is stated once, here: its name, type, default and, in the docstring under it, its
help. ``blindai serve`` takes its flags from these fields (``--max-model-bytes`` for
``max_model_bytes``; pydantic-settings builds the parser), every field can also be set by an
environment variable ``BLINDAI_<FIELD>``, and a flag given wins over the variable, which wins
over the default.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    CliImplicitFlag,
    CliSettingsSource,
    CliToggleFlag,
    SettingsConfigDict,
)

from blindai.attestation.kinds import CONFIGFS_TSM, GRAMINE, NSM, TEE_CHOICES
from blindai.errors import ConfigurationError
from blindai.escape import escaped
from blindai.pipeline.limits import PipelineLimits
from blindai.server.access.keys import parse_admin_key_sha256

if TYPE_CHECKING:  # imported where used: settings load without onnx or uvicorn
    from blindai.server.admission import AdmissionLimits
    from blindai.server.compile_guard import CompileLimits
    from blindai.server.connections import ConnectionLimits

__all__ = ["OTHER_VARIABLES", "ModelSettings", "ServerSettings", "TeeName", "unknown_variables"]

if TYPE_CHECKING:
    TeeName = str
else:  # the values of --tee, from the kind table: validated, and listed as choices
    TeeName = Literal[TEE_CHOICES]

_PORTS = ("unattested_port", "attested_port", "management_port", "grpc_port", "metrics_port")


class ModelSettings(BaseModel):
    """How one model runs, given at upload; each field left unset takes the server's setting
    of the same name."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    intra_op_threads: int | None = Field(None, ge=0, le=1024)
    """onnxruntime intra-op threads (0: one per core)."""
    max_concurrent_runs: int | None = Field(None, ge=1, le=1024)
    """Runs in flight at once."""
    max_batch_size: int | None = Field(None, ge=1, le=4096)
    """Rows run together as one batch (1: no batching); refused for a model that cannot be
    batched."""
    max_queue_delay_us: int | None = Field(None, ge=0, le=1_000_000)
    """Longest wait for batch partners, in microseconds."""


class ServerSettings(BaseSettings):
    """Everything ``blindai serve`` can be told; environment variables use the prefix BLINDAI_."""

    model_config = SettingsConfigDict(
        env_prefix="BLINDAI_",
        frozen=True,
        use_attribute_docstrings=True,
        cli_kebab_case=True,
        cli_hide_none_type=True,
        cli_avoid_json=True,
    )

    host: str | None = None
    """Address the unattested, attested, management and gRPC ports listen on. Unset: 0.0.0.0,
    but 127.0.0.1 in simulation (a simulation protects nothing: exposing it takes an explicit
    --host 0.0.0.0)."""
    unattested_port: int = Field(9923, ge=0, le=65535)
    """Plain HTTP: certificate, evidence, collateral."""
    attested_port: int = Field(9924, ge=0, le=65535)
    """Attested TLS: inference (and model management for blindai-preview clients)."""
    management_port: int = Field(9925, ge=0, le=65535)
    """Attested TLS: model management (/upload, /delete)."""
    grpc_port: int = Field(9926, ge=0, le=65535)
    """Attested TLS: the Open Inference Protocol over gRPC (same certificate as the attested
    port); 0 disables it."""
    metrics_port: int = Field(0, ge=0, le=65535)
    """Plain HTTP ``GET /metrics`` bound to 127.0.0.1 only, for a scraper beside the server
    (a sidecar); 0 disables it. ``/metrics`` is always served on the management port."""
    unattested_tls_cert: Path | None = None
    """PEM certificate (chain) for HTTPS on the unattested port: an ordinary, CA-issued one
    (unset: plain HTTP)."""
    unattested_tls_key: Path | None = None
    """PEM private key for the unattested TLS certificate."""
    tee: TeeName = "auto"
    """Where evidence comes from (auto: probe the TEE devices, never simulate); simulation must
    be asked for explicitly."""
    simulation: CliToggleFlag[bool] = False
    """Run without a TEE: UNSAFE, protects nothing, for development only (same as --tee
    simulation)."""
    simulation_measurement: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    """Simulation only: the measurement (64 hex digits) the simulated evidence shows instead of
    the SHA-256 of the installed blindai sources, e.g. to stand for another build when testing
    a client's pinned measurement."""
    max_model_bytes: int = Field(1 << 30, gt=0)
    """Largest model accepted by /upload, in bytes of the model itself."""
    max_request_bytes: int = Field(64 << 20, gt=0)
    """Largest body accepted by /run and v2 inference, in bytes."""
    max_body_memory: int = Field(4 << 30, gt=0)
    """Bytes of request bodies the server holds at once, every HTTP port together (what each
    request's Content-Length declares, from before its body is read until it is answered); a
    request beyond it gets 503 at once. At least the largest upload (--max-model-bytes plus
    --max-pipeline-bytes plus 1 MiB)."""
    max_models: int = Field(64, gt=0)
    """Most models held at once; uploads beyond it are refused with 507."""
    max_models_per_key: int = Field(16, gt=0)
    """Most models one tenant's API key holds at once (access control), so that one tenant
    cannot fill the server for the others; uploads beyond it are refused with 507. The admin
    key is held to --max-models only."""
    allow_model_export: CliToggleFlag[bool] = False
    """Let ``POST /export`` on the management port give a model's bytes (and its pipeline) to a
    client syncing another replica (``blindai sync``). Off: ``/export`` answers 403."""
    require_models: Path | None = None
    """A file of SHA-256 digests (hex, one a line) of models this replica must hold: until it
    holds them all, ``/v2/health/ready`` answers 400 (not ready)."""
    require_model_count: int = Field(0, ge=0)
    """Fewest models this replica must hold before ``/v2/health/ready`` says ready."""
    keep_alive_timeout: int = Field(30, gt=0)
    """Seconds an idle client connection is kept open before the server closes it."""
    shutdown_timeout: float = Field(20.0, ge=0)
    """Seconds the server gives requests in flight to finish once told to stop (SIGTERM or
    SIGINT: it stops accepting and closes idle connections at once); then it stops. A second
    signal stops it at once."""
    max_connections: int = Field(1000, gt=0)
    """Open connections per port (the gRPC port's too, and its calls in progress), TLS
    handshakes included; at the cap the idlest HTTP connection (else the oldest TLS handshake)
    is closed to make room, and when there is none new ones are refused at once."""
    max_header_bytes: int = Field(16 << 10, ge=1 << 10)
    """Largest request line and headers of one request, in bytes (beyond: 431)."""
    max_header_count: int = Field(100, gt=0)
    """Most header fields in one request (beyond: 431)."""
    header_timeout: float = Field(10.0, gt=0)
    """Seconds for a request's headers (and a TLS handshake) to arrive; then it is closed."""
    body_timeout: float = Field(30.0, gt=0)
    """Seconds for a request body to arrive, plus one second per --body-min-rate bytes
    received; then the connection is closed."""
    body_min_rate: int = Field(64 << 10, gt=0)
    """Bytes per second a request body must keep up, after --body-timeout."""
    max_response_bytes: int = Field(64 << 20, gt=0)
    """Largest inference reply, in bytes, computed from the outputs' shapes and dtypes before
    anything is encoded (an upper bound for JSON); larger ones are refused with 422."""
    run_timeout: float = Field(30.0, gt=0)
    """Seconds an inference may take, waiting for a worker included; onnxruntime is then
    stopped (RunOptions.terminate), its worker freed, and the client gets 504."""
    max_run_memory: int = Field(1 << 30, gt=0)
    """Bytes of tensors onnxruntime may hold for all the inferences running at once (one capped
    arena, given back after each run): a run that needs more fails with 422 (503 when others
    were running). A model whose static shapes imply a larger value is refused at upload."""
    max_preprocess_memory: int = Field(4 << 30, gt=0)
    """Bytes the preprocessing of raw inputs (pipelines: image and WAV decoding, tokenization)
    may take at once, every request together: each takes its worst case, known from its size
    or header, until its run is over; a request that does not fit gets 503 at once, one that
    could never fit 400."""
    max_string_memory: int = Field(1 << 30, gt=0)
    """Bytes the characters of a model's string values may take, beyond --max-run-memory, for
    one request of --max-request-bytes (onnxruntime keeps a string's characters outside its
    arena): bounded at upload from the model's operators; a model that could take more is
    refused (400)."""
    compile_timeout: float = Field(30.0, gt=0)
    """Seconds an upload's checks and compilation may take; then it is refused with 400."""
    compile_memory: int = Field(2 << 30, gt=0)
    """Bytes of address space an upload's checks and compilation may use beyond five times the
    model (enforced in the compile child process)."""
    compile_isolation: CliImplicitFlag[bool] = True
    """Check and compile each upload first in a separate, limited process (time and memory).
    Off (--no-compile-isolation), e.g. where a process is costly (Gramine), the admission checks
    run in the server and compile time and memory are not bounded."""
    spare_processes: CliImplicitFlag[bool] = True
    """Start the child processes uploads and model hosts need one ahead, each with its
    interpreter started and onnxruntime imported and nothing of any tenant's: one for the
    compile check (with --compile-isolation), one for the next text pipeline's tokenizer (once
    one was compiled; the tokenizers library imported instead) and, with --run-isolation
    process, one for the next model host. 65-83 MB of RSS each (half of it shared libraries),
    idle; an upload's check or a host's start then skips 0.3 s or more. Off
    (--no-spare-processes), e.g. where memory is short, each forks its own child when it needs
    one."""
    run_isolation: Literal["none", "process"] = "none"
    """Where each model's onnxruntime session runs. ``none``: in the server's process (a kernel
    that crashes on a request's values ends it, every tenant's runs with it). ``process``: in
    a model host process of its own per model, restarted at once after a crash (the runs in
    flight on that model fail, 422; other models go on); a run stopped at --run-timeout that
    the host does not give up at once has its host killed, so one long kernel is bounded
    too. Costs a copy of every request's tensors each way, a process per model and one spare
    started ahead; --max-run-memory then caps each model's arena, not all of them together.
    Not with --device cuda, and not for Gramine-SGX (a process is a new enclave); see
    docs/limits.md."""
    empty_kernel_proofs: CliImplicitFlag[bool] = True
    """Admit a model with an operator whose onnxruntime kernel ends the process on an empty
    tensor (LSTM, GRU, com.microsoft SkipLayerNormalization, MultiHeadAttention, ...) only where
    the dimensions it fails on are proven non-zero at upload (through the contrib operators of
    blindai.server.contrib_shapes too: transformers optimized by onnxruntime's tools are
    proven). Off (--no-empty-kernel-proofs), e.g. for a model whose proof goes through an
    operator with no shape rule: such models are admitted and only empty request inputs are
    refused, so a tenant's model built to empty a tensor inside ends the server's process."""
    max_graph_nodes: int = Field(100_000, gt=0)
    """Most nodes in an uploaded model, all graphs and subgraphs together."""
    max_subgraph_depth: int = Field(8, ge=0)
    """Deepest nesting of If/Loop/Scan bodies in an uploaded model."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Where models run: ``cuda`` uses onnxruntime's CUDA execution provider (onnxruntime-gpu)
    and, outside simulation, serves the GPU's NVML attestation report; the server refuses to
    start when either is unavailable."""
    gpu_index: int = Field(0, ge=0)
    """The GPU (NVML and CUDA index) models run on with ``device = "cuda"``."""
    max_pipeline_bytes: int = Field(32 << 20, gt=0)
    """Largest total size of a pipeline's files (tokenizer, labels, vocabulary) at upload."""
    max_sequence_length: int = Field(4096, gt=0)
    """Largest ``max_length`` a pipeline's text step may pad or truncate to."""
    max_text_bytes: int = Field(1 << 20, gt=0)
    """Largest raw text (UTF-8 bytes) one request may send to a text pipeline."""
    max_image_pixels: int = Field(25_000_000, gt=0)
    """Largest image (width x height) one request may send to an image pipeline; checked from
    the header, before decoding."""
    max_image_side: int = Field(4096, gt=0)
    """Largest height or width an image pipeline may resize or crop to."""
    max_audio_seconds: float = Field(600.0, gt=0)
    """Largest ``max_seconds`` an audio pipeline may accept."""
    intra_op_threads: int = Field(0, ge=0, le=1024)
    """onnxruntime intra-op threads per model (0: onnxruntime's default, one per core); a
    model's upload may ask for its own."""
    max_concurrent_runs: int = Field(4, ge=1, le=1024)
    """Runs of one model in flight at once, sharing its onnxruntime threads (others wait in
    its queue, first in first out; at most --max-model-runs); a model's upload may ask for its
    own. A lone request still has every core: 4 gave 1.08-1.09x the throughput of 1 at 16
    clients on 2 cores, the same latency for one client (docs/performance.md)."""
    max_batch_size: int = Field(1, ge=1, le=4096)
    """Rows of requests run together as one batch (1: no batching). Applied only to models
    whose first dimension is a batch axis and that pass a probe (rows run together give the
    same bytes as rows run alone); a model's upload may ask for its own."""
    max_queue_delay_us: int = Field(0, ge=0, le=1_000_000)
    """Longest a request waits for others to batch with, in microseconds (0: none; requests
    still batch with those already waiting while the model is busy)."""
    upload_dir: Path | None = None
    """Where an uploaded model's bytes wait while it compiles, in an unlinked file (mode 0600):
    for a directory on storage the TEE protects. Unset: an anonymous memory file, never on a
    disk."""
    keep_freed_memory: int = Field(64 << 20, ge=0)
    """Bytes of freed memory glibc keeps for reuse instead of returning them to the kernel, so
    that each request's buffers do not page-fault in anew (0: glibc's defaults)."""
    inference_threads: int = Field(8, gt=0)
    """Worker threads running inference off the event loop."""
    inline_run_us: int = Field(100, ge=0, le=10_000)
    """Longest run, in microseconds, of a small model that may run on the event loop instead of
    a worker thread (0: never). Only models of at most 1 MiB whose operators cannot run long
    qualify, after 20 runs in a row within this time; see docs/performance.md."""
    max_pending_fresh_evidence: int = Field(4, gt=0)
    """Most fresh-evidence collections (``GET /attestation?nonce=``, each a new quote or report
    from the TEE) waiting at once; further requests are answered 503 until one finishes."""
    fresh_evidence_per_second: float = Field(10.0, gt=0)
    """Most fresh-evidence collections started a second, the whole server together (a token
    bucket holding one second's worth, at least one); beyond, 503 with ``Retry-After``. Each
    costs the TEE a new quote or report, and anyone reaching a TLS port may ask for one."""
    max_model_runs: int = Field(0, ge=0)
    """Most inferences of one model (identical uploads count as one) running at once; 0: one
    less than --inference-threads (at least 1), so that one model never holds every worker."""

    @property
    def model_runs(self) -> int:
        """``max_model_runs``, with 0 resolved."""
        return self.max_model_runs or max(1, self.inference_threads - 1)

    max_key_runs: int = Field(0, ge=0)
    """Most inferences of one tenant's key (all its models together) running at once; 0: half
    of --inference-threads (at least 1), so that a tenant whose runs last long never holds
    every worker. The admin key and an open server's callers are not held to it."""

    @property
    def key_runs(self) -> int:
        """``max_key_runs``, with 0 resolved."""
        return self.max_key_runs or max(1, self.inference_threads // 2)

    pccs_url: str | None = None
    """Intel PCS/PCCS base URL: SGX collateral (Gramine; Intel's PCS when unset) and TDX
    collateral (configfs-tsm; none served when unset)."""
    attestation_dir: Path = GRAMINE.default
    """Gramine's attestation pseudo-files."""
    tsm_report_dir: Path = CONFIGFS_TSM.default
    """Linux configfs-tsm report directory (TDX, SEV-SNP)."""
    nsm_device: Path = NSM.default
    """AWS Nitro Security Module device."""
    log_level: str = "info"
    """Python logging level name."""
    admin_key_sha256: str | None = None
    """SHA-256 (64 hex digits) of the admin key: turns access control on (API keys, model
    ownership). Unset: the server is open to anyone who reaches the attested ports."""
    store: Path | None = None
    """Directory of the sealed store: models and API keys, encrypted with a key from the TEE,
    survive restarts (unset: nothing is kept)."""
    store_key_file: Path | None = None
    """Store key given by the deployment (32 raw bytes or 64 hex digits): required on TDX and
    Nitro, which have no sealing key; replaces the platform's key elsewhere."""
    store_rebuild_manifest: CliToggleFlag[bool] = False
    """Accept the store's entries present as its current ones, whatever its manifest says (after
    losing the manifest to a disk failure only: it accepts any older entry the host put back; the
    manifest keeps a mark of it, stated to clients as ``store_manifest_rebuilt``)."""
    sev_guest_device: Path = Path("/dev/sev-guest")
    """SEV-SNP guest device (the store key on SEV-SNP)."""
    audit_log: Path | None = None
    """Append the audit log (JSON lines, content-free) to this file (unset: stderr)."""

    def admission_limits(self) -> AdmissionLimits:
        """The bounds an uploaded model is checked against."""
        from blindai.server.admission import AdmissionLimits

        return AdmissionLimits(
            max_nodes=self.max_graph_nodes,
            max_subgraph_depth=self.max_subgraph_depth,
            max_tensor_bytes=self.max_run_memory,
            shape_inference=True,
            max_string_bytes=self.max_string_memory,
            max_request_bytes=self.max_request_bytes,
            empty_kernel_proofs=self.empty_kernel_proofs,
        )

    def compile_limits(self) -> CompileLimits:
        """What one upload may cost to check and compile."""
        from blindai.server.compile_guard import CompileLimits

        return CompileLimits(
            timeout_s=self.compile_timeout,
            memory_bytes=self.compile_memory,
            admission=self.admission_limits(),
            intra_op_threads=self.intra_op_threads,
        )

    def connection_limits(self) -> ConnectionLimits:
        """The limits on each port's connections."""
        from blindai.server.connections import ConnectionLimits

        return ConnectionLimits(
            max_header_bytes=self.max_header_bytes,
            max_header_count=self.max_header_count,
            header_timeout_s=self.header_timeout,
            body_timeout_s=self.body_timeout,
            body_min_rate=self.body_min_rate,
            keep_alive_timeout_s=self.keep_alive_timeout,
            max_connections=self.max_connections,
            max_body_bytes=self.largest_body_bytes,
        )

    @property
    def grpc_calls(self) -> int:
        """Most gRPC calls served at once: each buffers its message (up to
        ``max_request_bytes``) as it comes, before the server sees it, so at most
        ``max_connections`` and as many as ``max_body_memory`` holds."""
        return min(self.max_connections, max(1, self.max_body_memory // self.max_request_bytes))

    @property
    def largest_body_bytes(self) -> int:
        """The largest body any port takes: a run's or an upload's."""
        return max(self.max_request_bytes, self.upload_body_bytes)

    @property
    def upload_body_bytes(self) -> int:
        """The largest /upload body: the model, its pipeline and the CBOR framing."""
        return self.max_model_bytes + self.max_pipeline_bytes + (1 << 20)

    def pipeline_limits(self) -> PipelineLimits:
        """The bounds pipelines and raw inputs are held to."""
        return PipelineLimits(
            max_files_bytes=self.max_pipeline_bytes,
            max_sequence_length=self.max_sequence_length,
            max_text_bytes=self.max_text_bytes,
            max_image_pixels=self.max_image_pixels,
            max_image_side=self.max_image_side,
            max_audio_seconds=self.max_audio_seconds,
            max_preprocess_bytes=self.max_preprocess_memory,
            max_result_bytes=self.max_response_bytes,
            max_compile_bytes=self.compile_memory,
        )

    @model_validator(mode="after")
    def _consistent(self) -> ServerSettings:
        if self.simulation and self.tee not in ("auto", "simulation"):
            raise ConfigurationError(f"--simulation contradicts --tee {self.tee}")
        if self.simulation_measurement is not None and not self.is_simulation:
            raise ConfigurationError("--simulation-measurement is for simulation mode only")
        if self.admin_key_sha256 is not None:
            parse_admin_key_sha256(self.admin_key_sha256)
        if self.store_key_file is not None and self.store is None:
            raise ConfigurationError("--store-key-file is given without --store")
        if self.store_rebuild_manifest and self.store is None:
            raise ConfigurationError("--store-rebuild-manifest is given without --store")
        if self.pccs_url is not None and urlsplit(self.pccs_url).scheme not in ("https", "http"):
            raise ConfigurationError(
                f"--pccs-url {self.pccs_url!r:.80} is not an https:// (or http://) URL: a PCS or "
                "PCCS is reached over HTTP only"
            )
        if self.run_isolation == "process" and self.device != "cpu":
            raise ConfigurationError(
                "--run-isolation process runs models on the CPU only: it cannot be combined "
                f"with --device {self.device}"
            )
        largest = self.largest_body_bytes
        if self.max_body_memory < largest:
            raise ConfigurationError(
                f"--max-body-memory {self.max_body_memory} is below the largest body a request "
                f"may bring ({largest} bytes: --max-request-bytes, or an upload's "
                "--max-model-bytes and --max-pipeline-bytes plus 1 MiB): raise it, or lower those"
            )
        given = [(name, getattr(self, name)) for name in _PORTS if getattr(self, name)]
        for i, (name, port) in enumerate(given):
            for other, same in given[i + 1 :]:
                if port == same:
                    raise ConfigurationError(
                        f"port {port} is given for two roles: {_flag(name)} and {_flag(other)}"
                    )
        return self

    @property
    def is_simulation(self) -> bool:
        """Whether this server runs without a TEE."""
        return self.simulation or self.tee == "simulation"

    @property
    def admin_digest(self) -> bytes | None:
        """The admin key's SHA-256, when access control is on."""
        if self.admin_key_sha256 is None:
            return None
        return parse_admin_key_sha256(self.admin_key_sha256)

    @property
    def listen_host(self) -> str:
        """The address the ports bind: ``host``, or its default for this mode."""
        if self.host is not None:
            return self.host
        return "127.0.0.1" if self.is_simulation else "0.0.0.0"

    @classmethod
    def from_command_line(
        cls, argv: Sequence[str], *, parser: argparse.ArgumentParser
    ) -> ServerSettings:
        """Settings from flags (``parser`` gets one per field), then BLINDAI_* variables.

        Usage errors exit through ``parser``; unusable values raise ConfigurationError.
        """
        source: CliSettingsSource[ServerSettings] = CliSettingsSource(cls, root_parser=parser)
        try:
            return cls(_cli_settings_source=source(args=list(argv)))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(map(str, first["loc"]))
            message = first["msg"].removeprefix("Value error, ")
            raise ConfigurationError(f"{_flag(where)}: {message}" if where else message) from None


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


OTHER_VARIABLES = frozenset(
    {
        "BLINDAI_API_KEY",  # the CLI's client commands
        # the test suite's (make test, .ci/run)
        "BLINDAI_REQUIRE_COMPAT",
        "BLINDAI_REQUIRE_SCALE",
        "BLINDAI_COMPAT_VENVS",
        "BLINDAI_COMPAT_SERVER",
    }
)
"""BLINDAI_ variables that others read, not ``blindai serve``."""


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One warning for each BLINDAI_ variable that sets nothing: a misspelt one (say
    ``BLINDAI_ADMIN_KEY_SHA265``) is otherwise ignored without a word, and its default holds."""
    known = {f"BLINDAI_{name.upper()}" for name in ServerSettings.model_fields}
    known |= OTHER_VARIABLES
    warnings = []
    for name in sorted(environ):
        upper = name.upper()  # pydantic-settings reads variables case-insensitively
        if not upper.startswith("BLINDAI_") or upper in known:
            continue
        close = difflib.get_close_matches(upper, sorted(known), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        warnings.append(
            f"environment variable {escaped(name)} is no setting of blindai serve{hint}"
        )
    return warnings
