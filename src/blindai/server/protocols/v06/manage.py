"""Our extension of the 0.6 wire on the management port: API keys (CBOR).

==================  ==================  ==========================================================
request             body                reply
==================  ==================  ==========================================================
``GET /keys``       none                ``[{name, key_id, created_ns}]`` (admin only)
``POST /keys/       ``{name}``          ``{name, key_id, created_ns, key}``: ``key`` is shown this
create``                                once (admin only)
``POST /keys/       ``{name}``          ``{name, key_id, created_ns}`` (admin only)
revoke``
==================  ==================  ==========================================================

The model list (``GET /models``, with each model's owner and visibility) is
:mod:`blindai.server.protocols.v06.replication`'s.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from blindai.errors import InvalidInput, ProtocolError
from blindai.protocol import codec
from blindai.server.access import AccessControl, KeyInfo
from blindai.server.access.middleware import TARGET_KEY, caller_of
from blindai.server.dataplane import DataPlane
from blindai.server.protocols._http import read_body
from blindai.server.protocols.v06.routes import cbor_errors
from blindai.server.protocols.v06.wire import cbor_response

__all__ = ["ManagementRoutes"]

_KEY_REQUEST_BYTES = 1 << 12


def _key(info: KeyInfo) -> dict[str, Any]:
    return {"name": info.name, "key_id": info.key_id, "created_ns": info.created_ns}


async def _key_name(request: Request) -> str:
    body = await read_body(request, _KEY_REQUEST_BYTES, "a key request is over 4 KiB")
    try:
        doc = codec.decode_map(body, what="key request")
    except ProtocolError as exc:
        raise InvalidInput(str(exc)) from exc
    name = doc.get("name")
    if not isinstance(name, str):
        raise InvalidInput("name must be a string")
    return name


class ManagementRoutes:
    """``/keys``, over the access control (the data plane runs the blocking writes)."""

    def __init__(self, plane: DataPlane, access: AccessControl) -> None:
        self.plane = plane
        self.access = access

    def routes(self) -> list[Route]:
        """The routes, for the management app."""
        return [
            Route("/keys", cbor_errors(self._keys), methods=["GET"]),
            Route("/keys/create", cbor_errors(self._create), methods=["POST"]),
            Route("/keys/revoke", cbor_errors(self._revoke), methods=["POST"]),
        ]

    async def _keys(self, request: Request) -> Response:
        return cbor_response(
            [_key(k) for k in self.access.list_keys(caller=caller_of(request.scope))]
        )

    async def _create(self, request: Request) -> Response:
        name = await _key_name(request)
        create = self.access.create_key
        info, key = await self.plane.offload(create, name, caller=caller_of(request.scope))
        setattr(request.state, TARGET_KEY, info.key_id)
        return cbor_response({**_key(info), "key": key})

    async def _revoke(self, request: Request) -> Response:
        name = await _key_name(request)
        revoke = self.access.revoke_key
        info = await self.plane.offload(revoke, name, caller=caller_of(request.scope))
        setattr(request.state, TARGET_KEY, info.key_id)
        return cbor_response(_key(info))
