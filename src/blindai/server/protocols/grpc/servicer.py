"""``GRPCInferenceService`` over :class:`~blindai.server.v2.service.OipService`.

Implemented: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer,
ModelStatistics, RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload. The other calls
of Triton's service (streaming, model config, shared memory, tracing, logging) answer
``UNIMPLEMENTED``. Errors map to status codes through :func:`grpc_code` (400 ->
INVALID_ARGUMENT, 404 -> NOT_FOUND, 413 -> RESOURCE_EXHAUSTED, 503 -> UNAVAILABLE, ...), with
the same short message the REST routes send (its status from the error's class); nothing from
a request is logged.

Access control: every call but ServerLive, ServerReady and ServerMetadata is authenticated from
its ``authorization`` metadata (``Bearer KEY``, as REST's header) before it runs
(``UNAUTHENTICATED`` otherwise), and the handler gets the caller; calls on models and the
repository are written to the audit log, as the REST routes' are. Calls are registered as
client-streaming and read their one message themselves (:func:`_one_message`), so that one
whose message grpcio refuses (over the size limit) is still seen and audited.

ServerLive, ServerReady and ServerMetadata are answered at once, their (empty) message never
read, and take no call slot (:func:`_unread`): health probes are answered whatever other
clients hold.

Calls served at once: at most ``calls`` (:class:`InferenceServicer`), counted here from the
moment a call's handler starts, before its message is read; the next is answered
``RESOURCE_EXHAUSTED`` at once, counted in the metrics and audited (status
:data:`TOO_MANY_CALLS`). grpcio's own limit (``maximum_concurrent_rpcs``) stays above it as a
backstop: it refuses before any code of ours runs, so its refusals have no audit line.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from blindai.errors import (
    AuthenticationError,
    BlindAIError,
    InvalidInput,
    ModelNotFound,
    ServerBusy,
    ServerError,
)
from blindai.server._text import clipped
from blindai.server.access import ANONYMOUS, AccessControl, AuditAction, Principal
from blindai.server.body_budget import BodyBudget, weighted
from blindai.server.key_shares import KeyShares
from blindai.server.metrics import Metrics
from blindai.server.protocols._http import CLIENT_CLOSED
from blindai.server.protocols.grpc._generated import grpc_service_pb2 as pb
from blindai.server.protocols.grpc._generated import grpc_service_pb2_grpc as pb_grpc
from blindai.server.protocols.grpc.tensors import decode, encode
from blindai.server.protocols.v2.routes import OFFLOAD_BYTES
from blindai.server.protocols.v2.service import OipService, Wanted, audited_model
from blindai.server.statistics import Timing

__all__ = [
    "GRPC_PORT",
    "IMPLEMENTED",
    "OPEN_METHODS",
    "PARSE_CHARGED_FROM",
    "PARSE_WEIGHT",
    "TOO_MANY_CALLS",
    "CallSlots",
    "InferenceServicer",
    "add_to_server",
    "grpc_code",
]

GRPC_PORT = "grpc"
"""The ``port`` label of the gRPC port's message bytes (``blindai_received_bytes_total``, ...)."""
TOO_MANY_CALLS = 429
"""The audit log's status for a call refused past the calls served at once (its client gets
``RESOURCE_EXHAUSTED``, as grpcio's own refusal answered): HTTP's Too Many Requests."""


