"""The gRPC server: ``GRPCInferenceService`` on its own port, over the attested TLS identity.

The port serves the same certificate and key as the attested HTTPS port (the certificate whose
hash the evidence carries), so a client that verified the evidence and pins that certificate
(``root_certificates`` = the certificate's PEM, target name ``blindai-srv``) reaches only this
server. Messages are bounded by ``max_request_bytes``.
"""

from __future__ import annotations

import grpc

from blindai.errors import ConfigurationError
from blindai.server.protocols.grpc._generated import grpc_service_pb2_grpc as pb_grpc
from blindai.server.protocols.grpc.servicer import InferenceServicer
from blindai.server.protocols.v2.service import OipService
from blindai.server.tls import TlsIdentity

__all__ = ["start_grpc_server"]

_REPLY_BYTES = (1 << 31) - 1
"""Replies are bounded by the model's outputs, which the request already bounds."""


async def start_grpc_server(
    oip: OipService, *, identity: TlsIdentity, host: str, port: int, max_request_bytes: int
) -> tuple[grpc.aio.Server, int]:
    """Start serving on ``host:port`` (0: any free port); returns the server and its port."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.max_send_message_length", _REPLY_BYTES),
            ("grpc.so_reuseport", 0),
        ]
    )
    servicer = InferenceServicer(oip)
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
