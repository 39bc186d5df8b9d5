"""ASGI applications for the three ports, built from settings, registry and attester."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

import blindai
from blindai.attestation.binding import expected_report_data
from blindai.protocol.version import EXTENSION_VERSION, WIRE_VERSION
from blindai.server.attesters.base import Attester
from blindai.server.attesters.nvidia_gpu import NvidiaGpuAttester
from blindai.server.handlers import DataPlane
from blindai.server.middleware import ServerHeaderAndAccessLog
from blindai.server.registry import ModelRegistry
from blindai.server.routes import BlindAIRoutes, cbor_errors, cbor_response
from blindai.server.settings import ServerSettings
from blindai.server.tls import TlsIdentity

__all__ = ["Apps", "EvidenceService", "create_apps", "gpu_evidence_route", "server_header"]

EVIDENCE_TTL_S = 60.0


@dataclass
class EvidenceService:
    """The certificate and fresh evidence binding it (regenerated after a minute).

    ``gpu``, when the models run on an attested GPU, gives the GPU's report for the same
    certificate (:func:`~blindai.attestation.binding.gpu_nonce`), also regenerated after a
    minute.
    """

    identity: TlsIdentity
    attester: Attester
    gpu: NvidiaGpuAttester | None = None
    _cached: tuple[float, bytes] | None = field(default=None, init=False)
    _gpu_cached: tuple[float, dict[str, Any]] | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def evidence(self) -> bytes:
        """Evidence whose report data is SHA-256(certificate DER) followed by zeros."""
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > EVIDENCE_TTL_S:
                data = expected_report_data(self.identity.cert_der)
                self._cached = (now, self.attester.evidence(data))
            return self._cached[1]

    def gpu_evidence(self) -> dict[str, Any] | None:
        """``{"report", "certificates"}`` binding the certificate, or None without a GPU."""
        if self.gpu is None:
            return None
        with self._lock:
            now = time.monotonic()
            if self._gpu_cached is None or now - self._gpu_cached[0] > EVIDENCE_TTL_S:
                self._gpu_cached = (now, self.gpu.evidence(self.identity.cert_der))
            return self._gpu_cached[1]


def gpu_evidence_route(service: EvidenceService) -> Route:
    """``GET /gpu-evidence``: CBOR ``{report, certificates}``, or 404 without an attested GPU.

    Served on the unattested port beside the CPU evidence, and on the attested port, where a
    client reads it over the TLS channel it has just verified (see docs/attestation.md).
    """

    async def gpu_evidence(_: Request) -> Response:
        found = await anyio.to_thread.run_sync(service.gpu_evidence)
        if found is None:
            return cbor_response("this server attests no GPU", 404)
        return cbor_response(found)

    return Route("/gpu-evidence", cbor_errors(gpu_evidence), methods=["GET"])


def server_header(simulation: bool) -> str:
    """``Server`` header value; a simulation says ``mock`` so hardware-mode clients refuse it."""
    base = f"blindai/{blindai.__version__}"
    return f"{base} (simulation; mock)" if simulation else base


def _unattested_routes(settings: ServerSettings, service: EvidenceService) -> list[Route]:
    async def certificate(_: Request) -> Response:
        return cbor_response(service.identity.cert_der)

    async def quote(_: Request) -> Response:
        return cbor_response(await anyio.to_thread.run_sync(service.evidence))

    async def collateral(_: Request) -> Response:
        found = await anyio.to_thread.run_sync(service.attester.blindai_collateral)
        if found is None:
            return cbor_response("no collateral: this server's evidence is not an SGX quote", 404)
        return cbor_response(found)

    async def endorsements(_: Request) -> Response:
        e = await anyio.to_thread.run_sync(service.attester.endorsements)
        return cbor_response({"collateral": e.collateral, "certificates": list(e.certificates)})

    async def info(_: Request) -> Response:
        return cbor_response(server_info(settings, service))

    return [
        Route("/", certificate, methods=["GET"]),
        Route("/quote", cbor_errors(quote), methods=["GET"]),
        Route("/collateral", cbor_errors(collateral), methods=["GET"]),
        Route("/endorsements", cbor_errors(endorsements), methods=["GET"]),
        Route("/info", info, methods=["GET"]),
        gpu_evidence_route(service),
    ]


def server_info(settings: ServerSettings, service: EvidenceService) -> dict[str, Any]:
    """Our ``GET /info`` extension: version, TEE kind and capabilities."""
    return {
        "server_version": blindai.__version__,
        "wire_version": WIRE_VERSION,
        "extension_version": EXTENSION_VERSION,
        "tee": service.attester.kind.value,
        "simulation": settings.is_simulation,
        "capabilities": ["model-bytes", "f16", "v2-inference", "pipelines"]
        + (["gpu-evidence"] if service.gpu is not None else []),
        "device": settings.device,
    }


@dataclass(frozen=True)
class Apps:
    """The ASGI apps for the unattested, attested and management ports."""

    unattested: ASGIApp
    attested: ASGIApp
    management: ASGIApp
    plane: DataPlane


def create_apps(
    settings: ServerSettings,
    registry: ModelRegistry,
    service: EvidenceService,
) -> Apps:
    """Build the three apps sharing one registry and one evidence service."""
    plane = DataPlane(settings, registry)
    routes = BlindAIRoutes(plane)
    header = server_header(settings.is_simulation)
    model_routes = [
        Route("/upload", routes.upload, methods=["POST"]),
        Route("/delete", routes.delete, methods=["POST"]),
    ]
    inference = [Route("/run", routes.run, methods=["POST"])]
    from blindai.server.v2 import v2_routes

    def wrap(app: ASGIApp, label: str) -> ASGIApp:
        return ServerHeaderAndAccessLog(app, server_header=header, port_label=label)

    return Apps(
        unattested=wrap(Starlette(routes=_unattested_routes(settings, service)), "unattested"),
        attested=wrap(
            Starlette(
                routes=[*inference, *model_routes, *v2_routes(plane), gpu_evidence_route(service)]
            ),
            "attested",
        ),
        management=wrap(Starlette(routes=model_routes), "management"),
        plane=plane,
    )
