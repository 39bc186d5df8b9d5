"""The older tutorial API, used exactly as the BlindAI tutorials wrote it.

The DistilBERT tutorial uploads a model taking int64 token ids of shape (1, 8) and runs it on a
flat Python list; here an I64-input model built in the test stands in for DistilBERT. The port
keywords of ``connect_server`` are our addition, so the test can use free ports.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from blindai.attestation.simulation import SimulationModeWarning
from blindai.client import BlindAiClient, ModelDatumType
from blindai.errors import BlindAIError, ConfigurationError, ModelNotFound, VerificationError
from tests._server import ServerProcess, start_server
from tests.models import OPSET

SEQ = 8
CLASSES = 3


def _token_classifier(bias: tuple[float, ...] = (1, -2, 5)) -> bytes:
    """logits = Cast<float>(ids) @ W + b: int64 [1, 8] in, float [1, 3] out.

    Integer weights keep every product exact in float32, so the server's (optimised) run and
    onnxruntime in-process must agree bit for bit.
    """
    w = np.arange(SEQ * CLASSES, dtype=np.float32).reshape(SEQ, CLASSES) % 7 - 3
    b = np.array(bias, dtype=np.float32)
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, SEQ])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, CLASSES])
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids_f"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["ids_f", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "B"], ["logits"]),
    ]
    inits = [
        helper.make_tensor("W", TensorProto.FLOAT, w.shape, w.ravel()),
        helper.make_tensor("B", TensorProto.FLOAT, b.shape, b),
    ]
    graph = helper.make_graph(nodes, "tokens", [ids], [logits], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.onnx"
    path.write_bytes(_token_classifier())
    return path


@pytest.fixture
def client(server: ServerProcess) -> Iterator[BlindAiClient]:
    """``BlindAiClient().connect_server(...)`` against the session's simulation server."""
    c = BlindAiClient()
    with pytest.warns(SimulationModeWarning):
        c.connect_server(
            addr="127.0.0.1",
            simulation=True,
            untrusted_port=server.unattested_port,
            attested_port=server.attested_port,
            model_management_port=server.management_port,
        )
    with c:
        yield c


def _reference(model_path: Path, flat: list[int]) -> list[float]:
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    x = np.asarray(flat, dtype=np.int64).reshape(1, SEQ)
    (out,) = session.run(None, {"input_ids": x})
    return [float(v) for v in out.ravel()]


def test_upload_then_run_a_flat_list(client: BlindAiClient, model_path: Path) -> None:
    client.upload_model(
        model=str(model_path),
        shape=(1, SEQ),
        dtype=ModelDatumType.I64,
        dtype_out=ModelDatumType.F32,
    )
    flat = [101, 7592, 1010, 2026, 3899, 2003, 10140, 102]  # token ids, as in the tutorial
    response = client.run_model(flat)
    assert isinstance(response.output, list)
    assert len(response.output) == CLASSES
    assert response.output == _reference(model_path, flat)
    assert response.outputs == [response.output]


def test_upload_returns_id_and_sha256(client: BlindAiClient, model_path: Path) -> None:
    import hashlib

    reply = client.upload_model(model=str(model_path), shape=(1, SEQ), dtype=ModelDatumType.I64)
    assert reply.model_id
    assert reply.hash == hashlib.sha256(model_path.read_bytes()).digest()


def test_run_an_earlier_model_by_id(
    client: BlindAiClient, model_path: Path, tmp_path: Path
) -> None:
    first = client.upload_model(model=str(model_path), shape=(1, SEQ), dtype=ModelDatumType.I64)
    other = tmp_path / "other.onnx"
    other.write_bytes(_token_classifier(bias=(100, 200, 300)))
    client.upload_model(model=str(other), shape=(1, SEQ), dtype=ModelDatumType.I64)
    flat = list(range(SEQ))
    assert client.run_model(flat).output == _reference(other, flat)  # the latest by default
    assert client.run_model(flat, model_id=first.model_id).output == _reference(model_path, flat)


