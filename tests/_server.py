"""Real ``blindai serve`` processes on free loopback ports, for integration tests.

One helper starts server processes for the scripts (demo, bench) and the tests:
``scripts/_serverproc.py``; this module re-exports it, and connects to such a server.
"""

from __future__ import annotations

import warnings

import blindai
from scripts._serverproc import (
    REPO,
    PortTaken,
    ServerProcess,
    free_ports,
    spawn_server,
    start_server,
    wait_ready,
)

__all__ = [
    "REPO",
    "PortTaken",
    "ServerProcess",
    "connect",
    "free_ports",
    "spawn_server",
    "start_server",
    "wait_ready",
]


def connect(server: ServerProcess) -> blindai.Connection:
    """An attested connection to a simulation ``server`` (its SimulationModeWarning silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", blindai.SimulationModeWarning)
        return blindai.connect(server.host, simulation_mode=True, **server.ports)
