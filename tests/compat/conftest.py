"""Fixtures for driving the original BlindAI clients from PyPI against our server.

The clients live in their own venvs (``.venv-compat/preview``, ``.venv-compat/v063``, built by
``scripts/compat_env.sh``); each test writes a JSON plan, runs ``tests/compat/drivers/
blindai_client.py`` with that venv's python and reads back one JSON result. Our server runs in a
subprocess on free loopback ports, in simulation mode, for the whole session, started by the
helper the other tiers and the scripts use (``tests/_server.py``: ``scripts/_serverproc.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests._server import REPO, start_server

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


@pytest.fixture(scope="session")
def blindai_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Our server, `python -m blindai serve --simulation`, on free loopback ports.

    With BLINDAI_COMPAT_SERVER=HOST:UNATTESTED:ATTESTED:MANAGEMENT set, the tests use that
    already-running simulation server instead of starting one.
    """
    external = os.environ.get("BLINDAI_COMPAT_SERVER")
    if external:
        host, unattested, attested, management = external.rsplit(":", 3)
        yield Server(host, int(unattested), int(attested), int(management), Path(os.devnull))
        return
    proc = start_server(
        tmp_path_factory.mktemp("compat-server"), timeout=STARTUP_TIMEOUT_S, host="127.0.0.1"
    )
    try:
        yield Server(
            proc.host, proc.unattested_port, proc.attested_port, proc.management_port, proc.log_path
        )
    finally:
        proc.stop()


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
