"""Fixtures for driving the original BlindAI clients from PyPI against our server.

The clients live in their own venvs (``.venv-compat/preview``, ``.venv-compat/v063``, built by
``scripts/compat_env.sh``); each test writes a JSON plan, runs ``tests/compat/drivers/
blindai_client.py`` with that venv's python and reads back one JSON result. Our server runs in a
subprocess on free loopback ports, in simulation mode, for the whole session.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
# BLINDAI_COMPAT_VENVS: another directory of compat venvs (tests of the tier's own skip use it)
VENVS = Path(os.environ.get("BLINDAI_COMPAT_VENVS") or REPO / ".venv-compat")
DRIVER = Path(__file__).resolve().parent / "drivers" / "blindai_client.py"
CLIENTS = ("preview", "v063")
STARTUP_TIMEOUT_S = 90.0
DRIVER_TIMEOUT_S = 300.0

# Environment variables that would change what the original clients do: requests lets the CA
# bundle variables override a session's pinned `verify=`; the PYTHON* ones could put the
# project's own `blindai` package in front of the PyPI one (the driver also runs with -I).
_SCRUBBED = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")


def _scrubbed_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(key, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def _free_ports(count: int) -> list[int]:
    """Ask the kernel for distinct free loopback ports (all held open until all are chosen)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass(frozen=True)
class Server:
    """Where the server under test listens."""

    host: str
    unattested_port: int
    attested_port: int
    management_port: int
    log: Path

    def plan(self, client: str, ops: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        """A driver plan addressed to this server."""
        return {
            "client": client,
            "host": self.host,
            "unattested_port": self.unattested_port,
            "attested_port": self.attested_port,
            "management_port": self.management_port,
            "simulation_mode": True,
            "trace": True,
            "ops": ops,
            **extra,
        }


def _log_tail(log: Path, limit: int = 4000) -> str:
    try:
        return log.read_text(errors="replace")[-limit:]
    except OSError:
        return "(no server log)"


def _wait_until_serving(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last_error = "no attempt"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"blindai serve exited with {proc.returncode} before serving\n{_log_tail(log)}"
            )
        try:
            with opener.open(url, timeout=2) as reply:
                if 200 <= reply.status < 300:
                    return
                last_error = f"HTTP {reply.status}"
        except urllib.error.HTTPError as exc:
            last_error = f"HTTP {exc.code}"
            exc.close()
        except (OSError, ValueError) as exc:
            last_error = repr(exc)
        time.sleep(0.25)
    pytest.fail(f"blindai serve not answering {url} after {STARTUP_TIMEOUT_S} s ({last_error})")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture(scope="session")
def blindai_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Our server, `python -m blindai serve --simulation`, on three free loopback ports.

    With BLINDAI_COMPAT_SERVER=HOST:UNATTESTED:ATTESTED:MANAGEMENT set, the tests use that
    already-running simulation server instead of starting one.
    """
    external = os.environ.get("BLINDAI_COMPAT_SERVER")
    if external:
        host, unattested, attested, management = external.rsplit(":", 3)
        yield Server(host, int(unattested), int(attested), int(management), Path(os.devnull))
        return
    p1, p2, p3 = _free_ports(3)
    log = tmp_path_factory.mktemp("compat-server") / "server.log"
    env = _scrubbed_env()
    env["PYTHONPATH"] = str(SRC)
    cmd = [
        sys.executable,
        "-m",
        "blindai",
        "serve",
        "--simulation",
        "--host",
        "127.0.0.1",
        "--unattested-port",
        str(p1),
        "--attested-port",
        str(p2),
        "--management-port",
        str(p3),
        "--grpc-port",
        "0",
    ]
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink
        )
    try:
        _wait_until_serving(proc, f"http://127.0.0.1:{p1}/", log)
        yield Server("127.0.0.1", p1, p2, p3, log)
    finally:
        _stop(proc)


def _usable(client: str, venvs: Path = VENVS) -> bool:
    venv = venvs / client
    return (venv / "bin" / "python").exists() and (venv / ".compat-stamp").exists()


def _recorded_reason(client: str, venvs: Path) -> str | None:
    unavailable = venvs / f"{client}.unavailable"
    if unavailable.is_file():
        return unavailable.read_text(errors="replace").strip()
    return None


def _why_absent(client: str, venvs: Path = VENVS) -> str:
    """Why a compat venv is missing: the reason compat_env.sh recorded, or how to build it."""
    reason = _recorded_reason(client, venvs)
    if reason:
        return f"original client {client} unavailable here: {reason}"
    return (
        f"compat venv .venv-compat/{client} is absent or incomplete: "
        "build it with `make test-compat` (or `bash scripts/compat_env.sh`)"
    )


def tier_skip_reason(venvs: Path = VENVS) -> str | None:
    """One sentence saying why no original client can run here; None when one can."""
    if any(_usable(name, venvs) for name in CLIENTS):
        return None
    reasons = {_recorded_reason(name, venvs) for name in CLIENTS}
    if len(reasons) == 1 and None not in reasons:
        return f"original-clients tier unavailable here: {reasons.pop()}"
    return "; ".join(_why_absent(name, venvs) for name in CLIENTS)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip the whole tier with one reason (one line in the summary) when no client can run.

    A hook, not a fixture: pytest reports a skip raised here at this line for every test, so
    the summary groups them into one line; a fixture's skip is reported at each test.
    """
    reason = tier_skip_reason()
    if reason is not None:
        pytest.skip(reason)


def compat_python(client: str) -> Path:
    """The python of a compat venv; skips the test with the reason it is absent."""
    if not _usable(client):
        pytest.skip(_why_absent(client))
    return VENVS / client / "bin" / "python"


def run_driver(plan: dict[str, Any], cwd: Path) -> dict[str, Any]:
    """Run the driver in the plan's client venv and return its JSON result."""
    python = compat_python(plan["client"])
    proc = subprocess.run(
        [str(python), "-I", str(DRIVER)],
        input=json.dumps(plan).encode(),
        capture_output=True,
        cwd=cwd,
        env=_scrubbed_env(),
        timeout=DRIVER_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"driver for {plan['client']} exited with {proc.returncode}\n"
            f"{proc.stderr.decode(errors='replace')[-4000:]}"
        )
    result: dict[str, Any] = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    return result


@pytest.fixture
def driver(tmp_path: Path) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """run_driver, working in the test's temporary directory."""
    return lambda plan: run_driver(plan, tmp_path)


@pytest.fixture(scope="session", params=CLIENTS)
def client(request: pytest.FixtureRequest) -> str:
    """Each original client in turn; skipped when its venv is absent."""
    name: str = request.param
    compat_python(name)
    return name
