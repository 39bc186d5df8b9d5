"""The wire, shared by client and server: BlindAI 0.6 messages and their CBOR codec."""

from __future__ import annotations

from blindai.protocol.messages import DatumType, TensorInfo, WireTensor
from blindai.protocol.names import ERROR_HEADER, SERVER_NAME
from blindai.protocol.version import EXTENSION_VERSION, WIRE_VERSION

__all__ = [
    "ERROR_HEADER",
    "EXTENSION_VERSION",
    "SERVER_NAME",
    "WIRE_VERSION",
    "DatumType",
    "TensorInfo",
    "WireTensor",
]
