"""A crashed server leaves no core file: its memory holds every tenant's models and inputs.

Measured before the fix: a server started where core files are allowed, killed by SIGSEGV after
one run, wrote a 179 MB ``core`` holding the model's and the input's marker bytes.
"""

from __future__ import annotations

import resource
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from tests._procs import children
from tests._server import ServerProcess, connect, free_ports, spawn_server, wait_ready
from tests.models import _model

MARKER = b"SECRET-7f3a-DUMP"


@pytest.fixture
def core_files_allowed() -> Iterator[None]:
    """Core files allowed for the processes started meanwhile (as many deployments do)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    if hard == 0:
        pytest.skip("core files are off for this whole session (hard RLIMIT_CORE 0)")
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))


def _marked_model() -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    return _model(helper.make_graph(nodes, "g", [x], [y], doc_string=MARKER.decode()))


def test_a_crashed_server_writes_no_core_file(core_files_allowed, tmp_path):
    logs, cwd = tmp_path / "logs", tmp_path / "cwd"
    logs.mkdir()
    cwd.mkdir()
    *ports, grpc_port = free_ports(4)  # not the server's default gRPC port: it may be taken
    server: ServerProcess = spawn_server(
        logs, "127.0.0.1", tuple(ports), grpc_port=grpc_port, cwd=cwd
    )
    try:
        wait_ready(server)
        pid = server.process.pid
        assert resource.prlimit(pid, resource.RLIMIT_CORE) == (0, 0)
        spare = children(pid)
        assert spare, "the compile guard's spare child is started before the server serves"
        for child in spare:
            assert resource.prlimit(child, resource.RLIMIT_CORE) == (0, 0)
        with connect(server) as conn:
            model_id = conn.upload_model(_marked_model()).model_id
            marked = np.frombuffer(MARKER, np.float32).reshape(1, 4)
            got = conn.run_model(model_id, input_tensors={"x": marked})
            assert got.output[0].as_numpy().tobytes() == MARKER  # served, non-dumpable
        server.process.send_signal(signal.SIGSEGV)
        assert server.process.wait(30) == -signal.SIGSEGV
    finally:
        server.stop()
    pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
    if pattern.startswith("|") or "/" in pattern:
        pytest.skip(f"core files go elsewhere here (core_pattern {pattern!r})")
    assert list(cwd.iterdir()) == []
