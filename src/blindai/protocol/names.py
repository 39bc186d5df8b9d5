"""Names both sides of the wire agree on."""

from __future__ import annotations

__all__ = ["ERROR_HEADER", "SERVER_NAME"]

#: the DNS name in the attested TLS certificate, checked whatever address was dialled
SERVER_NAME = "blindai-srv"

#: response header naming the error class (in :mod:`blindai.errors`) of an error reply
ERROR_HEADER = "X-BlindAI-Error"
