"""Protocol versions: the 0.6 wire, plus our own versioned extensions."""

from __future__ import annotations

__all__ = ["EXTENSION_VERSION", "WIRE_VERSION"]

#: the BlindAI wire protocol we are compatible with
WIRE_VERSION = "0.6"
#: version of our extensions (GET /info, /endorsements, model bytes, F16, the X-BlindAI-Error
#: header); bumped on change
EXTENSION_VERSION = 2
