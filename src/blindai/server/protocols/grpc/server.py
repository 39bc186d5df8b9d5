"""The gRPC server: ``GRPCInferenceService`` on its own port, over the attested TLS identity.

The port serves the same certificate and key as the attested HTTPS port (the certificate whose
hash the evidence carries), so a client that verified the evidence and pins that certificate
(``root_certificates`` = the certificate's PEM, target name ``blindai-srv``) reaches only this
server. Requests are bounded by ``max_request_bytes``, replies by ``max_response_bytes`` (the
data plane refuses larger outputs before encoding them), metadata by ``max_header_bytes``, and
a connection idle for ``keep_alive_timeout`` is closed (docs/limits.md).
"""

from __future__ import annotations

import grpc

from blindai.errors import ConfigurationError
from blindai.server.access import AccessControl
from blindai.server.protocols.grpc._generated import grpc_service_pb2_grpc as pb_grpc
from blindai.server.protocols.grpc.servicer import InferenceServicer
from blindai.server.protocols.v2.service import OipService
from blindai.server.settings import ServerSettings
from blindai.server.tls import TlsIdentity

__all__ = ["MAX_STREAMS", "start_grpc_server"]

_REPLY_OVERHEAD = 1 << 20
"""Room in a reply for what is not tensor data (names, shapes, parameters)."""
MAX_STREAMS = 100
"""Concurrent calls on one gRPC connection."""


async def start_grpc_server(
    oip: OipService,
    *,
    access: AccessControl,
    identity: TlsIdentity,
    host: str,
    port: int,
    settings: ServerSettings,
) -> tuple[grpc.aio.Server, int]:
    """Start serving on ``host:port`` (0: any free port); returns the server and its port."""
    reply_bytes = min((1 << 31) - 1, settings.max_response_bytes + _REPLY_OVERHEAD)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_request_bytes),
            ("grpc.max_send_message_length", reply_bytes),
            ("grpc.max_metadata_size", settings.max_header_bytes),
            ("grpc.absolute_max_metadata_size", settings.max_header_bytes),  # no soft zone
            ("grpc.max_concurrent_streams", MAX_STREAMS),
            ("grpc.max_connection_idle_ms", settings.keep_alive_timeout * 1000),
            ("grpc.so_reuseport", 0),
        ]
    )
    servicer = InferenceServicer(oip, access)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    credentials = grpc.ssl_server_credentials([(identity.key_pem(), identity.cert_pem)])
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_secure_port(address, credentials)
    except RuntimeError as exc:  # grpcio raises when it cannot bind
        raise ConfigurationError(f"cannot listen for gRPC on {address}") from exc
    if bound == 0:
        raise ConfigurationError(f"cannot listen for gRPC on {address}")
    await server.start()
    return server, bound