class CallSlots(KeyShares):
    """How many calls the port serves at once (``total``), and how many it serves now
    (``held``), of which one tenant's key serves at most half (at least one), as it holds at
    most half of ``--max-body-memory``: a call holds its slot while its message comes, which
    its client may put off for its connection's call bound (36 minutes at the defaults), and
    one tenant's calls that sent nothing held every slot. Calls run on one event loop: no
    lock."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit, per_key=max(1, limit // 2))


class _OverLimit:
    """The request a call refused past :class:`CallSlots` hands its handler (none is read)."""

    def __init__(self, message: str) -> None:
        self.message = message


_OVER_LIMIT = _OverLimit("too many gRPC calls in progress on this port; try again")


class _Unauthenticated:
    """The request a call whose metadata names no valid key hands its handler: the key's
    refusal, its message unread (see :func:`_one_message`)."""

    def __init__(self, error: AuthenticationError) -> None:
        self.error = error


_log = logging.getLogger("blindai.server")
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ALREADY_EXISTS,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
    507: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
_Req = TypeVar("_Req")
_Rep = TypeVar("_Rep")
_Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
_Authenticated = Callable[[Any, grpc.aio.ServicerContext[Any, Any], "_Call"], Awaitable[Any]]

#: calls that need no key (probes and server metadata say nothing about models)
OPEN_METHODS = frozenset({"ServerLive", "ServerReady", "ServerMetadata"})
#: what each call does, for the audit log
_ACTIONS = {
    "ModelReady": AuditAction.METADATA,
    "ModelMetadata": AuditAction.METADATA,
    "ModelInfer": AuditAction.RUN,
    "ModelStatistics": AuditAction.STATISTICS,
    "RepositoryIndex": AuditAction.LIST,
    "RepositoryModelLoad": AuditAction.LOAD,
    "RepositoryModelUnload": AuditAction.UNLOAD,
}


class _Call:
    """One call's caller, and the model it resolved to (for the audit log)."""

    def __init__(self, caller: Principal) -> None:
        self.caller = caller
        self.model_id: str | None = None


