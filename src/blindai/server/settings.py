"""Server settings: one typed object, built once at the entry point and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from blindai.pipeline.limits import PipelineLimits

__all__ = ["ServerSettings", "TeeName"]

TeeName = Literal["auto", "simulation", "gramine-sgx", "tdx", "sev-snp", "nitro"]


class ServerSettings(BaseSettings):
    """Everything ``blindai serve`` can be told; environment variables use the prefix BLINDAI_."""

    model_config = SettingsConfigDict(env_prefix="BLINDAI_", frozen=True)

    host: str = "0.0.0.0"
    """Address to listen on for all three ports."""
    unattested_port: int = Field(9923, ge=0, le=65535)
    """Plain HTTP: certificate, evidence, collateral."""
    attested_port: int = Field(9924, ge=0, le=65535)
    """Attested TLS: inference (and model management for blindai-preview clients)."""
    management_port: int = Field(9925, ge=0, le=65535)
    """Attested TLS: model management (/upload, /delete)."""
    unattested_tls_cert: Path | None = None
    """PEM certificate (chain) for HTTPS on the unattested port: an ordinary, CA-issued one."""
    unattested_tls_key: Path | None = None
    """PEM private key for ``unattested_tls_cert``."""
    tee: TeeName = "auto"
    """Where evidence comes from; ``simulation`` must be asked for explicitly."""
    simulation: bool = False
    """Opt in to simulation mode (no TEE, protects nothing); same as ``tee = "simulation"``."""
    max_model_bytes: int = Field(1 << 30, gt=0)
    """Largest model accepted by /upload (bytes of the model itself)."""
    max_request_bytes: int = Field(64 << 20, gt=0)
    """Largest body accepted by /run and v2 inference."""
    max_models: int = Field(64, gt=0)
    """Most models held at once; uploads beyond it are refused with 507."""
    keep_alive_timeout: int = Field(30, gt=0)
    """Seconds an idle client connection is kept open before the server closes it."""
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
    intra_op_threads: int = Field(0, ge=0)
    """onnxruntime intra-op threads per session (0: onnxruntime's default)."""
    inference_threads: int = Field(8, gt=0)
    """Worker threads running inference and model compilation off the event loop."""
    pccs_url: str | None = None
    """Intel PCS/PCCS base URL: SGX collateral (Gramine; Intel's PCS when unset) and TDX
    collateral (configfs-tsm; none served when unset)."""
    attestation_dir: Path = Path("/dev/attestation")
    """Gramine's attestation pseudo-files."""
    tsm_report_dir: Path = Path("/sys/kernel/config/tsm/report")
    """Linux configfs-tsm report directory (TDX, SEV-SNP)."""
    nsm_device: Path = Path("/dev/nsm")
    """AWS Nitro Security Module device."""
    log_level: str = "info"
    """Python logging level name."""

    def pipeline_limits(self) -> PipelineLimits:
        """The bounds pipelines and raw inputs are held to."""
        return PipelineLimits(
            max_files_bytes=self.max_pipeline_bytes,
            max_sequence_length=self.max_sequence_length,
            max_text_bytes=self.max_text_bytes,
            max_image_pixels=self.max_image_pixels,
            max_image_side=self.max_image_side,
            max_audio_seconds=self.max_audio_seconds,
        )

    @property
    def is_simulation(self) -> bool:
        """Whether this server runs without a TEE."""
        return self.simulation or self.tee == "simulation"