@pytest.fixture(scope="module")
def empty_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of its own, with no model yet."""
    proc = start_server(tmp_path_factory.mktemp("tutorial"))
    yield proc
    proc.stop()


def _new_client(server: ServerProcess) -> BlindAiClient:
    """``BlindAiClient()`` then ``connect_server("localhost", simulation=True)`` (+ our ports)."""
    c = BlindAiClient()
    with pytest.warns(SimulationModeWarning):
        c.connect_server(
            "localhost",
            simulation=True,
            untrusted_port=server.unattested_port,
            attested_port=server.attested_port,
            model_management_port=server.management_port,
        )
    return c


def test_a_new_client_runs_the_servers_newest_model(
    empty_server: ServerProcess, model_path: Path, tmp_path: Path
) -> None:
    """The DistilBERT tutorial as written: upload with one client, run with a new one, no id."""
    flat = [101, 7592, 1010, 2026, 3899, 2003, 10140, 102]
    with _new_client(empty_server) as nobody_uploaded:
        with pytest.raises(ModelNotFound, match="no model has been uploaded"):
            nobody_uploaded.run_model(flat)
    with _new_client(empty_server) as uploader:
        uploader.upload_model(
            model=str(model_path), shape=(1, SEQ), dtype=ModelDatumType.I64,
            dtype_out=ModelDatumType.F32,
        )  # fmt: skip
    with _new_client(empty_server) as runner:  # knows neither the model, its dtype nor its shape
        assert runner.run_model(flat).output == _reference(model_path, flat)
    other = tmp_path / "other.onnx"
    other.write_bytes(_token_classifier(bias=(100, 200, 300)))
    with _new_client(empty_server) as uploader:
        uploader.upload_model(model=str(other), shape=(1, SEQ), dtype=ModelDatumType.I64)
        with _new_client(empty_server) as runner:
            assert runner.run_model(flat).output == _reference(other, flat)  # the newest
            uploader.delete_model()
            assert runner.run_model(flat).output == _reference(model_path, flat)


def test_wrong_length_flat_list_is_a_typed_error(client: BlindAiClient, model_path: Path) -> None:
    client.upload_model(model=str(model_path), shape=(1, SEQ), dtype=ModelDatumType.I64)
    with pytest.raises(BlindAIError, match="reshape"):
        client.run_model([1] * (SEQ - 1))


def test_upload_before_connect_is_a_typed_error(model_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="connect_server"):
        BlindAiClient().upload_model(model=str(model_path), shape=(1, SEQ))


def test_simulation_server_refused_without_simulation_flag(server: ServerProcess) -> None:
    c = BlindAiClient()
    with pytest.raises(VerificationError, match="SIMULATION"):
        c.connect_server(
            addr="127.0.0.1",
            untrusted_port=server.unattested_port,
            attested_port=server.attested_port,
            model_management_port=server.management_port,
        )


@pytest.mark.torch
def test_distilbert_tutorial_flow_with_a_torch_stand_in(
    client: BlindAiClient, server: ServerProcess, tmp_path: Path
) -> None:
    """The README's DistilBERT walk-through, with a tiny torch model in place of DistilBERT.

    Same export call (TorchScript exporter, opset 11, input ``input``, output ``output``,
    dynamic batch), same ``inputs.shape`` from a torch tensor, same flat-list run. In the torch
    tier (``make test-torch``); tests/conftest.py skips it with a reason where torch is absent.
    """
    import torch

    class TinyClassifier(torch.nn.Module):  # embedding + mean + linear, as a text classifier
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(30522, 16)
            self.fc = torch.nn.Linear(16, 2)

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            logits: torch.Tensor = self.fc(self.emb(input_ids).mean(dim=1))
            return logits

    torch.manual_seed(0)
    model = TinyClassifier().eval()
    ids = [101, 1045, 2293, 9932, 1998, 9394, 999, 102]  # "i love ai and privacy!"
    inputs = torch.tensor([ids])
    path = tmp_path / "tiny-classifier.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated in torch 2.9+
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (inputs,),
            str(path),
            export_params=True,
            opset_version=11,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch_size"}, "output": {0: "batch_size"}},
            dynamo=False,
        )

    client.upload_model(model=str(path), shape=inputs.shape, dtype=ModelDatumType.I64)
    response = client.run_model(inputs.flatten().tolist())

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"input": inputs.numpy()})
    assert len(response.output) == 2
    np.testing.assert_allclose(response.output, expected.ravel(), rtol=1e-6, atol=1e-7)
    with torch.no_grad():
        np.testing.assert_allclose(response.output, model(inputs).numpy().ravel(), rtol=1e-5)
    # the tutorial's second client: no model id, dtype or shape; the model's input is
    # [batch_size, 8], so the server gives the 8 token ids the shape [1, 8]
    with _new_client(server) as runner:
        assert runner.run_model(inputs.flatten().tolist()).output == response.output
