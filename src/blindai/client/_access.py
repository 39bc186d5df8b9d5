"""API keys on the client: checking a key before it travels, and the ``/keys`` replies."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from blindai.errors import ConfigurationError, ProtocolError
from blindai.protocol.apikeys import API_KEY

__all__ = ["ApiKeyInfo", "NewApiKey", "check_api_key", "decode_key"]


def check_api_key(key: str) -> str:
    """``key`` when it can travel in an ``Authorization`` header; ConfigurationError if not."""
    if not isinstance(key, str) or not API_KEY.fullmatch(key):
        raise ConfigurationError(
            "api_key must be an API key as the server gave it (letters, digits and -._~+/=)"
        )
    return key


def _time(ns: Any, what: str) -> datetime:
    if not isinstance(ns, int) or isinstance(ns, bool):
        raise ProtocolError(f"{what} must be an integer")
    try:
        return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc)
    except (OverflowError, ValueError, OSError):  # past a float, or a year datetime lacks
        raise ProtocolError(f"{what} is out of range") from None


def _field(doc: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind):
        raise ProtocolError(f"the server's reply has no valid {name}")
    return value


@dataclass(frozen=True)
class ApiKeyInfo:
    """A tenant key, as listed: never the key itself."""

    name: str
    key_id: str
    created: datetime


@dataclass(frozen=True)
class NewApiKey(ApiKeyInfo):
    """A key just created: ``key`` is shown this once and cannot be read again."""

    key: str = field(default="", repr=False)


def decode_key(doc: Any) -> ApiKeyInfo:
    """One key of ``GET /keys`` or ``/keys/revoke``; a :class:`NewApiKey` when it has ``key``."""
    if not isinstance(doc, dict):
        raise ProtocolError("a key record must be a map")
    info = ApiKeyInfo(
        _field(doc, "name", str),
        _field(doc, "key_id", str),
        _time(doc.get("created_ns"), "created_ns"),
    )
    if "key" in doc:
        return NewApiKey(info.name, info.key_id, info.created, key=_field(doc, "key", str))
    return info
