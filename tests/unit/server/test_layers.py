"""One inference request enters each layer once: route -> data plane -> registry -> runtime.

Whatever the protocol (0.6 ``/run``, v2 REST, v2 gRPC), an inference looks its model up in
the registry exactly once, and no protocol module reaches the registry except through the
data plane.
"""

from __future__ import annotations

import ast
import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import cbor2
import numpy as np
import pytest
from onnx import TensorProto

import blindai.server
from blindai.server.protocols.grpc._generated import grpc_service_pb2 as pb
from blindai.server.protocols.grpc.servicer import InferenceServicer
from blindai.server.registry import ModelEntry, ModelRef, ModelRegistry, Visible
from tests.models import identity
from tests.unit.server._inprocess import InProcess, in_process

PROTOCOLS = Path(blindai.server.__file__).resolve().parent / "protocols"


class CountingRegistry(ModelRegistry):
    """A real registry that counts the lookups made in it."""

    def __init__(self) -> None:
        super().__init__(max_models=8)
        self.lookups = 0

    def get(self, ref: ModelRef, visible: Visible, *, owner: str | None = None) -> ModelEntry:
        self.lookups += 1
        return super().get(ref, visible, owner=owner)

    def versions(self, key: str, visible: Visible, *, owner: str | None = None) -> list[ModelEntry]:
        self.lookups += 1
        return super().versions(key, visible, owner=owner)


@pytest.fixture(scope="module")
def registry() -> CountingRegistry:
    return CountingRegistry()


@pytest.fixture(scope="module")
def server(registry: CountingRegistry) -> Iterator[InProcess]:
    with in_process(registry) as s:
        yield s


@pytest.fixture(scope="module")
def model_id(server: InProcess) -> str:
    return str(server.upload(identity(TensorProto.FLOAT), model_name="layers")["model_id"])


X = np.arange(3, dtype=np.float32).reshape(1, 3)


def _run_06(server: InProcess, model_id: str) -> None:
    tensor = {"info": {"fact": [1, 3], "datum_type": 0}, "bytes_data": X.tobytes()}
    body = cbor2.dumps({"model_id": model_id, "inputs": [tensor]})
    assert server.attested.post("/run", content=body).status_code == 200


def _run_v2(server: InProcess, model_id: str) -> None:
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [0, 1, 2]}]}
    resp = server.attested.post(f"/v2/models/{model_id}/infer", content=json.dumps(doc))
    assert resp.status_code == 200, resp.text


def _run_grpc(server: InProcess, model_id: str) -> None:
    request = pb.ModelInferRequest(model_name=model_id)
    request.inputs.add(name="x", datatype="FP32", shape=[1, 3]).contents.fp32_contents.extend(
        [0, 1, 2]
    )
    servicer = InferenceServicer(server.apps.oip, server.apps.access)
    reply = asyncio.run(servicer.ModelInfer(request, None))
    assert list(reply.outputs[0].shape) == [1, 3]


@pytest.mark.parametrize("run", [_run_06, _run_v2, _run_grpc], ids=["0.6", "v2", "grpc"])
def test_an_inference_looks_its_model_up_once(
    server: InProcess, registry: CountingRegistry, model_id: str, run: object
) -> None:
    assert callable(run)
    before = registry.lookups
    run(server, model_id)
    assert registry.lookups - before == 1


@pytest.mark.parametrize("path", sorted(PROTOCOLS.rglob("*.py")), ids=lambda p: p.name)
def test_no_protocol_module_reaches_the_registry(path: Path) -> None:
    """Protocols call the data plane only (its lookups are where access control sits)."""
    tree = ast.parse(path.read_text())
    reached = [
        n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "registry"
    ]
    assert reached == [], f"{path.name} reaches .registry on lines {reached}"
