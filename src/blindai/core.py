"""BlindAI 0.6.3's module path for the client API: ``from blindai.core import connect``."""

from __future__ import annotations

from blindai.client import Connection, DatumType, RunModelResponse, UploadModelResponse, connect

ModelDatumType = DatumType

__all__ = [
    "Connection",
    "DatumType",
    "ModelDatumType",
    "RunModelResponse",
    "UploadModelResponse",
    "connect",
]
