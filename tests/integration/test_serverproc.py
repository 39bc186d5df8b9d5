"""The shared server starter (``scripts/_serverproc.py``, re-exported by ``tests/_server.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests._server import free_ports, start_server


def test_readiness_is_checked_on_loopback_whatever_proxy_the_environment_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy variable (here a closed port) must not route the readiness probe: the compat
    tier's own starter bypassed proxies before it used this helper, and so must the helper."""
    (closed,) = free_ports(1)
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{closed}")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    server = start_server(tmp_path, timeout=30)
    try:
        assert server.process.poll() is None
    finally:
        server.stop()
