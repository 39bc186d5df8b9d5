"""``blindai serve --device cuda``: CUDA or a one-line refusal, never a silent CPU fallback.

Where onnxruntime has no CUDA execution provider (every CPU-only machine, and this project's
CI), the refusal is tested and the end-to-end CUDA test is skipped with its reason; on a GPU
machine (``scripts/gpu_check.sh``) it is the other way round.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import blindai
from blindai.errors import ConfigurationError
from blindai.server.runtime import OnnxModel, check_device, providers_for
from tests._server import free_ports, start_server
from tests.models import matmul

from .test_cli_attest import _lines
from .test_cli_attest import blindai as blindai_cli

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no GPU lent to this session")
without_cuda = pytest.mark.skipif(
    HAS_CUDA, reason="CUDA is available here: the refusal cannot be shown"
)


def test_providers() -> None:
    assert providers_for("cpu") == ["CPUExecutionProvider"]
    assert providers_for("cuda", 2) == [
        ("CUDAExecutionProvider", {"device_id": 2}),
        "CPUExecutionProvider",
    ]
    check_device("cpu")  # nothing to check


@without_cuda
def test_check_device_refuses_without_cuda() -> None:
    with pytest.raises(ConfigurationError, match="no CUDA execution provider"):
        check_device("cuda")


@without_cuda
def test_serve_device_cuda_refuses_in_one_line() -> None:
    u, a, m = free_ports(3)
    done = blindai_cli(
        "serve", "--simulation", "--device", "cuda", "--host", "127.0.0.1",
        "--unattested-port", u, "--attested-port", a, "--management-port", m, "--grpc-port", "0",
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    lines = _lines(done.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("ConfigurationError: --device cuda: onnxruntime"), lines


@without_cuda
def test_a_session_onnxruntime_put_on_the_cpu_is_refused() -> None:
    """Asked for CUDA it lacks, onnxruntime warns and runs the session on the CPU: refused."""
    from blindai.errors import ModelNotReady

    with pytest.warns(UserWarning, match="CUDAExecutionProvider"):
        with pytest.raises(ModelNotReady, match="could not use CUDA on GPU 1") as caught:
            OnnxModel(matmul(8, 3), device="cuda", gpu_index=1)
    assert "CPUExecutionProvider" in caught.value.message


def test_serve_rejects_an_unknown_device() -> None:
    done = blindai_cli("serve", "--simulation", "--device", "tpu", timeout=30)
    assert done.returncode == 2
    assert done.stderr == "ConfigurationError: --device: Input should be 'cpu' or 'cuda'\n"


@needs_cuda
def test_cuda_session_runs_on_cuda() -> None:
    model = OnnxModel(matmul(8, 3), device="cuda")
    x = np.ones((2, 8), np.float32)
    ((_, y),) = model.predict({"x": x})
    ref = ort.InferenceSession(matmul(8, 3), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(y, ref.run(None, {"x": x})[0], rtol=1e-4, atol=1e-4)


@needs_cuda
def test_cuda_end_to_end_in_simulation(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--device", "cuda", timeout=120)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", blindai.SimulationModeWarning)
            conn = blindai.connect(server.host, simulation_mode=True, **server.ports)
        with conn:
            assert conn.server_info["device"] == "cuda"
            model_id = conn.upload_model(matmul(16, 4)).model_id
            x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
            y = next(iter(conn.predict(model_id, [x]).values()))
        ref = ort.InferenceSession(matmul(16, 4), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(y, ref.run(None, {"x": x})[0], rtol=1e-4, atol=1e-4)
        assert "on cuda" in server.log()
    finally:
        server.stop()
