"""ASGI applications for the three ports, built from settings, registry and evidence service.

==============  =================================================================
app             routes
==============  =================================================================
unattested      0.6 ``/``, ``/quote``, ``/collateral``; ``/info``, ``/endorsements``,
                ``/gpu-evidence``
attested        0.6 ``/run``, ``/upload``, ``/delete``; the v2 routes; ``/gpu-evidence``,
                ``/attestation``
management      0.6 ``/upload``, ``/delete``; ``/gpu-evidence``, ``/attestation``; ``/models``,
                ``/export``; ``/keys``; ``GET /metrics`` (Prometheus)
==============  =================================================================

Every model route goes through one :class:`~blindai.server.dataplane.DataPlane`. The attested
and management apps authenticate every request first
(:class:`~blindai.server.access.middleware.AccessMiddleware`); the unattested app (and the
loopback metrics port) never see an API key.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from blindai._version import __version__
from blindai.protocol.names import ERROR_HEADER
from blindai.server._workers import WorkerPool
from blindai.server.access import AccessControl
from blindai.server.access.middleware import AccessMiddleware, caller_of
from blindai.server.body_budget import BodyBudget, BodyBudgetMiddleware
from blindai.server.dataplane import DataPlane
from blindai.server.evidence import EvidenceService
from blindai.server.metrics import Metrics, MetricsMiddleware, metrics_route
from blindai.server.middleware import ServerHeaderAndAccessLog
from blindai.server.protocols.v06 import (
    FreshEvidenceLimit,
    ManagementRoutes,
    V06Routes,
    attestation_route,
    gpu_evidence_route,
    unattested_routes,
)
from blindai.server.protocols.v06.replication import replication_routes
from blindai.server.protocols.v06.unattested import server_info
from blindai.server.protocols.v06.wire import cbor_response
from blindai.server.protocols.v2.routes import V2Routes, json_error
from blindai.server.protocols.v2.service import OipService
from blindai.server.registry import ModelRegistry
from blindai.server.settings import ServerSettings
from blindai.server.store import SealedStore

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
    access: AccessControl
    """The key ring and the audit log (also for the gRPC server)."""
    body_budget: BodyBudget
    """The bytes of request bodies and answers not yet taken that the HTTP ports hold."""

    def close(self) -> None:
        """Stop the worker threads; release the store and the audit log."""
        self.plane.close()
        self.evidence_workers.close()
        if self.plane.store is not None:
            self.plane.store.close()
        self.access.audit.close()


def _refusal(path: str, message: str, status: int, error_type: str) -> Response:
    """An access refusal in the protocol of ``path``: v2 JSON, else a 0.6 CBOR message."""
    if path == "/v2" or path.startswith("/v2/"):
        reply = json_error(message, status, error_type)
    else:
        reply = cbor_response(message, status)
    reply.headers[ERROR_HEADER] = error_type
    return reply


def create_apps(
    settings: ServerSettings,
    registry: ModelRegistry,
    service: EvidenceService,
    *,
    access: AccessControl,
    store: SealedStore | None = None,
) -> Apps:
    """Build the three apps sharing one data plane, one evidence service, one set of metrics,
    one access control.

    Every app counts its requests in the metrics (by route template); the management app and
    ``metrics_only`` serve them on ``GET /metrics``.
    """
    metrics = service.metrics or Metrics()
    plane = DataPlane(settings, registry, metrics, store=store)
    v2 = V2Routes(plane)
    v06 = V06Routes(plane)
    keys = ManagementRoutes(plane, access)
    evidence_workers = WorkerPool(EVIDENCE_THREADS, name="blindai-evidence")
    header = server_header(settings.is_simulation)
    model_routes = [
        Route("/upload", v06.upload, methods=["POST"]),
        Route("/delete", v06.delete, methods=["POST"]),
    ]
    inference = [Route("/run", v06.run, methods=["POST"])]
    unattested = unattested_routes(service, evidence_workers, settings=settings, store=store)
    # each TLS connection can ask for the evidence of its own certificate (GET /attestation),
    # so that clients behind a load balancer verify the replica they reached
    limit = FreshEvidenceLimit(
        settings.max_pending_fresh_evidence, per_second=settings.fresh_evidence_per_second
    )
    evidence = [
        gpu_evidence_route(service, evidence_workers),
        attestation_route(
            service,
            evidence_workers,
            info=lambda: server_info(service, settings=settings, store=store),
            limit=limit,
        ),
    ]
    attested = [*inference, *model_routes, *v2.routes(), *evidence]

    def wrap(app: ASGIApp, label: str) -> ASGIApp:
        counted = MetricsMiddleware(app, metrics, port=label)
        return ServerHeaderAndAccessLog(counted, server_header=header, port_label=label)

    # a tenant's share: half the budget, and at least the largest body (an upload)
    share = max(settings.max_body_memory // 2, settings.largest_body_bytes)
    budget = BodyBudget(settings.max_body_memory, per_key=share)

    def guarded(routes: list[Route]) -> ASGIApp:
        budgeted = BodyBudgetMiddleware(
            Starlette(routes=routes),
            budget=budget,
            most=settings.max_request_bytes,
            most_at={"/upload": settings.upload_body_bytes},
            render=_refusal,
        )
        return AccessMiddleware(budgeted, access=access, render=_refusal)

    scrape = metrics_route(metrics)

    async def operators_scrape(request: Request) -> Response:
        """``GET /metrics`` on the management port: not for a tenant's key (the server-wide
        counts, private models' among them, would tell a tenant how busy the others are)."""
        if caller_of(request.scope).kind == "tenant":
            message = (
                "the server's metrics are the operator's: scrape them with the admin key, or "
                "on the loopback --metrics-port"
            )
            return _refusal(request.url.path, message, 403, "PermissionDenied")
        return await scrape.endpoint(request)  # type: ignore[no-any-return]

    management = [
        *model_routes,
        *replication_routes(plane, access),
        *keys.routes(),
        *evidence,
        Route("/metrics", operators_scrape, methods=["GET"]),
    ]
    return Apps(
        unattested=wrap(Starlette(routes=unattested), "unattested"),
        attested=wrap(guarded(attested), "attested"),
        management=wrap(guarded(management), "management"),
        plane=plane,
        evidence_workers=evidence_workers,
        oip=v2.oip,
        metrics=metrics,
        metrics_only=wrap(Starlette(routes=[scrape]), "metrics"),
        access=access,
        body_budget=budget,
    )
