"""Start and stop a ``blindai serve --simulation`` process on free loopback ports (for scripts).

Example::

    with simulation_server() as server:
        conn = blindai.connect(server.host, simulation_mode=True, **server.ports)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ServerProcess", "free_ports", "simulation_server", "start_simulation_server"]

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind((HOST, 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@dataclass
class ServerProcess:
    """A running server: where it listens, its process and its log file."""

    host: str
    unattested_port: int
    attested_port: int
    management_port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def ports(self) -> dict[str, int]:
        """Keyword arguments for ``blindai.connect``."""
        return {
            "unattested_server_port": self.unattested_port,
            "attested_server_port": self.attested_port,
            "model_management_port": self.management_port,
        }

    def log(self) -> str:
        """What the server has logged so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Terminate the process (kill it if it does not stop within 10 s)."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _env() -> dict[str, str]:
    """The current environment, with this checkout's ``src`` first on PYTHONPATH."""
    paths = [str(REPO / "src"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED="1")


def _wait_ready(server: ServerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://{server.host}:{server.unattested_port}/"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"server exited with status {server.process.returncode}:\n{server.log()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server did not answer within {timeout:.0f} s:\n{server.log()}")


def start_simulation_server(log_dir: Path, timeout: float = 30.0) -> ServerProcess:
    """Start ``python -m blindai serve --simulation`` and wait until its unattested port answers."""
    u, a, m = free_ports(3)
    log_path = log_dir / f"server-{u}.log"
    cmd = [
        sys.executable,
        "-m",
        "blindai",
        "serve",
        "--simulation",
        "--host",
        HOST,
        "--unattested-port",
        str(u),
        "--attested-port",
        str(a),
        "--management-port",
        str(m),
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env())
    server = ServerProcess(HOST, u, a, m, proc, log_path)
    _wait_ready(server, timeout)
    return server


@contextmanager
def simulation_server(timeout: float = 30.0) -> Iterator[ServerProcess]:
    """A simulation server for the duration of the ``with`` block; always stopped after."""
    with tempfile.TemporaryDirectory(prefix="blindai-") as tmp:
        server = start_simulation_server(Path(tmp), timeout)
        try:
            yield server
        finally:
            server.stop()
