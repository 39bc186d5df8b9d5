"""What every example shares: its exported model, and a simulation server to run it in."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "scripts"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _export import ensure, wheel_file  # noqa: E402
from _serverproc import simulation_server  # noqa: E402

import blindai  # noqa: E402
from blindai.pipeline import Pipeline  # noqa: E402

__all__ = ["Pipeline", "connected", "ensure", "wheel_file"]


@contextmanager
def connected() -> Iterator[blindai.Connection]:
    """A ``blindai serve --simulation`` process on free loopback ports, and a client to it."""
    print("(simulation mode: no TEE, this protects nothing; it shows the flow)", flush=True)
    with simulation_server() as server, warnings.catch_warnings():
        warnings.simplefilter("ignore", blindai.SimulationModeWarning)
        with blindai.connect(server.host, simulation_mode=True, **server.ports) as conn:
            yield conn
