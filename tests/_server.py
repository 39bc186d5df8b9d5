"""Start a real ``blindai serve`` process on free loopback ports, for integration tests."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@dataclass
class ServerProcess:
    """A running server: its ports and process."""

    host: str
    unattested_port: int
    attested_port: int
    management_port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def ports(self) -> dict[str, int]:
        """Keyword arguments for blindai.connect."""
        return {
            "unattested_server_port": self.unattested_port,
            "attested_server_port": self.attested_port,
            "model_management_port": self.management_port,
        }

    def log(self) -> str:
        """What the server has logged so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Terminate the process."""
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(
    log_dir: Path, *extra: str, simulation: bool = True, https: bool = False
) -> ServerProcess:
    """Start ``python -m blindai serve`` and wait until the unattested port answers.

    Free ports can be taken by another process between the probe and the bind: then it
    tries again with new ports.
    """
    for attempt in range(5):
        try:
            return _start(log_dir, extra, simulation, https)
        except PortTaken:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


class PortTaken(RuntimeError):
    """The server could not bind one of its ports."""


def _start(log_dir: Path, extra: tuple[str, ...], simulation: bool, https: bool) -> ServerProcess:
    u, a, m = free_ports(3)
    log_path = log_dir / f"server-{u}.log"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable,
        "-m",
        "blindai",
        "serve",
        "--host",
        "127.0.0.1",
        "--unattested-port",
        str(u),
        "--attested-port",
        str(a),
        "--management-port",
        str(m),
    ]
    if simulation:
        cmd.append("--simulation")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*cmd, *extra], stdout=log, stderr=subprocess.STDOUT, env=env)
    server = ServerProcess("127.0.0.1", u, a, m, proc, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            if "Address already in use" in server.log():
                raise PortTaken(server.log())
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()}")
        try:
            # readiness only: nothing read here is trusted
            scheme = "https" if https else "http"
            ctx = ssl._create_unverified_context() if https else None
            with urllib.request.urlopen(f"{scheme}://127.0.0.1:{u}/", timeout=1, context=ctx):
                return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server did not start:\n{server.log()}")
