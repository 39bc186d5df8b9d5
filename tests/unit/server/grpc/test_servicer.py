"""The gRPC servicer on a real grpc.aio server on loopback (no TLS), over the in-process apps."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import cbor2
import grpc
import numpy as np
import pytest
from onnx import TensorProto

from blindai.server.access import ANONYMOUS, AccessControl, AuditLog
from blindai.server.protocols.grpc import servicer as servicer_module
from blindai.server.protocols.grpc._generated import grpc_service_pb2 as pb
from blindai.server.protocols.grpc._generated import grpc_service_pb2_grpc as pb_grpc
from blindai.server.protocols.grpc.servicer import InferenceServicer, add_to_server
from tests import attacks
from tests.models import failing_add, identity
from tests.unit.server._inprocess import in_process


def _request(name: str, n: int) -> Any:
    msg = pb.ModelInferRequest(model_name=name)
    msg.inputs.add(name="x", datatype="FP32", shape=[1, n])
    msg.raw_input_contents.append(np.arange(n, dtype=np.float32).tobytes())
    return msg


@contextlib.asynccontextmanager
async def _served(apps: Any) -> AsyncIterator[Any]:
    """A stub of a loopback gRPC server serving the in-process ``apps``."""
    async with _channel(apps) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]


@contextlib.asynccontextmanager
async def _channel(apps: Any) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to a loopback gRPC server serving the in-process ``apps`` as the server's
    port does (``add_to_server``)."""
    server = grpc.aio.server()
    add_to_server(InferenceServicer(apps.apps.oip, apps.apps.access), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)