def _authorization(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The call's ``authorization`` metadata (None when absent); AuthenticationError when it
    is given more than once (the HTTP ports refuse a repeated Authorization header)."""
    given = [v for k, v in context.invocation_metadata() or () if k == "authorization"]
    if len(given) > 1:
        raise AuthenticationError(
            "the authorization metadata is given more than once; give it once"
        )
    return given[0] if given and isinstance(given[0], str) else None


def grpc_code(status: int) -> grpc.StatusCode:
    """The gRPC status code for an HTTP status (INTERNAL for anything unlisted)."""
    return _CODES.get(status, grpc.StatusCode.INTERNAL)


_SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]


def _parsed(kind: type[Message], raw: bytes) -> Message:
    """The request message in ``raw``; InvalidInput when it is not one."""
    try:
        return kind.FromString(raw)
    except DecodeError:  # malformed, or nested deeper than protobuf's recursion limit
        raise InvalidInput(
            f"the request is not a valid {kind.DESCRIPTOR.full_name} message"
        ) from None


def _presented(access: AccessControl, header: str | None) -> Principal | None:
    """The key ``header`` names: a valid one, a revoked one (:meth:`AccessControl.refused_caller`),
    or None."""
    try:
        return access.authenticate(header)
    except AuthenticationError:
        return access.refused_caller(header)


class _NoMessage(Exception):
    """A call whose request message never came (see :func:`_one_message`)."""


class _TooMany(Exception):
    """A call past the calls served at once (see :func:`_one_message`)."""


class _Ended(Exception):
    """The call had ended before its status could be sent."""


async def _no_message(context: grpc.aio.ServicerContext[Any, Any]) -> NoReturn:
    """Answer a call whose message never came: INVALID_ARGUMENT (its client sent none), or
    :class:`_Ended` when even that status cannot be sent.

    The call had ended already then: grpcio refused its message, over ``max_request_bytes``
    (RESOURCE_EXHAUSTED), before the servicer could read it; or the client cancelled the call
    while sending it; or the connection was closed under it (its age bound, the server
    stopping). grpcio shows the servicer the same for all (no message, then a status that
    cannot be sent) and gives it neither the status it sent nor the message's length: the
    audit line says 413 (503 when the server was stopping; 499 when the call's deadline had
    passed, which shows), as docs/access-control.md says.
    """
    try:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _NO_MESSAGE)
    except grpc.aio.AbortError:
        raise
    except Exception as exc:  # grpcio's ExecuteBatchError (not public): the call had ended
        raise _Ended from exc
    raise AssertionError("abort returned")  # pragma: no cover


_NO_MESSAGE = "a call takes exactly one request message"


def _deadline_passed(context: grpc.aio.ServicerContext[Any, Any]) -> bool:
    """Whether the call's deadline is spent: the one thing grpcio tells apart of a call ended
    before its message came (its time left is 0; a message refused for its size, a client's
    cancel and a closed connection leave it as it was)."""
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0


PARSE_WEIGHT = 17
"""What a byte of a large request message counts for in the body budget while the call is
served: parsing makes an object per element (32 million empty BYTES elements, a 61 MiB
message, took protobuf 1000 MiB), and 64 calls of 64 MiB at once were allowed."""
PARSE_CHARGED_FROM = 64 << 10
"""Messages smaller than this take nothing from the budget."""


def _guarded(
    method: str,
    metrics: Metrics,
    access: AccessControl,
    fn: _Authenticated,
    budget: BodyBudget | None = None,
    cut: Callable[[], bool] = lambda: False,
) -> _Handler:
    """Authenticate (unless open), then parse the request if it came as bytes (see
    :func:`add_to_server`); errors become a status code and a short message; every call and its
    message bytes (serialized request and reply) are counted, and a call on a model is
    audited. A message of :data:`PARSE_CHARGED_FROM` bytes or more takes :data:`PARSE_WEIGHT`
    times its size from ``budget`` (the HTTP ports' ``--max-body-memory``, at most a tenant's
    share) until the call ends: ``UNAVAILABLE`` at once when it does not fit. A call cancelled
    once ``cut()`` is true was cut by the server stopping (its client got ``UNAVAILABLE``):
    503, as a REST request cut then, not the 499 of a client that left. A call whose message
    never came (``request`` None, :func:`_one_message`) runs nothing: it is answered by
    :func:`_no_message` and audited with the key its metadata names (valid or revoked): 400,
    or 413 when grpcio had ended it (499 when its deadline had passed, 503 when ``cut()``). A
    call past the calls served at once (``request`` :data:`_OVER_LIMIT`) runs nothing either:
    ``RESOURCE_EXHAUSTED``, audited :data:`TOO_MANY_CALLS` with the key its metadata names.
    A call whose metadata names no valid key (``request`` a :class:`_Unauthenticated`) runs
    nothing and its message is not read: ``UNAUTHENTICATED``, audited 401 as any other."""
    action = _ACTIONS.get(method)
    kind: type[Message] = getattr(pb, _SERVICE.methods_by_name[method].input_type.name)

    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        status = 200  # for the audit log, which speaks HTTP: the error's own, as REST answers
        raw = isinstance(request, bytes)
        over = isinstance(request, _OverLimit)
        unread = over or isinstance(request, _Unauthenticated)
        size = len(request) if raw else 0 if request is None or unread else request.ByteSize()
        metrics.child(metrics.received_bytes, GRPC_PORT).inc(size)
        state: _Call | None = None
        named: Principal | None = None  # the audit line's caller when there is no state
        held: tuple[int, str | None] | None = None
        audited = False

        def audit() -> None:
            """Write the call's line, once: before an error's status leaves, else as it ends."""
            nonlocal audited
            if action is None or audited:
                return
            audited = True
            access.audit.record(
                caller=state.caller if state else named,
                action=action,
                model=state.model_id if state else None,
                status=status,
                duration_s=time.perf_counter() - start,
            )

        try:
            header = None
            if method not in OPEN_METHODS and access.enabled:  # an open server reads none
                header = _authorization(context)
            if request is None or over:  # nothing is run, whatever the key
                named = _presented(access, header) if method not in OPEN_METHODS else None
                raise _TooMany if over else _NoMessage
            if isinstance(request, _Unauthenticated):  # refused before its message was read
                named = access.refused_caller(header)
                raise request.error
            if method in OPEN_METHODS:
                state = _Call(ANONYMOUS)
            else:
                try:
                    state = _Call(access.authenticate(header))
                except AuthenticationError:
                    named = access.refused_caller(header)  # a revoked key, for its 401's line
                    raise
            if raw and budget is not None and size >= PARSE_CHARGED_FROM:
                caller = state.caller
                key = caller.key_id if caller.kind == "tenant" else None
                charge = weighted(size, PARSE_WEIGHT, budget.per_key)
                refusal = budget.take(charge, key)
                if refusal is not None:
                    raise ServerBusy(refusal)
                held = (charge, key)
            if raw:
                request = _parsed(kind, request)
            reply = await fn(request, context, state)
            metrics.child(metrics.sent_bytes, GRPC_PORT).inc(reply.ByteSize())
            return reply
        except _TooMany:
            code, status = grpc.StatusCode.RESOURCE_EXHAUSTED, TOO_MANY_CALLS
            audit()
            await context.abort(code, request.message)
        except _NoMessage:
            code, status = grpc.StatusCode.INVALID_ARGUMENT, 400
            try:
                await _no_message(context)
            except _Ended:  # grpcio ended the call: see _no_message
                code, status = grpc.StatusCode.RESOURCE_EXHAUSTED, 413
                if _deadline_passed(context):  # the client's own bound: it left, as a run's
                    code, status = grpc.StatusCode.DEADLINE_EXCEEDED, CLIENT_CLOSED
                if cut():
                    code, status = grpc.StatusCode.UNAVAILABLE, 503
                raise asyncio.CancelledError from None  # nothing is left to answer
        except BlindAIError as exc:
            status = exc.http_status
            code = grpc_code(status)
            if status >= 500:
                _log.error("gRPC %s failed: %s", method, type(exc).__name__)
            message = exc.message if isinstance(exc, ServerError) else str(exc)
            audit()  # abort sends the status at once: the line is written before it leaves
            await context.abort(code, clipped(message))
        except asyncio.CancelledError:  # the client cancelled, its deadline passed, or a cut
            if cut():
                code, status = grpc.StatusCode.UNAVAILABLE, 503
            else:
                code, status = grpc.StatusCode.CANCELLED, CLIENT_CLOSED  # nobody was answered
            raise
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            code, status = grpc.StatusCode.INTERNAL, 500
            _log.error("gRPC %s failed unexpectedly: %s", method, type(exc).__name__)
            audit()
            await context.abort(code, "internal server error")
        finally:
            if held is not None and budget is not None:
                budget.give(*held)
            metrics.child(metrics.grpc_requests, method, code.name).inc()
            metrics.child(metrics.grpc_seconds, method).observe(time.perf_counter() - start)
            audit()

    return call


def _unimplemented(method: str) -> _Handler:
    """A call this server does not serve: ``UNIMPLEMENTED`` with a message (the generated base
    class raised NotImplementedError, which grpcio logged with a traceback at every call)."""

    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not supported here")

    return call


def _over_share(slots: CallSlots) -> _OverLimit:
    return _OverLimit(
        f"too many gRPC calls in progress with this key: one key may have {slots.per_key} "
        f"of the port's {slots.total} at once; try again"
    )


def _one_message(
    serve: _Handler,
    slots: CallSlots,
    share_of: Callable[[grpc.aio.ServicerContext[Any, Any]], str | AuthenticationError | None],
) -> _Handler:
    """A unary call served as a client-streaming one whose first message is read here, when
    its metadata names a valid key (else it is handed on, unread, as
    :class:`_Unauthenticated`) and it fits in ``slots`` (fewer calls than its total in
    progress, and fewer than the half a share may hold: ``share_of`` gives the call's, a
    tenant's key, or None for one counted only in the total; else it is handed on, unread, as
    an :class:`_OverLimit`).

    The key is checked before a slot is taken: a call holds its slot while its message comes
    (grpc-core has no timer for one that never does), and a client with no key held every
    slot, the port refusing every tenant's call, for the call bound of its connection.

    Registered as unary, a call whose message grpcio refuses (over ``max_request_bytes``,
    RESOURCE_EXHAUSTED) never reached the servicer, so it had no audit line. Registered so, the
    servicer runs before the message is read (the wire is the same: a unary call is a stream of
    one message), and a call whose message never came is handed on as None: authenticated
    from its metadata, audited, answered (:func:`_no_message`). Messages after the first are
    not read, as grpcio's unary calls do not read them.
    """

    async def call(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        key = share_of(context)
        if isinstance(key, AuthenticationError):
            return await serve(_Unauthenticated(key), context)
        full = slots.fit(1, key)
        if full is not None:
            over = _OVER_LIMIT if full == "total" else _over_share(slots)
            return await serve(over, context)
        try:
            message = await context.read()
            return await serve(None if message is grpc.aio.EOF else message, context)
        finally:
            slots.give(1, key)

    return call


def _unread(serve: _Handler, kind: type[Message]) -> _Handler:
    """A call that needs no key (:data:`OPEN_METHODS`), answered at once: its message, always
    empty, is never read, and it takes no call slot.

    Read as any other call's, it held a slot while its message came: a client with no key held
    every slot the open calls could have (half of them, 0c7f7a6) with calls that sent nothing,
    and a load balancer's health probe was refused RESOURCE_EXHAUSTED for its connection's call
    bound. grpc-core ends such a call cleanly: the reply and OK go, and whatever the client
    still sends is dropped unread (a message past ``max_request_bytes`` too, as it is never
    read)."""

    async def call(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await serve(kind(), context)

    return call


def add_to_server(servicer: InferenceServicer, server: grpc.aio.Server) -> None:
    """Serve ``servicer``'s calls on ``server``, each request handed over as its bytes and
    parsed by the call: with the generated registration grpcio parsed it, and a message that
    did not parse was answered ``UNKNOWN`` ("Unexpected DecodeError") with a traceback in the
    server's log. It is now ``INVALID_ARGUMENT``, counted and audited as any refused call."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for described in _SERVICE.methods:
        reply: type[Message] = getattr(pb, described.output_type.name)
        serve = getattr(servicer, described.name)
        handler: grpc.RpcMethodHandler[Any, Any]
        if described.client_streaming or described.server_streaming:
            handler = grpc.stream_stream_rpc_method_handler(
                serve, response_serializer=reply.SerializeToString
            )
        elif described.name in OPEN_METHODS:  # no message read, no slot: see _unread
            kind: type[Message] = getattr(pb, described.input_type.name)
            handler = grpc.stream_unary_rpc_method_handler(
                _unread(serve, kind), response_serializer=reply.SerializeToString
            )
        else:  # client-streaming here, one message read by _one_message: see there
            share_of = functools.partial(servicer.share, described.name)
            handler = grpc.stream_unary_rpc_method_handler(
                _one_message(serve, servicer.slots, share_of),
                response_serializer=reply.SerializeToString,
            )
        handlers[described.name] = handler
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(_SERVICE.full_name, handlers),)
    )


