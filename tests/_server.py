"""Real ``blindai serve`` processes on free loopback ports, for integration tests.

One helper starts server processes for the scripts (demo, bench) and the tests:
``scripts/_serverproc.py``; this module re-exports it.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "scripts") not in sys.path:
    sys.path.insert(0, str(REPO / "scripts"))

from _serverproc import PortTaken, ServerProcess, free_ports, start_server  # noqa: E402

__all__ = ["REPO", "PortTaken", "ServerProcess", "free_ports", "start_server"]
