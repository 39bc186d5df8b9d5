"""Start and stop a ``blindai serve --simulation`` process on free loopback ports (for scripts).

Example::

    with simulation_server() as server:
        conn = blindai.connect(server.host, simulation_mode=True, **server.ports)
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "EchoServer",
    "PortTaken",
    "ServerProcess",
    "echo_server",
    "free_ports",
    "simulation_server",
    "spawn_server",
    "start_server",
    "start_simulation_server",
    "wait_ready",
]

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
    grpc_port: int = 0
    """The attested gRPC port (a free one, so that test servers never share 9926)."""

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

    def wait_for_log(self, text: str, timeout: float = 30.0) -> str:
        """The log, once it holds ``text`` (the server logs a request after answering it)."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.log()):
            if time.monotonic() > deadline:
                raise AssertionError(f"the server never logged {text!r}:\n{log[-2000:]}")
            time.sleep(0.01)
        return log

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


class PortTaken(RuntimeError):
    """The server could not bind a port: another process took it after the probe."""


def _wait_ready(server: ServerProcess, timeout: float, https: bool) -> None:
    deadline = time.monotonic() + timeout
    scheme = "https" if https else "http"
    url = f"{scheme}://{server.host}:{server.unattested_port}/"
    # readiness only: nothing read here is trusted; loopback, so never through a proxy that
    # HTTP_PROXY / HTTPS_PROXY may name
    context = ssl._create_unverified_context() if https else None
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            if "Address already in use" in server.log():
                raise PortTaken(server.log())
            raise RuntimeError(
                f"server exited with status {server.process.returncode}:\n{server.log()}"
            )
        try:
            with opener.open(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server did not answer within {timeout:.0f} s:\n{server.log()}")


def spawn_server(
    log_dir: Path,
    host: str | None,
    ports: tuple[int, int, int],
    *extra: str,
    grpc_port: int | None = None,
    simulation: bool = True,
    module: str = "blindai",
    cwd: Path = REPO,
) -> ServerProcess:
    """Start ``python -m MODULE serve`` on ``host`` (None: the server's default) and ``ports``
    (unattested, attested, management; ``grpc_port`` None: the server's default) without
    waiting for it (:func:`wait_ready` waits): several servers then start side by side.
    ``cwd``: its working directory (the repository root, from which ``module`` is found)."""
    u, a, m = ports
    log_path = log_dir / f"server-{host or 'default'}-{u}.log"
    n = 1
    while log_path.exists():  # a server restarted on the same address: a log of its own
        n += 1
        log_path = log_dir / f"server-{host or 'default'}-{u}-{n}.log"
    cmd = [
        sys.executable,
        "-m",
        module,
        "serve",
        *(["--simulation"] if simulation else []),
        *(["--host", host] if host is not None else []),
        "--unattested-port",
        str(u),
        "--attested-port",
        str(a),
        "--management-port",
        str(m),
        *(["--grpc-port", str(grpc_port)] if grpc_port is not None else []),
        *extra,
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=cwd)
    where = host if host not in (None, "0.0.0.0", "::") else HOST
    return ServerProcess(where, u, a, m, proc, log_path, grpc_port or 0)


def wait_ready(server: ServerProcess, timeout: float = 30.0, *, https: bool = False) -> None:
    """Wait until ``server`` answers on its unattested port (PortTaken, RuntimeError if not)."""
    _wait_ready(server, timeout, https)


def _start_once(
    log_dir: Path,
    extra: tuple[str, ...],
    simulation: bool,
    https: bool,
    timeout: float,
    host: str | None,
    module: str = "blindai",
) -> ServerProcess:
    u, a, m, g = free_ports(4)
    server = spawn_server(
        log_dir, host, (u, a, m), *extra, grpc_port=g, simulation=simulation, module=module
    )
    server.host = HOST  # readiness and clients: 127.0.0.1, which every host here serves
    _wait_ready(server, timeout, https)
    return server


def start_server(
    log_dir: Path,
    *extra: str,
    simulation: bool = True,
    https: bool = False,
    timeout: float = 30.0,
    host: str | None = HOST,
    module: str = "blindai",
) -> ServerProcess:
    """Start ``python -m MODULE serve [--simulation] EXTRA...``; wait until it answers.

    A free port can be taken by another process between the probe and the bind: then it
    tries again with new ports (five times). ``https``: the unattested port serves HTTPS.
    ``host``: the ``--host`` flag (None: none, the server's default); readiness is checked on
    127.0.0.1, which every choice of ``host`` here must serve. ``module`` (run from the
    repository root) replaces ``blindai``, e.g. by a test launcher that gives the real server a
    hardware double.
    """
    for attempt in range(5):
        try:
            return _start_once(log_dir, extra, simulation, https, timeout, host, module)
        except PortTaken:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


def start_simulation_server(log_dir: Path, *extra: str, timeout: float = 30.0) -> ServerProcess:
    """Start ``python -m blindai serve --simulation EXTRA...``; wait until it answers."""
    return start_server(log_dir, *extra, timeout=timeout)


@contextmanager
def simulation_server(*extra: str, timeout: float = 30.0) -> Iterator[ServerProcess]:
    """A simulation server (``serve`` flags in ``extra``) for the ``with`` block; always stopped."""
    with tempfile.TemporaryDirectory(prefix="blindai-") as tmp:
        server = start_simulation_server(Path(tmp), *extra, timeout=timeout)
        try:
            yield server
        finally:
            server.stop()


@dataclass
class EchoServer:
    """A bare uvicorn + starlette HTTPS server whose ``POST /run`` returns the request body."""

    host: str
    port: int
    cert_der: bytes
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        """Terminate the process."""
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _serve_echo(port: int) -> None:
    """Child side: same TLS identity type and uvicorn settings as ``blindai serve``."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from blindai.server.tls import TlsIdentity

    async def echo(request: Request) -> Response:
        return Response(await request.body(), media_type="application/cbor")

    identity = TlsIdentity.generate()
    print(identity.cert_der.hex(), flush=True)  # the certificate only, for the client to pin
    app = Starlette(routes=[Route("/run", echo, methods=["POST"])])
    config = uvicorn.Config(
        app,
        host=HOST,
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="off",
        timeout_keep_alive=30,
        h11_max_incomplete_event_size=1 << 16,
    )
    config.load()
    config.ssl = identity.server_context()
    uvicorn.Server(config).run()


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"echo server exited with status {proc.returncode}")
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"echo server did not listen within {timeout:.0f} s")


@contextmanager
def echo_server(timeout: float = 30.0) -> Iterator[EchoServer]:
    """An HTTPS echo server (for benchmarks) for the duration of the ``with`` block."""
    (port,) = free_ports(1)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--echo", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=_env())
    try:
        assert proc.stdout is not None
        cert_der = bytes.fromhex(proc.stdout.readline().decode().strip())
        _wait_port(port, proc, timeout)
        server = EchoServer(HOST, port, cert_der, proc)
        yield server
    finally:
        EchoServer(HOST, port, b"", proc).stop()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--echo":
        _serve_echo(int(sys.argv[2]))
    else:
        sys.exit("usage: _serverproc.py --echo PORT  (used by scripts/bench.py)")