#: the calls this server serves
IMPLEMENTED = (
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelInfer",
    "ModelStatistics",
    "RepositoryIndex",
    "RepositoryModelLoad",
    "RepositoryModelUnload",
)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The Open Inference Protocol's gRPC service on one :class:`OipService`; large messages
    take from ``budget`` while they are parsed and served (see :func:`_guarded`); at most
    ``calls`` calls are served at once (:func:`_one_message`)."""

    def __init__(
        self,
        oip: OipService,
        access: AccessControl,
        *,
        budget: BodyBudget | None = None,
        calls: int = 1 << 30,
    ) -> None:
        self.oip = oip
        self.access = access
        self.slots = CallSlots(calls)
        self.cutting = False
        """Set when the server stops with calls still in progress: they are cancelled."""
        metrics = oip.plane.metrics
        for method in IMPLEMENTED:
            handler = getattr(self, f"_{method}")
            guarded = _guarded(method, metrics, access, handler, budget, self._cut)
            setattr(self, method, guarded)
        for described in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods:
            if described.name not in IMPLEMENTED:
                setattr(self, described.name, _unimplemented(described.name))

    def _cut(self) -> bool:
        return self.cutting

    def share(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> str | AuthenticationError | None:
        """The share of :attr:`slots` a call of ``method`` counts in, from its metadata alone
        (:func:`_one_message`), or why its key does not authenticate. (The calls that need no
        key take no slot: :func:`_unread`.)"""
        if not self.access.enabled or method in OPEN_METHODS:
            return None
        try:
            caller = self.access.authenticate(_authorization(context))
        except AuthenticationError as exc:  # the key, or the metadata given twice
            return exc
        return caller.key_id if caller.kind == "tenant" else None

    async def _ServerLive(self, request: Any, context: Any, call: _Call) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def _ServerReady(self, request: Any, context: Any, call: _Call) -> Any:
        return pb.ServerReadyResponse(ready=self.oip.missing_models() == 0)

    async def _ModelReady(self, request: Any, context: Any, call: _Call) -> Any:
        try:
            entry = self.oip.model(request.name, request.version, caller=call.caller)
        except ModelNotFound:
            return pb.ModelReadyResponse(ready=False)  # as Triton: unknown is not ready
        call.model_id = entry.model_id
        ready = self.oip.is_ready(request.name, request.version, caller=call.caller)
        return pb.ModelReadyResponse(ready=ready)

    async def _ServerMetadata(self, request: Any, context: Any, call: _Call) -> Any:
        return json_format.ParseDict(self.oip.server_metadata(), pb.ServerMetadataResponse())

    async def _ModelMetadata(self, request: Any, context: Any, call: _Call) -> Any:
        call.model_id = self.oip.model(request.name, request.version, caller=call.caller).model_id
        found = self.oip.model_metadata(request.name, request.version, caller=call.caller)
        return json_format.ParseDict(found, pb.ModelMetadataResponse())

    async def _ModelInfer(self, request: Any, context: Any, call: _Call) -> Any:
        timing = Timing()
        name, version = request.model_name, request.model_version
        entry = self.oip.ready_model(name, version, caller=call.caller)
        call.model_id = entry.model_id
        plane = self.oip.plane
        # as the REST routes: a large message is decoded and encoded in a worker, not on the
        # event loop every port shares (16M BYTES elements took 9 s each way)
        big = request.ByteSize() >= OFFLOAD_BYTES
        try:
            with timing.phase("decode"):
                decoded = await plane.offload(decode, request) if big else decode(request)
            wanted = None
            if decoded.outputs is not None:
                wanted = [Wanted(o.name, o.classification) for o in decoded.outputs]
            outputs = await self.oip.infer(
                entry, decoded.inputs, wanted, timing, caller=call.caller
            )
            big = big or sum(a.nbytes for _, a in outputs) >= OFFLOAD_BYTES
            label, version = entry.label, str(entry.version)
            with timing.phase("encode"):
                if big:
                    reply = await plane.offload(
                        encode, decoded, outputs, model_name=label, model_version=version
                    )
                else:
                    reply = encode(decoded, outputs, model_name=label, model_version=version)
        except Exception:
            self.oip.record(entry, timing, success=False, protocol="grpc", caller=call.caller)
            raise
        self.oip.record(entry, timing, success=True, protocol="grpc", caller=call.caller)
        return reply

    async def _ModelStatistics(self, request: Any, context: Any, call: _Call) -> Any:
        found, call.model_id = self.oip.statistics(
            request.name, request.version, caller=call.caller
        )
        return json_format.ParseDict(found, pb.ModelStatisticsResponse())

    async def _RepositoryIndex(self, request: Any, context: Any, call: _Call) -> Any:
        rows = self.oip.index(ready_only=request.ready, caller=call.caller)
        return json_format.ParseDict({"models": rows}, pb.RepositoryIndexResponse())

    async def _RepositoryModelLoad(self, request: Any, context: Any, call: _Call) -> Any:
        versions = self.oip.managed(request.model_name, caller=call.caller)
        call.model_id = audited_model(versions)
        await self.oip.load(versions, caller=call.caller)
        return pb.RepositoryModelLoadResponse()

    async def _RepositoryModelUnload(self, request: Any, context: Any, call: _Call) -> Any:
        versions = self.oip.managed(request.model_name, caller=call.caller)
        call.model_id = audited_model(versions)
        self.oip.unload(versions)
        return pb.RepositoryModelUnloadResponse()
