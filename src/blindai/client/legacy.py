"""The older tutorial API (BlindAI 0.1-0.4 era), kept working as written::

    from blindai.client import BlindAiClient, ModelDatumType
    client = BlindAiClient()
    client.connect_server(addr="localhost", simulation=True)
    client.upload_model(model="model.onnx", shape=(1, 8), dtype=ModelDatumType.I64,
                        dtype_out=ModelDatumType.F32)
    response = client.run_model(flat_list)
    print(response.output)          # a flat list

``run_model`` without a model id runs the most recently uploaded model, as the single-model
server of those tutorials did.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from blindai.client.connection import Connection, connect
from blindai.errors import ConfigurationError
from blindai.protocol.messages import DatumType

__all__ = ["BlindAiClient", "ModelDatumType", "RunModelResponse", "UploadModelResponse"]

ModelDatumType = DatumType


@dataclass(frozen=True)
class UploadModelResponse:
    """What upload_model returns: the model's id and hash."""

    model_id: str
    hash: bytes


@dataclass(frozen=True)
class RunModelResponse:
    """``output``: the first output as a flat list; ``outputs``: every output, flat."""

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
        server_name: str = "blindai-srv",
        policy: str | os.PathLike[str] | None = None,
        certificate: str | os.PathLike[str] | None = None,
        simulation: bool = False,
        untrusted_port: int = 9923,
        attested_port: int = 9924,
        model_management_port: int = 9925,
    ) -> None:
        """Attest and connect; ``simulation=True`` accepts a simulation server (warns)."""
        del server_name, certificate  # the name is always checked; the cert comes from evidence
        self._conn = connect(
            addr,
            unattested_server_port=untrusted_port,
            attested_server_port=attested_port,
            model_management_port=model_management_port,
            hazmat_manifest_path=policy,
            simulation_mode=simulation,
            simulation_option="simulation=True",
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
        return UploadModelResponse(reply.model_id, reply.hash)

    def run_model(
        self, data_list: Any, sign: bool = False, model_id: str | None = None
    ) -> RunModelResponse:
        """Run the given (or most recent) model on a flat list or an array."""
        del sign
        target = self._models.get(model_id) if model_id else self._last
        if target is None:
            raise ConfigurationError(
                "no model to run: upload one first, or pass the model_id of an uploaded model"
            )
        reply = self._connection().run_model(
            model_id=target.model_id,
            input_tensors=data_list,
            dtypes=target.dtype,
            shapes=target.shape,
        )
        flats = [t.as_flat() for t in reply.output]
        return RunModelResponse(flats[0] if flats else [], flats)

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
