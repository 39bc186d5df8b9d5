"""The gRPC server: ``GRPCInferenceService`` on its own port, over the attested TLS identity.

The port serves the same certificate and key as the attested HTTPS port (the certificate whose
hash the evidence carries), so a client that verified the evidence and pins that certificate
(``root_certificates`` = the certificate's PEM, target name ``blindai-srv``) reaches only this
server. Requests are bounded by ``max_request_bytes``, replies by ``max_response_bytes`` (the
data plane refuses larger outputs before encoding them), metadata by ``max_header_bytes``, and
a connection idle for ``keep_alive_timeout`` is closed (docs/limits.md). Connections are
capped at ``max_connections`` (grpc-core took any number, each holding a file descriptor, so
the HTTP ports could be left none), a TLS handshake must finish within ``header_timeout``
(grpc-core's default: 120 s), a connection lives at most ``call_bound`` seconds, and at most
``max_connections`` calls are served at once (RESOURCE_EXHAUSTED beyond): each call buffers its
message as it comes, and with 100 calls per connection one connection could hold 100 messages
of ``max_request_bytes`` where an HTTP connection holds one body. That limit is the servicer's
(its refusals are audited and counted); grpcio's ``maximum_concurrent_rpcs``, which answers
before any code of ours runs, is kept at twice it (:func:`grpcio_backstop`), for calls grpcio
took but whose handler has not started yet.
"""

from __future__ import annotations

import grpc

from blindai.errors import ConfigurationError
from blindai.server.access import AccessControl
from blindai.server.body_budget import BodyBudget
from blindai.server.protocols.grpc.servicer import InferenceServicer, add_to_server
from blindai.server.protocols.v2.service import OipService
from blindai.server.settings import ServerSettings
from blindai.server.tls import TlsIdentity

__all__ = ["MAX_STREAMS", "GrpcPort", "call_bound", "grpcio_backstop", "start_grpc_server"]

_REPLY_OVERHEAD = 1 << 20
"""Room in a reply for what is not tensor data (names, shapes, parameters)."""
MAX_STREAMS = 100
"""Concurrent calls on one gRPC connection."""


def call_bound(settings: ServerSettings) -> float:
    """Seconds a gRPC call may take at the HTTP ports' pace: its message arriving within
    ``body_timeout`` plus one second per ``body_min_rate`` bytes (at most ``max_request_bytes``),
    its run within ``run_timeout``, its reply taken at the same pace (``max_response_bytes``).

    A connection lives at most this long (then GOAWAY: clients open another for new calls),
    and its calls in progress get this long again to finish: grpc-core has no timer for a call
    whose message never comes, so a client could hold its calls, and their connection, for good.
    """
    s = settings
    pace = (s.max_request_bytes + s.max_response_bytes) / s.body_min_rate
    return 2 * s.body_timeout + pace + s.run_timeout


def grpcio_backstop(calls: int) -> int:
    """grpcio's ``maximum_concurrent_rpcs`` above the servicer's limit of ``calls``: a call
    past the servicer's limit is refused at once and unread, so it holds grpcio's count for a
    moment only; grpcio's refusals are not audited."""
    return 2 * calls


def _ms(seconds: float) -> int:
    return min((1 << 31) - 1, max(1, round(seconds * 1000)))


class GrpcPort:
    """The gRPC server and its servicer, stopped together: calls the stop cancels are recorded
    as cut by the server (503), not as left by their clients (499)."""

    def __init__(self, server: grpc.aio.Server, servicer: InferenceServicer) -> None:
        self.server = server
        self.servicer = servicer

    async def stop(self, grace: float | None) -> None:
        """Stop serving; with no ``grace``, cancel the calls in progress now (a cut)."""
        if grace is None:
            self.servicer.cutting = True
        await self.server.stop(grace)


async def start_grpc_server(
    oip: OipService,
    *,
    access: AccessControl,
    identity: TlsIdentity,
    host: str,
    port: int,
    settings: ServerSettings,
    budget: BodyBudget | None = None,
) -> tuple[GrpcPort, int]:
    """Start serving on ``host:port`` (0: any free port); returns the server and its port.
    Large request messages take from ``budget`` while they are served (the servicer)."""
    reply_bytes = min((1 << 31) - 1, settings.max_response_bytes + _REPLY_OVERHEAD)
    call_s = call_bound(settings)
    server = grpc.aio.server(
        maximum_concurrent_rpcs=grpcio_backstop(settings.grpc_calls),
        options=[
            ("grpc.max_receive_message_length", settings.max_request_bytes),
            ("grpc.max_send_message_length", reply_bytes),
            ("grpc.max_metadata_size", settings.max_header_bytes),
            ("grpc.absolute_max_metadata_size", settings.max_header_bytes),  # no soft zone
            ("grpc.max_concurrent_streams", MAX_STREAMS),
            ("grpc.max_connection_idle_ms", settings.keep_alive_timeout * 1000),
            ("grpc.max_allowed_incoming_connections", settings.max_connections),
            ("grpc.server_handshake_timeout_ms", _ms(settings.header_timeout)),
            ("grpc.max_connection_age_ms", _ms(call_s)),
            ("grpc.max_connection_age_grace_ms", _ms(call_s)),
            ("grpc.so_reuseport", 0),
        ],
    )
    servicer = InferenceServicer(oip, access, budget=budget, calls=settings.grpc_calls)
    add_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials([(identity.key_pem(), identity.cert_pem)])
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_secure_port(address, credentials)
    except RuntimeError as exc:  # grpcio raises when it cannot bind
        raise ConfigurationError(f"cannot listen for gRPC on {address}") from exc
    if bound == 0:
        raise ConfigurationError(f"cannot listen for gRPC on {address}")
    await server.start()
    return GrpcPort(server, servicer), bound
