"""HAProxy in TCP mode in front of BlindAI replicas on loopback, as an L4 balancer in a cluster.

Each of the three ports (unattested, attested, management) gets a frontend on ``host`` and a
backend listing every replica on the same port, balanced round robin per TCP connection. TLS
passes through untouched: it ends inside each replica, as it must. A connection that cannot
reach its replica (a replica killed) is sent to another one (``option redispatch``).

Example::

    balancer = start_haproxy(["127.0.0.2", "127.0.0.3"], workdir=tmp)
    ...  # blindai.connect(balancer.host, **balancer.connect_ports, keep_alive=False)
    balancer.stop()
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_PORTS",
    "Balancer",
    "haproxy_binary",
    "loopback_hosts",
    "port_free",
    "start_haproxy",
]

DEFAULT_PORTS = (9923, 9924, 9925)
ROLES = ("unattested", "attested", "management")


def haproxy_binary() -> str | None:
    """The ``haproxy`` executable, if installed (Debian puts it in /usr/sbin)."""
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")


def port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound now."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def loopback_hosts(n: int, ports: tuple[int, ...] = DEFAULT_PORTS) -> list[str]:
    """``n`` loopback addresses whose ``ports`` are all free: 127.0.0.2, .3, ... first, else
    a block of 127.X.0.2.. (other engineers' tests may hold the first ones)."""
    for block in range(0, 256):
        hosts = [f"127.{block}.0.{i}" for i in range(2, 2 + n)]
        if all(port_free(h, p) for h in hosts for p in ports):
            return hosts
    raise RuntimeError(f"no {n} loopback addresses with ports {ports} free")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Balancer:
    """A running HAProxy: where each role listens, its process, config and log."""

    host: str
    ports: tuple[int, int, int]
    process: subprocess.Popen[bytes]
    config_path: Path
    log_path: Path

    @property
    def connect_ports(self) -> dict[str, int]:
        """Keyword arguments for ``blindai.connect``."""
        return dict(
            zip(
                ("unattested_server_port", "attested_server_port", "model_management_port"),
                self.ports,
                strict=True,
            )
        )

    def stop(self) -> None:
        """Stop HAProxy (SIGTERM, then SIGKILL after 10 s)."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def config_text(host: str, ports: tuple[int, int, int], replicas: list[str]) -> str:
    """The HAProxy configuration: TCP mode, round robin, one backend per role."""
    lines = [
        "global",
        "    maxconn 512",
        "defaults",
        "    mode tcp",
        "    balance roundrobin",
        "    option redispatch",
        "    retries 3",
        "    timeout connect 2s",
        "    timeout client 120s",
        "    timeout server 120s",
    ]
    for role, front, back in zip(ROLES, ports, DEFAULT_PORTS, strict=True):
        lines += [f"frontend {role}", f"    bind {host}:{front}", f"    default_backend {role}"]
        lines += [f"backend {role}"]
        lines += [f"    server r{i} {addr}:{back}" for i, addr in enumerate(replicas, 1)]
    return "\n".join(lines) + "\n"


def start_haproxy(
    replicas: list[str], *, workdir: Path, host: str = "127.0.0.1", timeout: float = 10.0
) -> Balancer:
    """Start HAProxy in front of ``replicas`` (their default ports) on ``host``.

    It listens on the default ports when they are free on ``host``, else on free ones.
    """
    binary = haproxy_binary()
    if binary is None:
        raise RuntimeError("haproxy is not installed (apt-get install -y haproxy)")
    defaults_free = all(port_free(host, p) for p in DEFAULT_PORTS)
    chosen = DEFAULT_PORTS if defaults_free else (_free_port(host), _free_port(host), 0)
    if not defaults_free:
        chosen = (chosen[0], chosen[1], _free_port(host))
    config = workdir / "haproxy.cfg"
    config.write_text(config_text(host, chosen, replicas))
    log = workdir / "haproxy.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=out, stderr=out)
    balancer = Balancer(host, chosen, proc, config, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"haproxy exited ({proc.returncode}): {log.read_text()}")
        if not any(port_free(host, p) for p in chosen):
            return balancer
        time.sleep(0.05)
    balancer.stop()
    raise RuntimeError(f"haproxy did not listen within {timeout:.0f} s: {log.read_text()}")
