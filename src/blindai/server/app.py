"""ASGI applications for the three ports, built from settings, registry and evidence service.

==============  =================================================================
app             routes
==============  =================================================================
unattested      0.6 ``/``, ``/quote``, ``/collateral``; ``/info``, ``/endorsements``,
                ``/gpu-evidence``
attested        0.6 ``/run``, ``/upload``, ``/delete``; the v2 routes; ``/gpu-evidence``,
                ``/attestation``
management      0.6 ``/upload``, ``/delete``; ``/gpu-evidence``, ``/attestation``; ``/models``,
                ``/export``; ``GET /metrics`` (Prometheus)
==============  =================================================================

Every model route goes through one :class:`~blindai.server.dataplane.DataPlane`.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp

from blindai._version import __version__
from blindai.server._workers import WorkerPool
from blindai.server.dataplane import DataPlane
from blindai.server.evidence import EvidenceService
from blindai.server.metrics import Metrics, MetricsMiddleware, metrics_route
from blindai.server.middleware import ServerHeaderAndAccessLog
from blindai.server.protocols.v06 import (
    FreshEvidenceLimit,
    V06Routes,
    attestation_route,
    gpu_evidence_route,
    unattested_routes,
)
from blindai.server.protocols.v06.replication import replication_routes
from blindai.server.protocols.v06.unattested import server_info
from blindai.server.protocols.v2.routes import V2Routes
from blindai.server.protocols.v2.service import OipService
from blindai.server.registry import ModelRegistry
from blindai.server.settings import ServerSettings

__all__ = ["EVIDENCE_THREADS", "Apps", "create_apps", "server_header"]

EVIDENCE_THREADS = 2


def server_header(simulation: bool) -> str:
    """``Server`` header value; a simulation says ``mock`` so hardware-mode clients refuse it."""
    base = f"blindai/{__version__}"
    return f"{base} (simulation; mock)" if simulation else base


@dataclass(frozen=True)
class Apps:
    """The ASGI apps for the unattested, attested and management ports, and what they share."""

    unattested: ASGIApp
    attested: ASGIApp
    management: ASGIApp
    plane: DataPlane
    evidence_workers: WorkerPool
    oip: OipService
    """The Open Inference Protocol's semantics, for the gRPC server."""
    metrics: Metrics
    metrics_only: ASGIApp
    """``GET /metrics`` alone, for the optional plain loopback port."""

    def close(self) -> None:
        """Stop the worker threads."""
        self.plane.close()
        self.evidence_workers.close()


def create_apps(
    settings: ServerSettings,
    registry: ModelRegistry,
    service: EvidenceService,
) -> Apps:
    """Build the three apps sharing one data plane, one evidence service, one set of metrics.

    Every app counts its requests in the metrics (by route template); the management app and
    ``metrics_only`` serve them on ``GET /metrics``.
    """
    metrics = service.metrics or Metrics()
    plane = DataPlane(settings, registry, metrics)
    v2 = V2Routes(plane)
    v06 = V06Routes(plane)
    evidence_workers = WorkerPool(EVIDENCE_THREADS, name="blindai-evidence")
    header = server_header(settings.is_simulation)
    model_routes = [
        Route("/upload", v06.upload, methods=["POST"]),
        Route("/delete", v06.delete, methods=["POST"]),
    ]
    inference = [Route("/run", v06.run, methods=["POST"])]
    unattested = unattested_routes(service, evidence_workers, settings=settings)
    # each TLS connection can ask for the evidence of its own certificate (GET /attestation),
    # so that clients behind a load balancer verify the replica they reached
    limit = FreshEvidenceLimit(settings.max_pending_fresh_evidence)
    evidence = [
        gpu_evidence_route(service, evidence_workers),
        attestation_route(
            service,
            evidence_workers,
            info=lambda: server_info(service, settings=settings),
            limit=limit,
        ),
    ]
    attested = [*inference, *model_routes, *v2.routes(), *evidence]

    def wrap(app: ASGIApp, label: str) -> ASGIApp:
        counted = MetricsMiddleware(app, metrics, port=label)
        return ServerHeaderAndAccessLog(counted, server_header=header, port_label=label)

    scrape = metrics_route(metrics)
    return Apps(
        unattested=wrap(Starlette(routes=unattested), "unattested"),
        attested=wrap(Starlette(routes=attested), "attested"),
        management=wrap(
            Starlette(routes=[*model_routes, *replication_routes(plane), *evidence, scrape]),
            "management",
        ),
        plane=plane,
        evidence_workers=evidence_workers,
        oip=v2.oip,
        metrics=metrics,
        metrics_only=wrap(Starlette(routes=[scrape]), "metrics"),
    )
