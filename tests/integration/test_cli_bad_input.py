"""The ``blindai`` command given bad local input and put in bad circumstances: files that are
no files (a FIFO, a device, a directory), files whose size lies, a server that refuses a
request before it has read it, an output folder that cannot be written, an interrupt.

Each must end in one readable line on stderr and the documented exit status (docs/cli.md),
never a hang, a traceback or a read without end (see tests/integration/_cli.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._server import ServerProcess, start_server
from tests.integration._cli import cli, one_error_line, target
from tests.models import matmul

MiB = 1 << 20


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A simulation server taking models of at most 1 MiB."""
    proc = start_server(tmp_path_factory.mktemp("small"), "--max-model-bytes", str(MiB))
    yield proc
    proc.stop()


def test_upload_far_over_the_limit_gets_the_servers_413(
    small_server: ServerProcess, tmp_path: Path
) -> None:
    # the server answers 413 from the headers and closes while the client is still sending:
    # its answer, not the broken socket, is what the user must read
    huge = tmp_path / "huge.onnx"
    with huge.open("wb") as f:
        f.truncate(4 << 30)  # sparse: no disk used
    r = cli("upload", huge, *target(small_server), timeout=120)
    line = one_error_line(r, "PayloadTooLarge", 1)
    assert "413" in line and "--max-model-bytes 1048576" in line
    assert ok_model(small_server, tmp_path)  # and the server serves on


def ok_model(server: ServerProcess, tmp_path: Path) -> bool:
    model = tmp_path / "dense.onnx"
    model.write_bytes(matmul(4, 2))
    r = cli("upload", model, *target(server))
    return r.returncode == 0 and r.stdout.startswith("model_id ")
