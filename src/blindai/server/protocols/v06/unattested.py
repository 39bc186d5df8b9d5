"""The unattested port: the certificate, evidence binding it, and what verifying it needs.

``GET /`` (the DER certificate), ``/quote`` (the evidence) and ``/collateral`` (SGX) are the
0.6 protocol's; ``/info``, ``/endorsements`` and ``/gpu-evidence`` are our extensions. Nothing
here is secret: the client verifies all of it.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from blindai._version import __version__
from blindai.protocol.version import EXTENSION_VERSION, WIRE_VERSION
from blindai.server._workers import WorkerPool
from blindai.server.evidence import EvidenceService
from blindai.server.protocols.v06.routes import cbor_errors
from blindai.server.protocols.v06.wire import cbor_response
from blindai.server.settings import ServerSettings
from blindai.server.store import SealedStore

__all__ = ["CAPABILITIES", "gpu_evidence_route", "server_info", "unattested_routes"]

CAPABILITIES = [
    "model-bytes",
    "f16",
    "v2-inference",
    "error-type-header",
    "attestation",
    "api-keys",
]


def server_info(
    service: EvidenceService, *, settings: ServerSettings, store: SealedStore | None = None
) -> dict[str, Any]:
    """Our ``GET /info`` extension: version, TEE kind, capabilities, device, and the
    configuration a client's policy may require (``blindai.attestation.server_config``: whether
    API keys are needed, the admin key's SHA-256, whether models may be exported, whether the
    store's manifest was ever rebuilt). Also the ``info`` of ``GET /attestation`` on the
    attested ports, where a client may trust it."""
    admin = settings.admin_digest
    return {
        "server_version": __version__,
        "wire_version": WIRE_VERSION,
        "extension_version": EXTENSION_VERSION,
        "tee": service.attester.kind.value,
        "simulation": settings.is_simulation,
        "capabilities": CAPABILITIES + (["gpu-evidence"] if service.gpu is not None else []),
        "device": settings.device,
        "access_control": admin is not None,
        "admin_key_sha256": None if admin is None else admin.hex(),
        "allow_model_export": settings.allow_model_export,
        "store_manifest_rebuilt": store is not None and store.manifest_rebuilt,
        "store_admin_keys": None if store is None else list(store.admin_keys),
    }


def gpu_evidence_route(service: EvidenceService, workers: WorkerPool) -> Route:
    """``GET /gpu-evidence``: CBOR ``{report, certificates}``, or 404 without an attested GPU.

    Served on the unattested port beside the CPU evidence, and on the attested port, where a
    client reads it over the TLS channel it has just verified (see docs/attestation.md).
    """

    async def gpu_evidence(_: Request) -> Response:
        found = await workers.run(service.gpu_evidence)
        if found is None:
            return cbor_response("this server attests no GPU", 404)
        return cbor_response(found)

    return Route("/gpu-evidence", cbor_errors(gpu_evidence), methods=["GET"])


def unattested_routes(
    service: EvidenceService,
    workers: WorkerPool,
    *,
    settings: ServerSettings,
    store: SealedStore | None = None,
) -> list[Route]:
    """The routes of the unattested port; evidence is collected in ``workers``."""

    async def certificate(_: Request) -> Response:
        return cbor_response(service.identity.cert_der)

    async def quote(_: Request) -> Response:
        return cbor_response(await workers.run(service.evidence))

    async def collateral(_: Request) -> Response:
        found = await workers.run(service.attester.blindai_collateral)
        if found is None:
            return cbor_response("no collateral: this server's evidence is not an SGX quote", 404)
        return cbor_response(found)

    async def endorsements(_: Request) -> Response:
        found = await workers.run(service.collected)  # those of the evidence /quote serves
        e = found.endorsements()
        return cbor_response({"collateral": e.collateral, "certificates": list(e.certificates)})

    async def info(_: Request) -> Response:
        return cbor_response(server_info(service, settings=settings, store=store))

    return [
        Route("/", certificate, methods=["GET"]),
        Route("/quote", cbor_errors(quote), methods=["GET"]),
        Route("/collateral", cbor_errors(collateral), methods=["GET"]),
        Route("/endorsements", cbor_errors(endorsements), methods=["GET"]),
        Route("/info", info, methods=["GET"]),
        gpu_evidence_route(service, workers),
    ]
