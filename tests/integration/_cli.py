"""Running ``python -m blindai`` in a subprocess, and what its output must look like.

Every error must end in one readable line on stderr (``Kind: message``) and a non-zero exit,
never a traceback. Simulation-mode warnings (lines starting with ``WARNING``) are allowed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests._server import REPO, ServerProcess, free_ports

__all__ = ["cli", "ok", "one_error_line", "serve_ports", "target"]


def cli(
    *args: str | Path,
    timeout: float = 60,
    env: dict[str, str] | None = None,
    python_code: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m blindai ARGS`` with this checkout on the path (``env`` added).

    ``python_code``: run this first, in the same interpreter (e.g. to block an import).
    """
    full_env = dict(os.environ, PYTHONPATH=str(REPO / "src"), **(env or {}))
    if python_code is None:
        command = [sys.executable, "-m", "blindai", *map(str, args)]
    else:
        run = "import runpy; runpy.run_module('blindai', run_name='__main__', alter_sys=True)"
        command = [sys.executable, "-c", f"{python_code}\n{run}", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=timeout)


def one_error_line(result: subprocess.CompletedProcess[str], kind: str, status: int) -> str:
    """Assert exit ``status``, no traceback, and exactly one ``kind: ...`` line; return it."""
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [ln for ln in result.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{kind}: "), lines[0]
    return lines[0]


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """Assert success; return stdout."""
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stdout


def serve_ports() -> list[str]:
    """``serve`` flags for loopback and three free ports (gRPC off: never the shared 9926)."""
    u, a, m = free_ports(3)
    ports = ["--unattested-port", str(u), "--attested-port", str(a), "--management-port", str(m)]
    ports += ["--grpc-port", "0"]
    return ["--host", "127.0.0.1", *ports]


def target(server: ServerProcess, *, simulation: bool = True) -> list[str]:
    """The connection flags for the session server."""
    flags = [
        "--host",
        server.host,
        "--unattested-port",
        str(server.unattested_port),
        "--attested-port",
        str(server.attested_port),
        "--management-port",
        str(server.management_port),
    ]
    return [*flags, "--simulation"] if simulation else flags
