"""Real ``blindai serve`` processes on free loopback ports, for integration tests.

One helper starts server processes for the scripts (demo, bench) and the tests:
``scripts/_serverproc.py``; this module re-exports it.
"""

from __future__ import annotations

from scripts._serverproc import REPO, PortTaken, ServerProcess, free_ports, start_server

__all__ = ["REPO", "PortTaken", "ServerProcess", "free_ports", "start_server"]
