"""The BlindAI server (extra ``blindai[server]``): onnxruntime behind attested TLS.

Example::

    from blindai.server import ServerSettings, serve
    serve(ServerSettings(tee="simulation"))

The exports are imported on first use, so that the compile guard's child process
(``blindai.server._compile_worker``) starts without loading the web stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from blindai.server.main import build, serve
    from blindai.server.settings import ServerSettings

__all__ = ["ServerSettings", "build", "serve"]


def __getattr__(name: str) -> Any:
    """``ServerSettings``, ``build`` and ``serve``, imported when first asked for."""
    if name == "ServerSettings":
        from blindai.server.settings import ServerSettings

        return ServerSettings
    if name in ("build", "serve"):
        from blindai.server import main

        return getattr(main, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
