"""The BlindAI server (extra ``blindai[server]``): onnxruntime behind attested TLS.

Example::

    from blindai.server import ServerSettings, serve
    serve(ServerSettings(tee="simulation"))
"""

from __future__ import annotations

from blindai.server.main import build, serve
from blindai.server.settings import ServerSettings

__all__ = ["ServerSettings", "build", "serve"]
