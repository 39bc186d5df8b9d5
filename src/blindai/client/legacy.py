"""The older tutorial API (BlindAI 0.1-0.4 era), kept working as written::

    from blindai.client import BlindAiClient, ModelDatumType
    client = BlindAiClient()
    client.connect_server(addr="localhost", simulation=True)
    client.upload_model(model="model.onnx", shape=(1, 8), dtype=ModelDatumType.I64,
                        dtype_out=ModelDatumType.F32)
    response = client.run_model(flat_list)
    print(response.output)          # a flat list

``run_model`` without a model id runs the server's most recently uploaded model, as the
single-model server of those tutorials did, whichever client uploaded it. A flat list takes the
dtype and shape given at upload when this client uploaded the model; otherwise its dtype follows
its values (integers: I64, floats: F32, booleans: Bool) and the server gives it the model's input
shape (see docs/client.md).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from blindai.client._connect import connect
from blindai.client.connection import Connection, UploadModelResponse
from blindai.errors import ConfigurationError
from blindai.protocol.messages import DatumType
from blindai.protocol.names import SERVER_NAME

__all__ = ["BlindAiClient", "FlatRunResponse", "ModelDatumType"]

ModelDatumType = DatumType
_FLAT_TYPES = {"b": DatumType.Bool, "i": DatumType.I64, "u": DatumType.I64, "f": DatumType.F32}


@dataclass(frozen=True)
class FlatRunResponse:
    """What ``BlindAiClient.run_model`` returns: ``output``, the first output as a flat list;
    ``outputs``, every output, flat."""

    output: list[Any]
    outputs: list[list[Any]] = field(default_factory=list)


@dataclass
class _Uploaded:
    model_id: str
    shape: tuple[int, ...] | None
    dtype: DatumType


class BlindAiClient:
    """A client holding one connection and remembering the last uploaded model."""

    def __init__(self, debug_mode: bool = False) -> None:
        self._conn: Connection | None = None
        self._last: _Uploaded | None = None
        self._models: dict[str, _Uploaded] = {}

    def connect_server(
        self,
        addr: str = "localhost",
        server_name: str = SERVER_NAME,
        policy: str | os.PathLike[str] | None = None,
        certificate: str | os.PathLike[str] | None = None,
        simulation: bool = False,
        untrusted_port: int = 9923,
        attested_port: int = 9924,
        model_management_port: int = 9925,
        *,
        api_key: str | None = None,
    ) -> None:
        """Attest and connect; ``simulation=True`` accepts a simulation server (warns);
        ``api_key``: for a server with access control (sent over attested TLS only)."""
        del server_name, certificate  # the name is always checked; the cert comes from evidence
        self._conn = connect(
            addr,
            unattested_server_port=untrusted_port,
            attested_server_port=attested_port,
            model_management_port=model_management_port,
            hazmat_manifest_path=policy,
            simulation_mode=simulation,
            simulation_option="simulation=True",
            api_key=api_key,
        )

    def _connection(self) -> Connection:
        if self._conn is None:
            raise ConfigurationError("call connect_server() first")
        return self._conn

    def upload_model(
        self,
        model: Any,
        shape: Sequence[int] | None = None,
        dtype: DatumType = DatumType.F32,
        dtype_out: DatumType = DatumType.F32,
        sign: bool = False,
        model_name: str | None = None,
    ) -> UploadModelResponse:
        """Upload a model; ``shape``/``dtype`` are remembered for flat-list runs."""
        del dtype_out, sign  # the server reads output types from the model itself
        reply = self._connection().upload_model(model, model_name=model_name)
        uploaded = _Uploaded(
            reply.model_id, tuple(shape) if shape is not None else None, DatumType(dtype)
        )
        self._models[reply.model_id] = uploaded
        self._last = uploaded
        return reply

    def run_model(
        self, data_list: Any, sign: bool = False, model_id: str | None = None
    ) -> FlatRunResponse:
        """Run a model (by default the server's newest) on a flat list or an array."""
        del sign
        known = self._models.get(model_id) if model_id else self._last
        dtype = known.dtype if known is not None else _flat_dtype(data_list)
        reply = self._connection().run_model(
            model_id=model_id or "",
            input_tensors=data_list,
            dtypes=dtype,
            shapes=known.shape if known is not None else None,
        )
        flats = [t.as_flat() for t in reply.output]
        return FlatRunResponse(flats[0] if flats else [], flats)

    def delete_model(self, model_id: str | None = None) -> None:
        """Delete a model (the most recent by default)."""
        target = model_id or (self._last.model_id if self._last else None)
        if target is None:
            raise ConfigurationError("no model to delete")
        self._connection().delete_model(target)
        self._models.pop(target, None)
        if self._last is not None and self._last.model_id == target:
            self._last = None

    def close_connection(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> BlindAiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_connection()


def _flat_dtype(data: Any) -> DatumType | None:
    """The datum type for a list the client knows no dtype for; None for arrays (their own)."""
    if isinstance(data, np.ndarray) or not isinstance(data, list | tuple):
        return None
    kind = np.asarray(data).dtype.kind
    if kind not in _FLAT_TYPES:
        raise ConfigurationError(
            "run_model takes a flat list of numbers or booleans (or a numpy array)"
        )
    return _FLAT_TYPES[kind]