@pytest.mark.parametrize(("n", "on_loop"), [(4, True), (1 << 15, False)])
def test_large_messages_are_decoded_and_encoded_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch, n: int, on_loop: bool
) -> None:
    """decode and encode ran on the event loop that every port shares, whatever the size: 16M
    BYTES elements held it 9 s each way. From 64 KiB they run in a worker, as REST's do."""
    threads: dict[str, int] = {}

    def spy(step: str, real: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            threads[step] = threading.get_ident()
            return real(*args, **kwargs)

        return run

    for step in ("decode", "encode"):
        monkeypatch.setattr(servicer_module, step, spy(step, getattr(servicer_module, step)))

    with in_process(max_request_bytes=1 << 20) as apps:
        name = str(apps.upload(identity(TensorProto.FLOAT, [1, None]))["model_id"])

        async def go() -> Any:
            async with _served(apps) as stub:
                return await stub.ModelInfer(_request(name, n))

        loop_thread = threading.get_ident()  # asyncio.run runs the loop in this thread
        reply = asyncio.run(go())
    out = np.frombuffer(reply.raw_output_contents[0], np.float32)
    np.testing.assert_array_equal(out, np.arange(n, dtype=np.float32))
    assert set(threads) == {"decode", "encode"}
    assert all((t == loop_thread) == on_loop for t in threads.values()), threads


def test_an_empty_model_name_runs_no_model() -> None:
    """ModelInfer with no model_name ran the newest model the caller may run (another key's
    public model, say), as ModelMetadata answered NOT_FOUND for the same name. Now it is
    NOT_FOUND too, with the REST routes' message, and nothing runs."""
    with in_process() as apps:
        apps.upload(identity(TensorProto.FLOAT, [1, None]), model_name="someone-elses")

        async def go() -> grpc.aio.AioRpcError:
            async with _served(apps) as stub:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.ModelInfer(_request("", 4))
                return caught.value

        error = asyncio.run(go())
        stats = apps.apps.oip.statistics(caller=ANONYMOUS)[0]["model_stats"]
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "no model with id or name ''"
    assert [s["inference_count"] for s in stats] == [0]


def test_a_call_the_client_gave_up_on_is_audited_as_cancelled() -> None:
    """A call cancelled under it (here: its deadline passed while the request waited for batch
    partners) was written to the audit log as a 200 and counted as OK: nobody was answered.
    It is 499 in the audit log, as a REST client that left, and CANCELLED in the metrics."""
    with in_process(max_batch_size=8, max_queue_delay_us=1_000_000) as apps:
        apps.upload(identity(TensorProto.FLOAT, [None, 2]), model_name="batched")
        stream = apps.apps.access.audit._stream
        assert isinstance(stream, io.StringIO)

        async def go() -> grpc.StatusCode:
            async with _served(apps) as stub:
                # the request waits up to 1 s for partners; the deadline passes before
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.ModelInfer(_request("batched", 2), timeout=0.2)
                for _ in range(3000):  # the server's side of the call ends after the client's
                    if '"action": "run"' in stream.getvalue():
                        break
                    await asyncio.sleep(0.01)
                return caught.value.code()

        code = asyncio.run(go())
        runs = [json.loads(x) for x in stream.getvalue().splitlines() if '"run"' in x]
        samples = {
            tuple(sorted(s.labels.items())): s.value
            for m in apps.apps.metrics.registry.collect()
            if m.name == "blindai_grpc_requests"
            for s in m.samples
            if s.name.endswith("_total")
        }
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert [r["status"] for r in runs] == [499]
    assert samples == {(("code", "CANCELLED"), ("method", "ModelInfer")): 1.0}


def test_a_failed_run_is_audited_with_its_own_status() -> None:
    """The audit line of a gRPC call took its status back from the gRPC code, and two statuses
    share a code: a run that failed (422, as REST answers it) was written 400, as if the
    request had been malformed (507 and 413 likewise). It now holds the error's own status."""
    with in_process() as apps:
        model = str(apps.upload(failing_add(), model_name="adds")["model_id"])
        stream = apps.apps.access.audit._stream
        assert isinstance(stream, io.StringIO)
        msg = pb.ModelInferRequest(model_name="adds")
        for name, n in (("a", 2), ("b", 3)):  # [1, 2] + [1, 3] does not broadcast
            msg.inputs.add(name=name, datatype="FP32", shape=[1, n])
            msg.raw_input_contents.append(np.zeros(n, np.float32).tobytes())

        async def go() -> grpc.StatusCode:
            async with _served(apps) as stub:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.ModelInfer(msg)
                return caught.value.code()

        code = asyncio.run(go())
        runs = [json.loads(x) for x in stream.getvalue().splitlines() if '"run"' in x]
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [(r["status"], r["model"]) for r in runs] == [(422, model)]


@pytest.mark.parametrize("method", ["ServerLive", "ServerReady", "ServerMetadata"])
def test_the_calls_that_need_no_key_never_read_their_message(method: str) -> None:
    """ServerLive, ServerReady and ServerMetadata (messages with no field) held a call slot
    while their message came, and a client with no key could hold every slot they had, health
    probes refused RESOURCE_EXHAUSTED. They are now answered without reading it, as REST's
    health routes answer whatever body comes: bytes that are no message, a message past
    grpcio's size limit, or none at all (the client still sending) are all answered OK, and
    the server serves the next call. (Bytes that were no message were INVALID_ARGUMENT; a probe
    sends none.)"""
    with in_process() as apps:

        async def go() -> list[Any]:
            server = grpc.aio.server(options=[("grpc.max_receive_message_length", 4096)])
            add_to_server(InferenceServicer(apps.apps.oip, apps.apps.access), server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            never = asyncio.Event()

            async def nothing() -> AsyncIterator[bytes]:
                await never.wait()
                yield b""  # pragma: no cover

            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    path = f"/inference.GRPCInferenceService/{method}"
                    raw = channel.unary_unary(path)  # bytes as they are, both ways
                    held = channel.stream_unary(path)
                    got = [await raw(b"\xff" * 8), await raw(b"\x0a" + b"\xff" * 8)]
                    got.append(await raw(b"\x7a\x80\x80\x40" + b"\0" * (1 << 20)))
                    got.append(await held(nothing(), timeout=10))
                    got.append(await raw(b""))
                    never.set()
                    return got
            finally:
                await server.stop(None)

        replies = asyncio.run(go())
    kind = getattr(pb, f"{method}Response")
    parsed = [kind.FromString(r) for r in replies]
    assert all(p == parsed[-1] for p in parsed), parsed
    if method != "ServerMetadata":
        assert all(getattr(p, "live" if method == "ServerLive" else "ready") for p in parsed)
    else:
        assert parsed[0].name


def test_a_message_grpcio_refuses_as_too_large_is_audited() -> None:
    """grpcio refuses a message over ``grpc.max_receive_message_length`` (RESOURCE_EXHAUSTED)
    before any handler runs: registered as unary, the servicer never saw the call, and the
    audit log had no line (a key probing the size limit left no trace). It is now written with
    its key and 413; a call that sent no message at all is answered INVALID_ARGUMENT (400),
    and a message within the limit is served as before. A call with no key is refused
    (UNAUTHENTICATED, 401) before its message is read, whatever its size."""
    admin = "the admin key"
    with in_process(admin_key_sha256=hashlib.sha256(admin.encode()).hexdigest()) as apps:
        info, alice = apps.apps.access.keyring.create("alice")
        model = identity(TensorProto.FLOAT, [None, 2])
        body = cbor2.dumps({"model": model, "length": len(model), "model_name": "m"})
        headers = {"Authorization": f"Bearer {alice}"}
        assert apps.management.post("/upload", content=body, headers=headers).status_code == 200
        stream = apps.apps.access.audit._stream
        assert isinstance(stream, io.StringIO)
        key = (("authorization", f"Bearer {alice}"),)

        async def go() -> list[Any]:
            server = grpc.aio.server(options=[("grpc.max_receive_message_length", 4096)])
            add_to_server(InferenceServicer(apps.apps.oip, apps.apps.access), server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            got: list[Any] = []
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
                    got.append((await stub.ModelInfer(_request("m", 2), metadata=key)).model_name)
                    for metadata in (key, ()):
                        with pytest.raises(grpc.aio.AioRpcError) as big:
                            await stub.ModelInfer(_request("m", 2048), metadata=metadata)
                        got.append((big.value.code(), big.value.details()))
                    none = channel.stream_unary(
                        "/inference.GRPCInferenceService/ModelInfer",
                        request_serializer=pb.ModelInferRequest.SerializeToString,
                    )
                    with pytest.raises(grpc.aio.AioRpcError) as empty:
                        await none(_nothing(), metadata=key, timeout=10)
                    got.append((empty.value.code(), empty.value.details()))
                    for _ in range(3000):  # the server's side of a call ends after the client's
                        if stream.getvalue().count('"action": "run"') >= 4:
                            break
                        await asyncio.sleep(0.01)
            finally:
                await server.stop(None)
            return got

        got = asyncio.run(go())
        runs = [json.loads(x) for x in stream.getvalue().splitlines() if '"run"' in x]
    assert got[0] == "m"
    assert got[1][0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in got[1][1]
    assert got[2][0] == grpc.StatusCode.UNAUTHENTICATED
    assert got[3] == (grpc.StatusCode.INVALID_ARGUMENT, "a call takes exactly one request message")
    assert [(r["key"], r["key_id"], r["model"] is None, r["status"]) for r in runs] == [
        ("alice", info.key_id, False, 200),
        ("alice", info.key_id, True, 413),
        (None, None, True, 401),
        ("alice", info.key_id, True, 400),
    ]


def test_a_call_whose_deadline_passed_before_its_message_came_is_audited_as_a_client_gone() -> None:
    """A call whose message never came and whose deadline then passed (a slow upload, or
    none at all) was written 413, as a message grpcio refused for its size: an operator read
    a key probing the size limit. grpcio shows the servicer that its deadline is spent
    (``time_remaining()`` 0): it is written 499, as a call whose deadline passed during its run."""
    admin = "the admin key"
    with in_process(admin_key_sha256=hashlib.sha256(admin.encode()).hexdigest()) as apps:
        info, alice = apps.apps.access.keyring.create("alice")
        stream = apps.apps.access.audit._stream
        assert isinstance(stream, io.StringIO)
        key = (("authorization", f"Bearer {alice}"),)

        async def go() -> grpc.StatusCode:
            async with _channel(apps) as channel:
                slow = channel.stream_unary(
                    "/inference.GRPCInferenceService/ModelInfer",
                    request_serializer=pb.ModelInferRequest.SerializeToString,
                )

                async def never() -> AsyncIterator[Any]:
                    await asyncio.sleep(30)
                    yield _request("m", 2)

                with pytest.raises(grpc.aio.AioRpcError) as late:
                    await slow(never(), metadata=key, timeout=0.5)
                for _ in range(3000):  # the server's side of a call ends after the client's
                    if '"action": "run"' in stream.getvalue():
                        break
                    await asyncio.sleep(0.01)
                return late.value.code()

        code = asyncio.run(go())
        runs = [json.loads(x) for x in stream.getvalue().splitlines() if '"run"' in x]
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert [(r["key_id"], r["status"]) for r in runs] == [(info.key_id, 499)]


class _SlowLines:
    """An audit stream whose writes take ``delay`` seconds (a slow disk), holding the server's
    event loop meanwhile, as a real blocking write does."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.lines: list[str] = []

    def write(self, text: str, /) -> None:
        time.sleep(self.delay)
        self.lines.append(text)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_refused_calls_line_is_written_before_its_status_leaves() -> None:
    """``context.abort`` sends the status at once, and the audit line was written after it, in
    the call's ``finally``: a client could see its refusal (and act on it) before the line
    existed, while REST writes its line as the response starts. It is now written first."""
    admin = "the admin key"
    with in_process(admin_key_sha256=hashlib.sha256(admin.encode()).hexdigest()) as apps:
        lines = _SlowLines(0.5)
        access = AccessControl(apps.apps.access.keyring, AuditLog(lines))
        seen: list[int] = []

        def client(port: int) -> None:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
                with pytest.raises(grpc.RpcError) as refused:
                    stub.ModelInfer(_request("m", 2), timeout=10)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
                seen.append(len(lines.lines))  # what was written when the client knew

        async def go() -> None:
            server = grpc.aio.server()
            add_to_server(InferenceServicer(apps.apps.oip, access), server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            try:
                await asyncio.to_thread(client, port)
            finally:
                await server.stop(None)

        asyncio.run(go())
    assert seen == [1]
    assert json.loads(lines.lines[0])["status"] == 401


async def _nothing() -> AsyncIterator[Any]:
    for message in ():
        yield message


@pytest.mark.parametrize("batching", [False, True])
def test_a_cancelled_call_stops_its_run_and_gives_the_model_back(batching: bool) -> None:
    """A ModelInfer whose client gave up (here: its deadline passed) cancelled the call's task
    but not its run: a Loop model went on past --run-timeout, holding a worker and the model's
    only run slot, so the next call on it waited and timed out too (a few such calls held
    every worker for as long as their models liked). The run is now stopped as for a REST
    client gone, and the next call is answered; for a batching model too (its request waited
    in the queue's run after the call was cancelled, and the run went on)."""
    with in_process(inference_threads=2, run_timeout=5.0) as apps:  # one run of a model at once
        if batching:
            model = attacks.batched_loop()
            apps.upload(model, model_name="loop", settings={"max_batch_size": 4})
        else:
            apps.upload(attacks.slow_loop(), model_name="loop")

        def loop_request(trips: int) -> Any:
            msg = pb.ModelInferRequest(model_name="loop")
            if batching:
                msg.inputs.add(name="x", datatype="INT64", shape=[1, 1])
            else:
                msg.inputs.add(name="M", datatype="INT64", shape=[])
            msg.raw_input_contents.append(np.array(trips, np.int64).tobytes())
            return msg

        async def go() -> tuple[grpc.StatusCode, Any]:
            async with _served(apps) as stub:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.ModelInfer(loop_request(1 << 40), timeout=0.3)
                return caught.value.code(), await stub.ModelInfer(loop_request(3))

        code, reply = asyncio.run(go())
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    out = np.frombuffer(reply.raw_output_contents[0], np.int64 if batching else np.float32)
    assert out.tolist() == [3]


@pytest.mark.parametrize("method", ["ModelInfer", "ModelReady", "RepositoryIndex"])
def test_a_message_that_does_not_parse_is_invalid_argument(
    method: str, caplog: pytest.LogCaptureFixture
) -> None:
    """grpcio parsed the request itself: bytes that were no message of the call's type were
    answered UNKNOWN ("Unexpected <class 'DecodeError'>"), with a traceback in the server's
    log. The call now parses them: INVALID_ARGUMENT, a message naming the type, no log."""
    with in_process() as apps:

        async def go() -> grpc.aio.AioRpcError:
            async with _channel(apps) as channel:
                call = channel.unary_unary(
                    f"/inference.GRPCInferenceService/{method}",
                    request_serializer=None,  # bytes as they are
                    response_deserializer=None,
                )
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call(b"\xff" * 8)
                return caught.value

        with caplog.at_level(logging.INFO):
            error = asyncio.run(go())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == f"the request is not a valid inference.{method}Request message"
    # grpcio's poller may log "Event loop is closed" for a loop an earlier test closed (each
    # test runs its own loop; a server runs one until it stops): not this call's doing
    logged = [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING
        and "Event loop is closed" not in f"{r.getMessage()} {r.exc_info and r.exc_info[1]}"
    ]
    assert not logged, caplog.text
