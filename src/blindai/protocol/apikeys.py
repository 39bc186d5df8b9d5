"""API keys as both sides see them: their form, and how a new one is made.

A key travels as ``Authorization: Bearer KEY`` over attested TLS only. The client refuses to
send, and the server to hash, anything that does not match :data:`API_KEY`.
"""

from __future__ import annotations

import re
import secrets

__all__ = ["API_KEY", "KEY_PREFIX", "generate_key"]

#: the prefix of the keys BlindAI makes (recognisable in a leaked file or a secret scanner)
KEY_PREFIX = "bai_"

#: what an API key may look like (RFC 6750 ``b64token``, bounded)
API_KEY = re.compile(r"[A-Za-z0-9._~+/=-]{1,512}")


def generate_key() -> str:
    """A new API key: ``bai_`` and 256 random bits, URL-safe base64."""
    return KEY_PREFIX + secrets.token_urlsafe(32)
