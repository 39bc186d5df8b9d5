"""A client cannot renegotiate TLS with the server (each renegotiation is a new handshake's
public-key work, on one connection, past the per-connection limits)."""

from __future__ import annotations

import shutil
import subprocess
import threading

import numpy as np
import pytest
from onnx import TensorProto

from tests.models import identity

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl s_client")


def _renegotiate(host: str, port: int) -> str:
    """Connect with TLS 1.2 (1.3 has no renegotiation), ask for one, and return what
    ``openssl s_client`` printed."""
    lines: list[str] = []
    shaken = threading.Event()
    with subprocess.Popen(
        ["openssl", "s_client", "-connect", f"{host}:{port}", "-tls1_2", "-no_ign_eof"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as client:
        assert client.stdin is not None and client.stdout is not None
        out = client.stdout

        def read() -> None:
            for raw in out:
                line = raw.decode(errors="replace")
                lines.append(line)
                if line.startswith("New, TLSv1.2"):
                    shaken.set()
            shaken.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            assert shaken.wait(15), "the TLS 1.2 handshake did not complete"
            assert any(line.startswith("New, TLSv1.2") for line in lines), "".join(lines)[-2000:]
            client.stdin.write(b"R\n")
            client.stdin.flush()
            client.wait(15)  # the server's refusal ends s_client; a renegotiation would not
        finally:
            client.kill()
            reader.join(5)
    return "".join(lines)


@pytest.mark.parametrize("port_name", ["attested_port", "management_port"])
def test_a_client_renegotiation_is_refused_and_the_server_serves_on(server, conn, port_name):
    out = _renegotiate(server.host, getattr(server, port_name))
    assert "RENEGOTIATING" in out
    assert "no renegotiation" in out, out[-2000:]
    model_id = conn.upload_model(
        identity(TensorProto.FLOAT, [1, 4]), model_name="after-renegotiation"
    ).model_id
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    try:
        np.testing.assert_array_equal(conn.predict(model_id, [x])["y"], x)
    finally:
        conn.delete_model(model_id)
