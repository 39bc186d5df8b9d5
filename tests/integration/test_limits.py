"""Issue 10 replayed against a real server: each attack, bounded, gets a clean refusal while
another client keeps being served, and the server's memory stays bounded and comes back.

One server with small limits serves the module. Every test runs its attack while a probe
client keeps calling a tiny model (each call must answer within a second), and reads the
server's own RSS from /proc before and after: never above 1.5 GB, and back within 200 MB.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from onnx import TensorProto

import blindai
from blindai.client._transport import PinnedTlsTransport, PlainTransport
from blindai.errors import (
    BlindAIError,
    InferenceFailed,
    InferenceTimeout,
    InvalidInput,
    PayloadTooLarge,
    ServerBusy,
)
from tests import attacks
from tests._server import ServerProcess, connect, start_server
from tests.models import identity

MiB = 1 << 20
LIMITS = {
    "--max-model-bytes": 8 * MiB,
    "--max-request-bytes": 4 * MiB,
    "--max-response-bytes": 8 * MiB,
    "--max-run-memory": 256 * MiB,
    "--run-timeout": 2,
    "--compile-timeout": 20,
    "--compile-memory": 64 * MiB,
    "--max-graph-nodes": 20_000,
    "--max-subgraph-depth": 4,
    "--max-header-bytes": 4096,
    "--max-header-count": 50,
    "--header-timeout": 1,
    "--body-timeout": 1,
    "--body-min-rate": 10_000,
    "--keep-alive-timeout": 2,
    "--max-connections": 32,
    "--inference-threads": 4,
    "--max-models": 1000,
    "--max-preprocess-memory": 64 * MiB,
}
PEAK_MAX = 1536 * MiB
RETURN_WITHIN = 200 * MiB
HANG = 60.0
"""Only a guard against hanging forever when the limit under test is broken."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    flags = [str(x) for pair in LIMITS.items() for x in pair]
    proc = start_server(tmp_path_factory.mktemp("limits"), *flags)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def certificate(server: ServerProcess) -> bytes:
    plain = PlainTransport(server.host, server.unattested_port, 10)
    cert: bytes = cbor2.loads(plain.request("GET", "/").body)
    plain.close()
    return cert


@pytest.fixture(scope="module")
def tiny(server: ServerProcess) -> str:
    """The probe's model."""
    with connect(server) as conn:
        return conn.upload_model(identity(TensorProto.FLOAT, [1, 3])).model_id


def _memory(server: ServerProcess) -> dict[str, int]:
    """VmRSS and VmHWM of the server process, in bytes."""
    with open(f"/proc/{server.process.pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")}


def _reset_peak(server: ServerProcess) -> None:
    """Start the server's VmHWM again from its current RSS."""
    with open(f"/proc/{server.process.pid}/clear_refs", "w") as f:
        f.write("5")


@dataclass
class Probe:
    """Another client calling the tiny model in a loop while an attack runs."""

    server: ServerProcess
    model_id: str
    worst: float = 0.0
    calls: int = 0
    errors: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _served: threading.Event = field(default_factory=threading.Event)

    def _loop(self, conn: blindai.Connection) -> None:
        x = np.ones((1, 3), np.float32)
        try:
            with conn:
                while not self._stop.is_set():
                    start = time.monotonic()
                    conn.predict(self.model_id, {"x": x})
                    self.worst = max(self.worst, time.monotonic() - start)
                    self.calls += 1
                    self._served.set()
        except BaseException as exc:
            self.errors.append(exc)
            self._served.set()

    @contextlib.contextmanager
    def running(self) -> Iterator[Probe]:
        # connected here: warnings filters (connect silences one) are not thread-safe
        thread = threading.Thread(target=self._loop, args=(connect(self.server),))
        thread.start()
        assert self._served.wait(HANG), "the probe was never served"
        served_before = self.calls
        try:
            yield self
        finally:
            self._served.clear()
            assert self._served.wait(HANG), "the probe was not served after the attack"
            self._stop.set()
            thread.join(HANG)
        assert not self.errors, self.errors
        assert self.calls > served_before
        assert self.worst < 1.0, f"another client waited {self.worst:.2f} s"


@contextlib.contextmanager
def attack(server: ServerProcess, model_id: str) -> Iterator[None]:
    """Run the block as an attack: probe served throughout, memory bounded and given back."""
    before = _memory(server)["VmRSS"]
    with Probe(server, model_id).running():
        yield
    after = _memory(server)
    assert after["VmHWM"] < PEAK_MAX, f"peak RSS {after['VmHWM'] >> 20} MiB"
    assert after["VmRSS"] - before < RETURN_WITHIN, (
        f"RSS went from {before >> 20} to {after['VmRSS'] >> 20} MiB"
    )


def _tls(server: ServerProcess, port: int | None = None) -> ssl.SSLSocket:
    """A raw TLS socket to the attested port (the attacker needs no attestation)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    sock = socket.create_connection((server.host, port or server.attested_port), timeout=HANG)
    return ctx.wrap_socket(sock)


def _until_closed(sock: socket.socket) -> bytes:
    """All the server sends until it closes the connection."""
    data = b""
    with sock:
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except (ConnectionResetError, ssl.SSLError):
            pass
    return data


def _runs_left(server: ServerProcess, model_id: str, body: bytes, count: int) -> list[str]:
    """Send ``count`` /run requests of ``body``, each on its own connection, left at once; the
    statuses the access log gives them (the server logs a request once it has ended)."""
    for _ in range(count):
        sock = _tls(server)
        sock.sendall(
            f"POST /run HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
        )
        sock.close()
    pattern = re.compile(rf"attested POST /run (\d+) .* model={model_id}$", re.M)
    deadline = time.monotonic() + HANG  # a guard against hanging, not a timing check
    while len(pattern.findall(server.log())) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return pattern.findall(server.log())


def _tensor(fact: list[int], data: bytes, datum: int = 3) -> dict[str, object]:
    return {"info": {"fact": fact, "datum_type": datum, "node_name": None}, "bytes_data": data}


# A model reads files


@pytest.mark.parametrize("where", ["initializer", "if", "function"])
def test_a_model_naming_a_file_is_refused(server, tiny, where):
    """Issue 10: an initializer at a relative location made onnxruntime read that file from the
    server's working directory (its repository root here: pyproject.toml is there)."""
    if where == "initializer":
        model = attacks.external_initializer("pyproject.toml")
    else:
        model = attacks.external_in(where, location="pyproject.toml")
    with attack(server, tiny), connect(server) as conn:
        with pytest.raises(InvalidInput, match="external data") as info:
            conn.upload_model(model)
    assert "[build-system]" not in str(info.value)


# Tiny inputs, huge memory


def test_a_tiny_request_asking_for_gigabytes_fails_alone(server, tiny):
    """Issue 10: a 118-byte /run on a ConstantOfShape model took the server to 4.8 GB and the
    memory stayed after it."""
    with connect(server) as conn:
        model_id = conn.upload_model(attacks.constant_of_shape()).model_id
        with attack(server, tiny):
            for n in (1 << 30, 100 * MiB):  # 4 GiB and 400 MiB of floats, over 256 MiB
                with pytest.raises(InferenceFailed, match="--max-run-memory") as info:
                    conn.predict(model_id, {"s": np.array([n], np.int64)})
                assert info.value.status_code == 422
            # under the cap the same model answers, and gives its memory back
            out = conn.predict(model_id, {"s": np.array([32 * MiB], np.int64)})
            assert float(out.output[0]) == 32 * MiB


def test_a_graph_whose_static_shapes_are_too_large_is_refused_at_upload(server, tiny):
    with attack(server, tiny), connect(server) as conn:
        with pytest.raises(InvalidInput, match="static shape of 1073741824 bytes"):
            conn.upload_model(attacks.static_constant_of_shape(1 << 28))


@pytest.mark.parametrize("op", ["Expand", "Gather"])
def test_a_model_that_repeats_a_requests_string_is_refused_at_upload(server, tiny, op):
    """A 10 KB request through Expand to 100 000 copies took the server 1 GB outside the arena
    (onnxruntime keeps a string's characters on the heap): such a model cannot be uploaded."""
    with attack(server, tiny), connect(server) as conn:
        with pytest.raises(InvalidInput, match="--max-string-memory") as info:
            conn.upload_model(attacks.string_amplifier(op))
    assert info.value.status_code == 400
    assert f"({op})" in str(info.value)


def test_a_small_image_that_would_take_more_than_the_preprocessing_memory_is_refused(server, tiny):
    """A 64 KB PNG of 4000x4000 pixels would take about 270 MB to preprocess, more than this
    server's --max-preprocess-memory (64 MiB): 400 before it is decoded, the probe served."""
    from PIL import Image

    from blindai.pipeline import Pipeline
    from tests import models
    from tests.unit.pipeline._factory import encode

    pipeline = Pipeline(
        {"input": {"kind": "image", "resize": [16, 16]}, "output": {"kind": "labels"}}, {}
    )
    big = encode(Image.new("RGB", (4000, 4000), (0, 0, 255)), "PNG")
    small = encode(Image.new("RGB", (40, 40), (0, 0, 255)), "PNG")
    with connect(server) as conn:
        name = conn.upload_model(models.colour_classifier(16), pipeline=pipeline).model_id
        with attack(server, tiny):
            with pytest.raises(InvalidInput, match="--max-preprocess-memory"):
                conn.predict(name, image=big)
        assert conn.predict(name, image=small).top.index == 2  # blue


@pytest.mark.parametrize(
    ("model", "hostile"),
    [
        (attacks.inverse([None, None]), {"x": np.zeros((64, 2), np.float32)}),
        (attacks.attn_lstm(), {"x": np.ones((3, 1, 2), np.float32)}),
        (
            attacks.stft(window="input"),
            {"s": np.ones((1, 16, 1), np.float32), "w": np.ones(0, np.float32)},
        ),
        (
            attacks.conv_weights([None, None, None, None]),
            {"x": np.ones((1, 2, 4, 4), np.float32), "w": np.ones((1, 2, 0, 2), np.float32)},
        ),
    ],
    ids=["inverse", "attn_lstm", "stft", "conv"],
)
def test_a_model_whose_kernel_ends_the_process_is_refused_at_upload(server, tiny, model, hostile):
    """A com.microsoft Inverse of a [64, 2] input, or an AttnLSTM without its attention
    inputs, ended the server's process (SIGSEGV) at the run, and an STFT with an empty window
    (SIGFPE): every tenant's connection dropped; a Conv with a kernel dimension of 0 never
    ended (its worker held for good). Such models are refused at upload; the other client is
    served throughout."""
    with attack(server, tiny), connect(server) as conn:
        with pytest.raises(InvalidInput, match=r" needs a| needs an input whose|is refused"):
            model_id = conn.upload_model(model).model_id
            conn.predict(model_id, hostile)  # before the fix: the server process ended here
    assert server.process.poll() is None


@pytest.mark.parametrize(
    ("model", "hostile"),
    [
        (attacks.split_to_empty_pieces(), {"n": np.array([4_000_000], np.int64)}),
        (attacks.unique_of_a_range(), {"n": np.array(8_000_000, np.float32)}),
        (
            attacks.roi_align(),
            {
                "x": np.ones((1, 1, 4, 4), np.float32),
                "rois": np.array([[0, 0, 3000, 3000]], np.float32),
            },
        ),
    ],
    ids=["split_to_sequence", "unique", "roi_align"],
)
def test_a_model_whose_kernel_takes_memory_outside_the_arena_is_refused_at_upload(
    server, tiny, model, hostile
):
    """A 100-byte request splitting a [4 000 000, 0] tensor into a sequence took a server with
    a 64 MiB arena 550 MiB more (each empty piece onnxruntime's heap, none of the arena, and
    nothing bounds their count), a Unique of 8 000 000 floats 600 MiB more, an adaptive
    RoiAlign of one 3000 x 3000 region 411 MiB more: refused at upload; the other client is
    served throughout and the memory stays bounded."""
    refused = r"is refused: its kernel takes onnxruntime's heap|needs a positive sampling_ratio"
    with attack(server, tiny), connect(server) as conn:
        with pytest.raises(InvalidInput, match=refused):
            model_id = conn.upload_model(model, optimize=False).model_id
            conn.predict(model_id, hostile)  # before the fix: 504, the memory kept
    assert server.process.poll() is None


@pytest.mark.slow
@pytest.mark.xfail(
    reason="not fixed: onnxruntime gives n arena regions back in n squared time, under the "
    "process arena's lock (docs/limits.md, Not bounded); --run-isolation process contains it",
    strict=True,
)
def test_a_run_that_leaves_many_arena_regions_does_not_stall_the_others(tmp_path):
    """A Loop with a scalar scan output takes one 256-byte arena region a trip; onnxruntime's
    shrink after the run gives 100 000 of them back in about 45 s, holding the arena's lock:
    measured, another tenant's tiny run got 504 for 14 s after the attacker's own 504. Kept
    as a strict xfail so that a fix (onnxruntime's, or another arena set-up) shows."""
    proc = start_server(
        tmp_path,
        "--max-run-memory",
        str(64 * MiB),
        "--run-timeout",
        "5",
        "--inference-threads",
        "4",
    )
    try:
        with connect(proc) as attacker, connect(proc) as other:
            hostile = attacker.upload_model(attacks.loop_of_small_outputs(), optimize=False)
            tiny = other.upload_model(identity(TensorProto.FLOAT, [1, 3])).model_id
            x = {"x": np.ones((1, 3), np.float32)}
            with contextlib.suppress(BlindAIError):  # 504 here, or done on a fast one
                attacker.predict(hostile.model_id, {"M": np.array(100_000, np.int64)})
            started = time.monotonic()
            other.predict(tiny, x)  # 504 while the arena is locked
            assert time.monotonic() - started < 1.0
    finally:
        proc.stop()


@pytest.mark.parametrize("op_type", ["GRU", "LSTM", "SkipLayerNormalization"])
def test_an_empty_input_to_a_model_whose_kernel_cannot_take_one_is_a_400(server, tiny, op_type):
    """onnxruntime's GRU and LSTM kernels call std::terminate on an input with a zero-size
    dimension, and SkipLayerNormalization divides by zero: one /run with an empty batch ended
    the server's process. Such a model's runs refuse empty inputs; the other client is served
    throughout."""
    if op_type == "SkipLayerNormalization":
        model = attacks.skip_layer_norm()
        hostile = {"x": np.ones((1, 2, 4), np.float32), "skip": np.ones((0, 2, 4), np.float32)}
        fine = {"x": np.ones((1, 2, 4), np.float32), "skip": np.ones((1, 2, 4), np.float32)}
    else:
        model = attacks.recurrent(op_type)
        hostile = {"x": np.ones((3, 0, 2), np.float32)}
        fine = {"x": np.ones((3, 1, 2), np.float32)}
    with attack(server, tiny), connect(server) as conn:
        model_id = conn.upload_model(model).model_id
        with pytest.raises(InvalidInput, match=f"is empty; this model uses {op_type}"):
            conn.predict(model_id, hostile)
        out = conn.predict(model_id, fine)
        assert np.asarray(out.output[0]).size == (8 if op_type == "SkipLayerNormalization" else 6)
    assert server.process.poll() is None


@pytest.mark.parametrize("op_type", ["GRU", "LSTM", "MultiHeadAttention", "RotaryEmbedding"])
def test_a_model_that_makes_an_empty_tensor_for_such_a_kernel_is_refused(server, tiny, op_type):
    """A model that slices its input to a length the request gives before such a kernel
    took non-empty inputs (so the data plane let them through) and ended the server's process
    (std::terminate, SIGFPE, SIGSEGV). It is refused at upload now; the same operator over
    the request's own dimensions is admitted and runs; the other client is served throughout."""
    hostile = attacks.empty_unsafe_feeds(op_type, made="slice", empty=True)
    with attack(server, tiny), connect(server) as conn:
        with pytest.raises(InvalidInput, match=rf"{op_type} needs .* proven non-zero"):
            model_id = conn.upload_model(attacks.empty_unsafe(op_type, made="slice")).model_id
            conn.predict(model_id, hostile)  # before the fix: the server process ended here
        model_id = conn.upload_model(attacks.empty_unsafe(op_type, made="transpose")).model_id
        out = conn.predict(model_id, attacks.empty_unsafe_feeds(op_type, made="transpose"))
        assert np.asarray(out.output[0]).size > 0
    assert server.process.poll() is None


@pytest.mark.parametrize("through", ["BiasGelu", "SkipLayerNormalization"])
def test_a_kernel_behind_contrib_operators_is_admitted_unless_its_input_is_made_empty(
    server, tiny, through
):
    """A SkipLayerNormalization whose skip comes through a contrib operator (as in models
    optimized by onnxruntime's transformer tools, whose contrib outputs onnx infers no shape
    for) is admitted with the default proofs and runs; the same over a Slice to a length the
    request gives is still refused at upload."""
    op_type = "SkipLayerNormalization"
    with attack(server, tiny), connect(server) as conn:
        with pytest.raises(InvalidInput, match=rf"{op_type} needs .* proven non-zero"):
            conn.upload_model(attacks.empty_unsafe(op_type, made="slice", through=through))
        model_id = conn.upload_model(attacks.empty_unsafe(op_type, through=through)).model_id
        out = conn.predict(model_id, attacks.empty_unsafe_feeds(op_type))
        assert np.asarray(out.output[0]).shape == (2, 3, 4)
    assert server.process.poll() is None


@pytest.mark.torch
def test_an_optimized_transformer_is_admitted_by_default(server, tiny, tmp_path):
    """A small BERT exported by torch and optimized by onnxruntime's optimize_model
    (EmbedLayerNormalization, Attention, SkipLayerNormalization, BiasGelu) is admitted by a
    server with the default --empty-kernel-proofs, and its runs match onnxruntime's."""
    import onnxruntime as ort

    from tests.unit.server.test_optimized_transformers import _HEADS, _HIDDEN, _optimized, _tiny

    model = _optimized(
        _tiny(causal=False), tmp_path, model_type="bert", heads=_HEADS, hidden=_HIDDEN
    )
    feeds = {
        "input_ids": np.array([[3, 1, 4, 1, 5]], np.int64),
        "attention_mask": np.ones((1, 5), np.int64),
    }
    (expected,) = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feeds)
    with connect(server) as conn:
        model_id = conn.upload_model(model).model_id
        out = conn.predict(model_id, feeds)
    np.testing.assert_allclose(
        np.asarray(out.output[0]).reshape(expected.shape), expected, atol=1e-4
    )


def test_a_model_too_costly_to_compile_is_refused(server, tiny):
    """Issue 10: 8 MB of If nodes took 4 GB to compile. Here, 3000 Ifs need more than the
    test server's --compile-memory; 10000 are more nodes than --max-graph-nodes."""
    with attack(server, tiny), connect(server) as conn:
        with pytest.raises(InvalidInput, match="more memory than this server allows"):
            conn.upload_model(attacks.wide_ifs(3000))
        with pytest.raises(InvalidInput, match="more than 20000 nodes"):
            conn.upload_model(attacks.wide_ifs(10000))
        with pytest.raises(InvalidInput, match="nest more than 4 deep"):
            conn.upload_model(attacks.nested_ifs(5))


def test_a_reply_over_the_limit_is_refused_before_it_is_built(server, tiny, certificate):
    """Issue 10: a 131-byte v2 request got a 191 MB reply. Here 80 MB, over the test server's
    --max-response-bytes and well within its --max-run-memory (at 200 MB, a run beside the
    probe's sometimes found no room for it in the arena: 422, but about memory)."""
    with connect(server) as conn:
        model_id = conn.upload_model(attacks.constant_of_shape(reduce=False)).model_id
    v2 = PinnedTlsTransport(server.host, server.attested_port, certificate, HANG)
    body = (
        b'{"inputs":[{"name":"s","datatype":"INT64","shape":[1],"data":[20000000]}],'
        b'"outputs":[{"name":"y","parameters":{"binary_data":true}}]}'
    )
    with attack(server, tiny):
        resp = v2.request("POST", f"/v2/models/{model_id}/infer", body)
        assert len(body) < 140 and resp.status == 422
        assert b"--max-response-bytes" in resp.body
        # the 0.6 route refuses it the same way
        run = cbor2.dumps(
            {"model_id": model_id, "inputs": [_tensor([1], np.int64(20_000_000).tobytes())]}
        )
        resp = v2.request("POST", "/run", run)
        assert resp.status == 422 and b"--max-response-bytes" in resp.body
    v2.close()


def test_an_integer_array_upload_is_decoded_without_an_object_per_byte(server, tiny):
    """Issue 10: 400 MB of model sent as an integer array peaked at 4.4 GB (11x)."""
    padded = _padded(attacks.chain(1), 6 * MiB)  # a real model, 6 MiB long (12 MiB as ints)
    body = cbor2.dumps({"model": list(padded), "length": len(padded)})
    with attack(server, tiny):
        _reset_peak(server)
        before = _memory(server)
        mgmt = _tls(server, server.management_port)
        head = (
            f"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        mgmt.sendall(head.encode() + body)
        reply = _until_closed(mgmt)
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        grown = _memory(server)["VmHWM"] - before["VmRSS"]
    # the decoder holds 2x the model; onnxruntime about 3x more while it loads the session
    assert grown < 8 * len(padded), f"peak grew by {grown >> 20} MiB for a 6 MiB model"


def _padded(model: bytes, size: int) -> bytes:
    """The model with a doc string that makes it ``size`` bytes (still a valid model)."""
    import onnx

    proto = onnx.ModelProto.FromString(model)
    proto.doc_string = "x" * (size - len(model) - 8)
    return proto.SerializeToString()


@pytest.mark.parametrize("as_ints", [False, True])
def test_an_oversized_model_is_refused_from_its_declared_size(server, tiny, as_ints):
    """Issue 10: a 1.1 GB model was read whole before its 413. Here the head of a 9 MiB model
    is sent, then the answer is read before the rest: it must already be there."""
    size = 9 * MiB
    head = b"\xa1\x65model" + (b"\x9a" if as_ints else b"\x5a") + size.to_bytes(4, "big")
    with attack(server, tiny):
        sock = _tls(server, server.management_port)
        total = len(head) + (2 * size if as_ints else size)
        sock.sendall(
            f"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\n\r\n".encode()
            + head
            + b"\x01" * 1000
        )
        reply = _until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 413")
    assert b"the model is 9437184 bytes, over the 8 MiB limit (--max-model-bytes" in reply


def test_a_body_declared_over_the_limit_is_refused_before_it_is_read(server, tiny):
    with attack(server, tiny):
        sock = _tls(server, server.management_port)
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1181116006\r\n\r\n")
        reply = _until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 413")


# One request stalls every port


@pytest.mark.parametrize("size", ["small", "large"])
def test_big_integer_dimensions_are_refused_at_once(server, tiny, certificate, size):
    """Issue 10: 32 big-integer dims in a 3 MB body froze all three ports for 16 s, then 500."""
    digits = 1000 if size == "small" else 60_000  # a body under and over the cbor2 threshold
    fact = [2 ** (8 * digits)] * 32
    body = cbor2.dumps({"model_id": tiny, "inputs": [_tensor(fact, b"")]})
    attested = PinnedTlsTransport(server.host, server.attested_port, certificate, HANG)
    with attack(server, tiny):
        resp = attested.request("POST", "/run", body)
    attested.close()
    assert resp.status == 400, resp.body
    assert b"64 bits" in resp.body or b"tags" in resp.body


def test_an_empty_tensor_of_a_huge_shape_is_a_400(server, tiny, certificate):
    """Issue 10: fact = [2**62, 0] with empty data gave a 500."""
    attested = PinnedTlsTransport(server.host, server.attested_port, certificate, HANG)
    body = cbor2.dumps({"model_id": tiny, "inputs": [_tensor([2**62, 0], b"", datum=0)]})
    resp = attested.request("POST", "/run", body)
    attested.close()
    assert resp.status == 400 and b"2**48" in resp.body


def test_a_huge_header_is_cut_with_431(server, tiny):
    """Issue 10: one 256 MB header value froze every port for 17 s and was accepted."""
    with attack(server, tiny):
        sock = _tls(server)
        sent = 0
        with contextlib.suppress(OSError):  # the server closes once it has answered
            sock.sendall(b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-Big: ")
            while sent < 256 * MiB:
                sock.sendall(b"a" * 65536)
                sent += 65536
        reply = _until_closed(sock)
    assert sent < 256 * MiB  # cut off, not read whole
    assert reply.startswith(b"HTTP/1.1 431") or reply == b""


def test_too_many_headers_get_431(server, tiny):
    with attack(server, tiny):
        sock = _tls(server)
        fields = b"".join(b"X-%d: y\r\n" % i for i in range(60))
        sock.sendall(b"GET /v2 HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
        reply = _until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 431")
    assert reply.endswith(b"more than 50 request headers")


# No time limits


def test_a_long_run_is_stopped_at_the_run_timeout(server, tiny):
    """Issue 10: a long Loop model kept all 8 inference threads for 91 s after its clients
    gave up; a request for another model waited 86 s. Now each run stops at --run-timeout,
    and one model holds at most one less worker than there are (--max-model-runs)."""
    with connect(server) as conn:
        model_id = conn.upload_model(attacks.slow_loop()).model_id
        results: list[BaseException] = []

        def slow(own: blindai.Connection) -> None:
            with own:
                try:
                    own.predict(model_id, {"M": np.array(1 << 40, np.int64)})
                except BaseException as exc:
                    results.append(exc)

        with attack(server, tiny):
            # as many as there are inference threads: all of them held
            threads = [threading.Thread(target=slow, args=(connect(server),)) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(HANG)
        assert len(results) == 4
        for exc in results:
            assert isinstance(exc, InferenceTimeout), exc
            assert exc.status_code == 504 and "--run-timeout" in str(exc)
        # the workers are free: a short run of the same model answers
        assert conn.predict(model_id, {"M": np.array(3, np.int64)}).output[0].tolist() == [3.0]


def test_a_batching_models_run_is_stopped_at_the_run_timeout(server, tiny):
    """A model uploaded with max_batch_size runs through its queue, whose runs had no run
    options: a Loop as long as the request asked went on after its 504, holding a worker and
    the model's one run slot (every later request on it answered 504), and as many such
    models as workers held every worker for good. The run is now stopped once its requests
    have all given up."""
    with connect(server) as conn:
        models = [
            conn.upload_model(attacks.batched_loop(tag), max_batch_size=4).model_id
            for tag in range(3)  # a worker left for the probe, as --max-model-runs leaves
        ]
        results: list[BaseException] = []

        def slow(own: blindai.Connection, model_id: str) -> None:
            with own:
                try:
                    own.predict(model_id, {"x": np.array([[1 << 40]], np.int64)})
                except BaseException as exc:
                    results.append(exc)

        with attack(server, tiny):
            threads = [threading.Thread(target=slow, args=(connect(server), m)) for m in models]
            for t in threads:
                t.start()
            for t in threads:
                t.join(HANG)
        assert len(results) == 3
        for exc in results:
            assert isinstance(exc, InferenceTimeout), exc
        # the workers and the models' run slots are free: short runs answer
        for model_id in models:
            got = conn.predict(model_id, {"x": np.array([[3]], np.int64)})
            assert got.output[0].tolist() == [[3]]


def test_a_run_whose_client_left_is_stopped(server, tiny):
    """A run stopped because its client went away answers 422 ("the run was stopped") in the
    access log; one left to its timeout would have answered 504."""
    with connect(server) as conn:
        model_id = conn.upload_model(attacks.slow_loop()).model_id
    body = cbor2.dumps({"model_id": model_id, "inputs": [_tensor([], np.int64(1 << 40).tobytes())]})
    with attack(server, tiny):
        statuses = _runs_left(server, model_id, body, 8)  # twice the inference threads
    assert statuses == ["422"] * 8


def test_a_batching_models_request_whose_client_left_gives_up(server, tiny):
    """A batching model's request did not watch its connection: a client gone from its run,
    or from the queue behind it, was waited for until its run timeout (504 in the access log,
    the model's one run slot held meanwhile). It gives up when its client goes, as a run of
    any other model does (422, "the run was stopped"), and the run nobody waits for stops."""
    with connect(server) as conn:
        model_id = conn.upload_model(attacks.batched_loop(10), max_batch_size=4).model_id
    x = np.array([[1 << 40]], np.int64)
    body = cbor2.dumps({"model_id": model_id, "inputs": [_tensor([1, 1], x.tobytes())]})
    with attack(server, tiny):
        # the first runs, the others wait behind it
        statuses = _runs_left(server, model_id, body, 4)
    assert statuses == ["422"] * 4
    with connect(server) as conn:  # the run was stopped: the model's slot is free
        got = conn.predict(model_id, {"x": np.array([[3]], np.int64)})
    assert got.output[0].tolist() == [[3]]


@pytest.mark.parametrize(
    "opening",
    [b"", b"POST /run HTTP/1.1\r\nHost: x\r\nX-Slow: ", b"POST /run HTTP/1.1\r\nHost: x\r\n"],
    ids=["nothing", "half-a-header", "no-blank-line"],
)
def test_slow_headers_are_closed(server, tiny, opening):
    """Issue 10: connections sending nothing or half a header stayed open forever."""
    with attack(server, tiny):
        socks = []
        for _ in range(10):
            if opening:
                sock = _tls(server)
                sock.sendall(opening)
            else:  # not even a TLS handshake
                sock = socket.create_connection((server.host, server.attested_port), timeout=HANG)
            socks.append(sock)
        for sock in socks:
            assert _until_closed(sock) == b""


def test_less_body_than_promised_is_closed(server, tiny):
    with attack(server, tiny):
        sock = _tls(server)
        sock.sendall(b"POST /run HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        reply = _until_closed(sock)
    assert b" 200 " not in reply


def test_websocket_upgrades_are_answered_and_closed(server, tiny):
    """A WebSocket upgrade (no key needed to send one) was never answered and its connection
    stayed open for good. Now each is answered as plain HTTP, then closed."""
    upgrade = (
        b"Host: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    with attack(server, tiny):
        socks = []
        for port, path in [
            (server.attested_port, b"/v2/health/live"),
            (server.management_port, b"/keys"),
            (server.attested_port, b"/v2/models/stats"),
        ]:
            sock = _tls(server, port)
            sock.sendall(b"GET " + path + b" HTTP/1.1\r\n" + upgrade)
            socks.append(sock)
        plain = socket.create_connection((server.host, server.unattested_port), timeout=HANG)
        plain.sendall(b"GET /info HTTP/1.1\r\n" + upgrade)
        replies = [_until_closed(sock) for sock in [*socks, plain]]
    statuses = [reply.split(b"\r\n", 1)[0] for reply in replies]
    assert statuses == [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 403 Forbidden",  # no access control here: no keys to manage
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 200 OK",
    ]


def test_idle_connections_past_the_cap_make_room_for_new_clients(server, tiny):
    """Issue 10: 20,000 idle connections used every file descriptor; clients were refused."""
    with attack(server, tiny):
        idle = []
        for _ in range(3 * LIMITS["--max-connections"]):
            sock = _tls(server)
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            idle.append(sock)
        with connect(server) as conn:  # a new client still gets in
            assert conn.predict(tiny, {"x": np.ones((1, 3), np.float32)})
        for sock in idle:
            sock.close()


# Logs


def test_the_log_holds_route_templates_not_what_clients_sent(server, tiny, certificate):
    """Issue 10: paths were logged percent-decoded (%0a forged a line, escapes reached the
    terminal); user-chosen model names and 60 KB paths were written to the log."""
    name = "USER-NAME-" + "n" * 100
    with connect(server) as conn:
        conn.upload_model(identity(TensorProto.FLOAT, [1, 3]), model_name=name)
    attested = PinnedTlsTransport(server.host, server.attested_port, certificate, HANG)
    forged = "/v2/models/FORGED%0a2026%20INFO%20forged%1b%5b31m/ready"
    for path in (forged, f"/v2/models/{name}/ready", "/" + "p" * 6000):
        attested.request("GET", path)
    attested.close()
    log = server.log()
    assert "FORGED" not in log and "forged" not in log and "\x1b" not in log
    assert "USER-NAME" not in log and "p" * 100 not in log
    assert re.search(r"attested GET /v2/models/\{name\}/ready \d{3} ", log)
    assert max(len(line) for line in log.splitlines()) < 400


@pytest.mark.parametrize("model", ["external", "over-limit"])
def test_refusals_are_4xx_with_a_message_never_500(server, tiny, model):
    with connect(server) as conn:
        upload = (
            attacks.external_initializer("x")
            if model == "external"
            else attacks.static_constant_of_shape(1 << 28)
        )
        with pytest.raises((InvalidInput, PayloadTooLarge)) as info:
            conn.upload_model(upload)
    assert 400 <= info.value.status_code < 500 and info.value.message


def test_grpc_metadata_over_the_header_limit_is_refused(server, tiny, certificate, tmp_path):
    """The gRPC port bounds metadata like the HTTP ports bound headers; runs there share the
    data plane's run limits."""
    grpcclient = pytest.importorskip("tritonclient.grpc")
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    pem = tmp_path / "attested.pem"
    pem.write_bytes(x509.load_der_x509_certificate(certificate).public_bytes(Encoding.PEM))
    client = grpcclient.InferenceServerClient(
        f"{server.host}:{server.grpc_port}",
        ssl=True,
        root_certificates=str(pem),
        channel_args=[("grpc.ssl_target_name_override", "blindai-srv")],
    )
    try:
        with attack(server, tiny):
            assert client.is_server_live()
            with pytest.raises(Exception) as info:
                client.is_server_live(headers={"x-big": "a" * 6000})  # gRPC allows 8 KiB
            assert "metadata" in str(info.value).lower() or "RESOURCE_EXHAUSTED" in str(info.value)
            assert client.is_server_live()  # the same client goes on
    finally:
        client.close()


def test_pipelined_requests_never_read_hold_bounded_memory(server, tiny):
    """24 clients each sent 1 MiB of pipelined 30-byte requests and read nothing: every request
    of a read was parsed and queued at once (about 2.5 KB each), 1.8 GB of the server for 20
    of them. Now at most 32 wait per connection, and the answers left unread are dropped with
    their connection at --body-min-rate."""
    request = b"GET /v2 HTTP/1.1\r\nHost: x\r\n\r\n"
    with attack(server, tiny):
        held = []
        for _ in range(24):
            sock = _tls(server)
            sock.settimeout(2)
            with contextlib.suppress(OSError):  # the server stops reading: a timeout here
                sock.sendall(request * (MiB // len(request)))
            held.append(sock)
        for sock in held:
            sock.close()


def test_a_body_refused_by_its_length_is_not_read_for_good(server, tiny):
    """/run answered 413 from a declared length of 10**15 bytes, then read and dropped
    whatever came, up to that length (512 MiB decrypted in 0.6 s, and on). It was then read no
    further than the largest body a port takes (an upload here: 41 MiB); now the connection
    closes after the answer (test_a_body_sent_to_a_route_that_takes_none_is_not_read)."""
    with attack(server, tiny):
        sock = _tls(server)
        sock.sendall(b"POST /run HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000000\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 413 ")
        sent = 0
        with contextlib.suppress(OSError):  # reset or broken pipe once the server has closed
            while sent < 256 * MiB:
                sock.sendall(b"a" * 65536)
                sent += 65536
        sock.close()
    assert sent < 64 * MiB, f"{sent >> 20} MiB read after the answer"


@pytest.mark.parametrize("port", ["unattested", "attested"])
def test_a_body_sent_to_a_route_that_takes_none_is_not_read(server, tiny, port):
    """A GET / (the unattested port's certificate, plain HTTP here; the attested port's 404,
    over TLS) declaring a
    100 MB body was answered, then the server read and dropped the body whole, up to the
    largest body a port takes (about 1 GiB): bandwidth and a connection slot for nothing.
    Now the answer says ``Connection: close`` and the server reads no further."""
    declared = 100_000_000
    with attack(server, tiny):
        if port == "attested":
            sock: socket.socket = _tls(server)
        else:
            sock = socket.create_connection((server.host, server.unattested_port), timeout=HANG)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % declared)
        head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 "), head[:100]
        assert b"\r\nconnection: close\r\n" in head.lower()
        sent = 0
        with contextlib.suppress(OSError):  # reset or broken pipe once the server has closed
            while sent < declared:
                sock.sendall(b"a" * 65536)
                sent += 65536
        sock.close()
    assert sent < 32 * MiB, f"{sent >> 20} MiB read after the answer"


def _grpc_stub(server: ServerProcess, certificate: bytes) -> tuple[Any, Any]:
    """A grpcio channel pinned to the attested certificate, and its stub."""
    import grpc
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from blindai.server.protocols.grpc._generated import grpc_service_pb2_grpc as pb_grpc

    pem = x509.load_der_x509_certificate(certificate).public_bytes(Encoding.PEM)
    channel = grpc.secure_channel(
        f"{server.host}:{server.grpc_port}",
        grpc.ssl_channel_credentials(root_certificates=pem),
        options=[("grpc.ssl_target_name_override", "blindai-srv")],
    )
    return channel, pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]


def _open_fds(server: ServerProcess) -> int:
    return len(os.listdir(f"/proc/{server.process.pid}/fd"))


def test_grpc_connections_are_capped_and_handshakes_time_out(server, tiny, certificate):
    """The gRPC port took any number of connections, each a TCP connection that never started
    its TLS handshake held for grpc-core's 120 s: enough of them took every file descriptor
    the process had, and the HTTP ports could accept nothing. Now the port holds at most
    --max-connections (32 here) and drops a handshake after --header-timeout (1 s)."""
    from blindai.server.protocols.grpc._generated import grpc_service_pb2 as pb

    channel, stub = _grpc_stub(server, certificate)
    try:
        with attack(server, tiny):
            assert stub.ServerLive(pb.ServerLiveRequest(), timeout=HANG).live
            before = _open_fds(server)
            raw = [socket.create_connection((server.host, server.grpc_port)) for _ in range(96)]
            for sock in raw[:4]:  # the server has accepted what it takes: it answers EOF to
                sock.settimeout(HANG)  # these (the first ones) after the handshake timeout
                assert _until_closed(sock) == b""
            # the connections over the cap were closed on arrival, never more than 32 held
            # (plus a few the probe client may have open meanwhile), not 96
            assert _open_fds(server) - before <= 40
            for sock in raw[4:]:
                sock.settimeout(HANG)
                assert _until_closed(sock) == b""
            assert stub.ServerLive(pb.ServerLiveRequest(), timeout=HANG).live
    finally:
        channel.close()


def _held_calls(channel: Any, never: threading.Event, count: int) -> list[Any]:
    """``count`` ModelInfer calls whose message never comes: the unary method called as
    client-streaming, so its headers go and nothing else until ``never`` is set."""
    from blindai.server.protocols.grpc._generated import grpc_service_pb2 as pb

    held = channel.stream_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelInferResponse.FromString,
    )

    def nothing() -> Iterator[Any]:
        never.wait()
        yield from ()

    return [held.future(nothing()) for _ in range(count)]


@contextlib.contextmanager
def _held(
    server: ServerProcess, certificate: bytes, count: int
) -> Iterator[tuple[list[Any], threading.Event]]:
    """:func:`_held_calls` on a channel of their own, connected first (a call made while the
    channel still connects may reach a server that has meanwhile stopped accepting, and wait
    for its handshake for good), and the event that lets them end (set, and the channel
    closed, when the block ends)."""
    import grpc

    never = threading.Event()
    channel, _ = _grpc_stub(server, certificate)
    try:
        grpc.channel_ready_future(channel).result(timeout=HANG)
        yield _held_calls(channel, never, count), never
    finally:
        never.set()
        channel.close()


def _live(server: ServerProcess, certificate: bytes) -> bool:
    """ServerLive's answer on a new connection."""
    from blindai.server.protocols.grpc._generated import grpc_service_pb2 as pb

    channel, stub = _grpc_stub(server, certificate)
    try:
        return bool(stub.ServerLive(pb.ServerLiveRequest(), timeout=HANG).live)
    finally:
        channel.close()


@contextlib.contextmanager
def _grpc_server(tmp_path: Path, *flags: str) -> Iterator[tuple[ServerProcess, bytes]]:
    """A server with small call bounds (about 3 s: body timeout 1 s twice, run timeout 1 s,
    2 MB at 10 MB/s), and its attested certificate."""
    bounds = ["--body-timeout", "1", "--run-timeout", "1", "--body-min-rate", "10000000"]
    bounds += ["--max-request-bytes", "1000000", "--max-response-bytes", "1000000"]
    proc = start_server(tmp_path, *bounds, *flags)
    try:
        plain = PlainTransport(proc.host, proc.unattested_port, 10)
        certificate = cbor2.loads(plain.request("GET", "/").body)
        plain.close()
        yield proc, certificate
    finally:
        proc.stop()


def test_a_grpc_call_whose_message_never_comes_is_dropped(tmp_path):
    """grpc-core has no timer for a call whose message never arrives: a client could open
    calls (100 per connection) and hold them, and their connection, for good. A connection now
    lives at most its call bound, its calls in progress given that long again."""
    import grpc

    with _grpc_server(tmp_path) as (proc, certificate), _held(proc, certificate, 4) as (calls, _):
        with connect(proc) as conn:  # the HTTP ports are served meanwhile
            assert conn.upload_model(identity(TensorProto.FLOAT, [1, 3])).model_id
        for call in calls:
            assert isinstance(call.exception(timeout=HANG), grpc.RpcError)
        assert _live(proc, certificate)


@pytest.mark.parametrize(
    "flags",
    [
        ["--max-connections", "6"],
        # 6 messages of --max-request-bytes (1 MB) in --max-body-memory
        [
            *("--max-model-bytes", "1000000", "--max-pipeline-bytes", "1000000"),
            *("--max-body-memory", "6500000"),
        ],
    ],
    ids=["max-connections", "max-body-memory"],
)
def test_grpc_calls_in_progress_are_capped(tmp_path, flags):
    """A gRPC connection carries 100 calls, each buffering its message as it comes: one
    connection with 20 calls of 60 MB, each stalled a byte short, took the server from 136 MB to
    1.36 GB (6 GB with 100), against one body per HTTP connection. The port now serves at most
    --max-connections calls at once, and as many messages of --max-request-bytes as
    --max-body-memory holds (6 here): the next gets RESOURCE_EXHAUSTED at once. grpcio
    answered it before any code of ours, so it had no audit line and no count in the metrics;
    the servicer now refuses it, with a line (status 429) and a count, grpcio's limit above."""
    import grpc

    from tests.integration._oip import scrape

    audit = tmp_path / "audit.jsonl"
    with (
        _grpc_server(tmp_path, *flags, "--audit-log", str(audit)) as (proc, certificate),
        _held(proc, certificate, 7) as (calls, never),  # the seventh to arrive is refused
    ):
        ended: queue.Queue[Any] = queue.Queue()
        for call in calls:
            call.add_done_callback(ended.put)
        first = ended.get(timeout=HANG)
        assert first.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, first
        assert "too many gRPC calls in progress" in (first.details() or "")
        never.set()  # they end (their message never came): calls are served again
        for call in calls:
            call.exception(timeout=HANG)
        assert _live(proc, certificate)
        pem = x509.load_der_x509_certificate(certificate).public_bytes(Encoding.PEM).decode()
        counted = scrape(proc, pem)
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(line["action"], line["key"]) for line in lines if line["status"] == 429] == [
        ("run", None)
    ]
    refused = (("code", "RESOURCE_EXHAUSTED"), ("method", "ModelInfer"))
    assert counted[("blindai_grpc_requests_total", refused)] == 1


_SLOTS = 6


def _seventh_refused(proc: ServerProcess, cert: bytes) -> bool:
    """One more held call on its own channel: refused at once (True) or admitted (False)."""
    import grpc

    never = threading.Event()
    channel, _ = _grpc_stub(proc, cert)
    try:
        grpc.channel_ready_future(channel).result(timeout=HANG)
        (call,) = _held_calls(channel, never, 1)
        try:
            call.result(timeout=1.5)
        except grpc.FutureTimeoutError:
            call.cancel()
            return False
        except grpc.RpcError as exc:
            return exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        return False
    finally:
        never.set()
        channel.close()


def _fill_and_end(proc: ServerProcess, cert: bytes, how: str) -> None:
    """Fill the slots with held calls, see the next refused, then end them ``how``."""
    import grpc

    never = threading.Event()
    channel, _ = _grpc_stub(proc, cert)
    grpc.channel_ready_future(channel).result(timeout=HANG)
    if how == "deadline":
        from blindai.server.protocols.grpc._generated import grpc_service_pb2 as pb

        held = channel.stream_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )

        def nothing() -> Iterator[Any]:
            never.wait()
            yield from ()

        calls = [held.future(nothing(), timeout=3) for _ in range(_SLOTS)]
    else:
        calls = _held_calls(channel, never, _SLOTS)
    deadline = time.monotonic() + HANG
    while not _seventh_refused(proc, cert):  # all six are in the servicer
        assert time.monotonic() < deadline
    assert not any(c.done() for c in calls)
    if how == "cancel":
        for c in calls:
            c.cancel()
    elif how == "close":
        channel.close()
    elif how == "deadline":
        for c in calls:
            c.exception(timeout=HANG)
    never.set()
    if how != "close":
        channel.close()


@pytest.mark.parametrize("how", ["cancel", "close", "deadline"])
def test_grpc_call_slots_come_back_however_calls_end(tmp_path, how):
    """The servicer counts the calls it serves (CallSlots) from its handler's start: a call
    that ended without its decrement would lower the port's capacity for good. Three times the
    six slots are filled with calls whose message never comes, then ended by the client
    (cancelled, its connection closed, or its deadline passed); six calls are then still
    admitted and the seventh refused. (Passed as merged; fails with the decrement moved out of
    the handler's ``finally``.)"""
    import grpc

    with _grpc_server(tmp_path, "--max-connections", str(_SLOTS)) as (proc, cert):
        for _ in range(3):
            _fill_and_end(proc, cert, how)
            time.sleep(0.5)
        # every slot is back: six held calls are admitted, the seventh refused
        never = threading.Event()
        channel, _ = _grpc_stub(proc, cert)
        grpc.channel_ready_future(channel).result(timeout=HANG)
        calls = _held_calls(channel, never, _SLOTS)
        deadline = time.monotonic() + HANG
        while not _seventh_refused(proc, cert):
            assert time.monotonic() < deadline
        time.sleep(0.3)
        refused = [c for c in calls if c.done()]
        assert refused == [], [c.exception() for c in refused]
        never.set()
        channel.close()


def test_calls_without_a_valid_key_hold_no_grpc_call_slot(tmp_path):
    """With access control, a call's key was checked only once its message had come, and the
    call held one of the port's slots (--max-connections here, 6) from its start: a client
    with no key opened six calls on one connection and sent nothing, and every tenant's call
    was refused RESOURCE_EXHAUSTED for the connection's call bound (36 minutes at the
    defaults). A call whose metadata names no valid key is now answered UNAUTHENTICATED at
    once, its message unread, and holds no slot."""
    import hashlib

    import grpc

    from blindai.protocol.apikeys import generate_key
    from blindai.server.protocols.grpc._generated import grpc_service_pb2 as pb

    admin = generate_key()
    digest = hashlib.sha256(admin.encode()).hexdigest()
    # a call bound of minutes, as at the defaults (36): the held calls outlive the test's calls
    flags = ("--max-connections", str(_SLOTS), "--admin-key-sha256", digest)
    with (
        _grpc_server(tmp_path, *flags, "--body-timeout", "100") as (proc, cert),
        _held(proc, cert, _SLOTS) as (calls, _),
    ):
        deadline = time.monotonic() + 2.0
        while not all(c.done() for c in calls) and time.monotonic() < deadline:
            time.sleep(0.05)  # before, they were held: in the servicer by now
        channel, stub = _grpc_stub(proc, cert)
        try:
            index = stub.RepositoryIndex(
                pb.RepositoryIndexRequest(),
                metadata=[("authorization", f"Bearer {admin}")],
                timeout=HANG,
            )
        finally:
            channel.close()
        assert list(index.models) == []
        for call in calls:  # no key: refused at once, their message unread
            assert call.exception(timeout=1).code() == grpc.StatusCode.UNAUTHENTICATED


def test_one_tenant_holds_at_most_half_of_the_grpc_call_slots(tmp_path):
    """A tenant's calls that send nothing held the port's call slots as long as their
    connection's call bound (36 minutes at the defaults): one key took them all (six here,
    --max-connections 6), and every other tenant's call was refused RESOURCE_EXHAUSTED. One
    tenant's key now holds at most half of them (as its share of --max-body-memory): its
    fourth call is refused, and another key's call is served."""
    method, refusal = "ModelInfer", "with this key: one key may have 3 of the port's 6"
    import hashlib

    import grpc

    from blindai.protocol.apikeys import generate_key
    from blindai.server.protocols.grpc._generated import grpc_service_pb2 as pb

    admin = generate_key()
    digest = hashlib.sha256(admin.encode()).hexdigest()
    flags = ("--max-connections", str(_SLOTS), "--admin-key-sha256", digest)
    never = threading.Event()
    with _grpc_server(tmp_path, *flags, "--body-timeout", "100") as (proc, cert):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", blindai.SimulationModeWarning)
            with blindai.connect(
                proc.host, simulation_mode=True, api_key=admin, **proc.ports
            ) as conn:
                alice = conn.create_key("alice").key
        channel, stub = _grpc_stub(proc, cert)
        try:
            grpc.channel_ready_future(channel).result(timeout=HANG)
            held = channel.stream_unary(
                f"/inference.GRPCInferenceService/{method}",
                request_serializer=getattr(pb, f"{method}Request").SerializeToString,
                response_deserializer=getattr(pb, f"{method}Response").FromString,
            )

            def nothing() -> Iterator[Any]:
                never.wait()
                yield from ()

            mine = [("authorization", f"Bearer {alice}")]
            calls = [held.future(nothing(), metadata=mine) for _ in range(_SLOTS)]
            ended: queue.Queue[Any] = queue.Queue()
            for call in calls:
                call.add_done_callback(ended.put)
            for _ in range(_SLOTS // 2):  # the calls past their share are refused at once
                refused = ended.get(timeout=HANG)
                assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert f"too many gRPC calls in progress {refusal}" in (refused.details() or "")
            time.sleep(0.3)
            assert sum(not c.done() for c in calls) == _SLOTS // 2  # her share, held
            index = stub.RepositoryIndex(
                pb.RepositoryIndexRequest(),
                metadata=[("authorization", f"Bearer {admin}")],
                timeout=HANG,
            )
            assert list(index.models) == []
        finally:
            never.set()
            channel.close()


@pytest.mark.parametrize("access", [True, False], ids=["with-keys", "open-server"])
@pytest.mark.parametrize("method", ["ServerLive", "ServerReady", "ServerMetadata"])
def test_probes_are_answered_however_many_calls_hold_no_message(tmp_path, method, access):
    """The calls that need no key shared half of the port's call slots (0c7f7a6), each held
    while its (always empty) message came: a client with no key held that half with calls that
    sent nothing, and a load balancer's health probe got RESOURCE_EXHAUSTED for the
    connection's call bound (36 minutes at the defaults). These calls are now answered at once,
    their message never read, and take no slot: six held ones (the port's whole count here)
    are all answered, and so is a probe on a new connection."""
    import hashlib

    import grpc

    from blindai.protocol.apikeys import generate_key
    from blindai.server.protocols.grpc._generated import grpc_service_pb2 as pb

    flags: tuple[str, ...] = ("--max-connections", str(_SLOTS), "--body-timeout", "100")
    if access:
        digest = hashlib.sha256(generate_key().encode()).hexdigest()
        flags += ("--admin-key-sha256", digest)
    never = threading.Event()
    with _grpc_server(tmp_path, *flags) as (proc, cert):
        channel, _ = _grpc_stub(proc, cert)
        try:
            grpc.channel_ready_future(channel).result(timeout=HANG)
            held = channel.stream_unary(
                f"/inference.GRPCInferenceService/{method}",
                request_serializer=getattr(pb, f"{method}Request").SerializeToString,
                response_deserializer=getattr(pb, f"{method}Response").FromString,
            )

            def nothing() -> Iterator[Any]:
                never.wait()
                yield from ()

            calls = [held.future(nothing()) for _ in range(_SLOTS + 2)]
            for call in calls:  # answered while their client still sends nothing
                assert call.exception(timeout=HANG) is None, call.exception()
            assert _live(proc, cert)
            probe = getattr(_grpc_stub(proc, cert)[1], method)
            assert probe(getattr(pb, f"{method}Request")(), timeout=HANG) is not None
        finally:
            never.set()
            channel.close()


def test_a_large_grpc_message_takes_from_the_body_budget_while_it_is_served(tmp_path):
    """Protobuf makes an object per element while it parses a message (a 61 MiB message of
    empty BYTES elements took 1000 MiB), and the gRPC port took 64 calls of 64 MiB at once at
    the defaults. A large message now takes 17 times its size (at most a share) from
    --max-body-memory while its call is served: with three 1 MB HTTP bodies held, a 200 KB
    call does not fit (UNAVAILABLE, ServerBusy) while a small call is served; it is served
    once they leave. Before, nothing held it back."""
    import grpc

    from blindai.server.protocols.grpc._generated import grpc_service_pb2 as pb

    proc = start_server(
        tmp_path,
        *("--max-request-bytes", "1000000", "--max-model-bytes", "1000000"),
        *("--max-pipeline-bytes", "1000000", "--max-body-memory", "6000000"),
    )
    try:
        with connect(proc) as conn:
            model_id = conn.upload_model(identity(TensorProto.FLOAT, [None])).model_id
        plain = PlainTransport(proc.host, proc.unattested_port, 10)
        certificate = cbor2.loads(plain.request("GET", "/").body)
        plain.close()
        x = np.ones(50_000, np.float32)  # 200 KB
        message = pb.ModelInferRequest(model_name=model_id, raw_input_contents=[x.tobytes()])
        message.inputs.add(name="x", datatype="FP32", shape=[x.size])
        channel, stub = _grpc_stub(proc, certificate)
        head = b"POST /run HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
        holders = [_tls(proc) for _ in range(3)]
        try:
            for sock in holders:
                sock.sendall(head + b"x")  # the rest never comes
            for _ in range(100):  # until the server has read the holders' heads
                try:
                    stub.ModelInfer(message, timeout=HANG)
                except grpc.RpcError as exc:
                    refused = exc
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("the large call was served beside the held bodies")
            assert refused.code() == grpc.StatusCode.UNAVAILABLE, refused
            assert "--max-body-memory" in (refused.details() or "")
            assert stub.ServerLive(pb.ServerLiveRequest(), timeout=HANG).live
        finally:
            for sock in holders:
                sock.close()
        for _ in range(100):  # their room comes back once the server sees them leave
            try:
                reply = stub.ModelInfer(message, timeout=HANG)
                break
            except grpc.RpcError:
                time.sleep(0.05)
        got = np.frombuffer(reply.raw_output_contents[0], np.float32)
        np.testing.assert_array_equal(got, x)
        channel.close()
    finally:
        proc.stop()


def test_file_descriptors_are_reserved_for_the_grpc_port_too(tmp_path):
    """The server raised its file-descriptor limit for --max-connections on each HTTP port; the
    gRPC port, now capped at --max-connections too, gets its share: 4 x 500 + 256."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2256:
        pytest.skip(f"the hard file-descriptor limit ({hard}) is below what the test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # inherited by the server
    try:
        proc = start_server(tmp_path, "--max-connections", "500")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        limits = Path(f"/proc/{proc.process.pid}/limits").read_text()
        line = next(row for row in limits.splitlines() if row.startswith("Max open files"))
        assert line.split()[3] == "2256", line
    finally:
        proc.stop()


@pytest.mark.slow
def test_slow_compilations_are_killed_and_small_uploads_go_on(tmp_path):
    """Issue 10: two slow-to-compile uploads held both compile threads; a 100-byte upload
    waited 21 s. Each compilation now ends at --compile-timeout, so the small upload waits at
    most that long, while inference is served throughout."""
    proc = start_server(tmp_path, "--compile-timeout", "3", "--max-graph-nodes", "1000000")
    try:
        with connect(proc) as conn:
            tiny_id = conn.upload_model(identity(TensorProto.FLOAT, [1, 3])).model_id
        slow_model = attacks.wide_ifs(30_000)  # far more than 3 s to compile here
        refused: list[BaseException] = []

        def slow(own: blindai.Connection) -> None:
            with own:
                try:
                    own.upload_model(slow_model)
                except BaseException as exc:
                    refused.append(exc)

        with attack(proc, tiny_id):
            threads = [threading.Thread(target=slow, args=(connect(proc),)) for _ in range(2)]
            for t in threads:
                t.start()
            with connect(proc) as conn:
                small = conn.upload_model(identity(TensorProto.FLOAT, [1, 3]))
            for t in threads:
                t.join(HANG)
        assert small.model_id
        assert len(refused) == 2
        for exc in refused:
            assert isinstance(exc, InvalidInput) and "--compile-timeout" in str(exc)
    finally:
        proc.stop()


def test_request_bodies_held_at_once_are_bounded(tmp_path):
    """Each body fits --max-request-bytes, but the bodies of all requests in progress together
    may take at most --max-body-memory: two clients holding a 1 MiB body each leave no room
    for a third (503 ServerBusy at once, its body unread), while a small request is served;
    their room comes back when they leave. Before, every connection could hold its own body:
    a thousand 64 MiB /run bodies at the defaults."""
    room = 2 * MiB + 64 * 1024
    proc = start_server(
        tmp_path,
        "--max-request-bytes",
        str(MiB),
        "--max-model-bytes",
        str(MiB // 2),
        "--max-pipeline-bytes",
        str(MiB // 4),
        "--max-body-memory",
        str(room),
    )
    head = b"POST /run HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % MiB

    def first_answer(body: bytes, wait: float) -> bytes:
        sock = _tls(proc)
        with sock:
            sock.sendall(head + body)
            sock.settimeout(wait)
            try:
                return sock.recv(65536)
            except TimeoutError:
                return b""

    try:
        with connect(proc) as conn:
            tiny_id = conn.upload_model(identity(TensorProto.FLOAT, [1, 3])).model_id
        with attack(proc, tiny_id):
            holders = [_tls(proc) for _ in range(2)]
            try:
                for sock in holders:
                    sock.sendall(head + b"x" * 10)  # the rest never comes
                for _ in range(100):  # until the server has read both holders' headers
                    if refused := first_answer(b"", 0.2):
                        break
                assert refused.startswith(b"HTTP/1.1 503 "), refused[:200]
                assert b"ServerBusy" in refused and b"--max-body-memory" in refused
                with connect(proc) as conn:  # a small request still fits
                    x = np.ones((1, 3), np.float32)
                    out = conn.run_model(tiny_id, input_tensors={"x": x}).output[0].as_numpy()
                    np.testing.assert_array_equal(out, x)
            finally:
                for sock in holders:
                    sock.close()
            for _ in range(100):  # their room comes back once the server sees them leave
                answer = first_answer(b"x" * MiB, HANG)
                if not answer.startswith(b"HTTP/1.1 503 "):
                    break
                time.sleep(0.05)
            assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]  # read, and not CBOR
    finally:
        proc.stop()


def test_a_v2_json_body_counts_what_parsing_it_takes(tmp_path):
    """Parsing a v2 JSON body makes an object per element, up to 23 times the JSON's size: 64
    bodies of 64 MiB fitted the default budget counted by their length, and would have taken
    90 GB. JSON now counts 24 times (at most a share): one client's 100 KiB JSON body, whose
    rest never comes, leaves no room for a second (503 at once), while a small 0.6 request is
    served. Counted by their length, both fitted."""
    proc = start_server(
        tmp_path,
        *("--max-request-bytes", str(MiB), "--max-model-bytes", str(MiB // 2)),
        *("--max-pipeline-bytes", str(MiB // 4), "--max-body-memory", str(3 * MiB)),
    )
    try:
        with connect(proc) as conn:
            tiny_id = conn.upload_model(identity(TensorProto.FLOAT, [1, 3])).model_id
        head = b"POST /v2/models/%s/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (
            tiny_id.encode(),
            100 * 1024,
        )
        holder = _tls(proc)
        try:
            holder.sendall(head + b'{"inputs"')  # the rest never comes
            for _ in range(100):  # until the server has read the holder's head
                second = _tls(proc)
                with second:
                    second.sendall(head)
                    second.settimeout(0.2)
                    try:
                        refused = second.recv(65536)
                    except TimeoutError:
                        refused = b""
                if refused:
                    break
            assert refused.startswith(b"HTTP/1.1 503 "), refused[:200]
            assert b"--max-body-memory" in refused
            with connect(proc) as conn:  # a small request still fits
                x = np.ones((1, 3), np.float32)
                out = conn.run_model(tiny_id, input_tensors={"x": x}).output[0].as_numpy()
                np.testing.assert_array_equal(out, x)
        finally:
            holder.close()
    finally:
        proc.stop()


def test_answers_not_taken_hold_the_body_budget(tmp_path):
    """Two clients that never read their 16 MB answers (to a 40-byte request each) keep them
    in the server's memory; they now count against --max-body-memory until taken, so a 16 MiB
    body finds no room (503) while a small request is still served, and the room comes back
    when they leave. Before, an answer counted for nothing once written: every connection
    could hold one of --max-response-bytes for some 17 minutes."""
    proc = start_server(
        tmp_path,
        *("--max-request-bytes", str(16 * MiB), "--max-response-bytes", str(16 * MiB)),
        *("--max-model-bytes", str(MiB), "--max-pipeline-bytes", str(MiB)),
        *("--max-body-memory", str(40 * MiB)),
    )
    head = b"POST /run HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
    x = np.ones((1, 3), np.float32)

    def refused() -> bytes:
        """The answer to a 16 MiB body's head (b"" when the server waits for the body)."""
        sock = _tls(proc)
        with sock:
            sock.sendall(head % (16 * MiB))
            sock.settimeout(0.2)
            try:
                return sock.recv(65536)
            except TimeoutError:
                return b""

    def small_request_served() -> bool:
        try:
            out = conn.run_model(tiny_id, input_tensors={"x": x}).output[0].as_numpy()
        except ServerBusy:  # a 16 MiB head just admitted still holds its room
            return False
        np.testing.assert_array_equal(out, x)
        return True

    try:
        conn = connect(proc)
        tiny_id = conn.upload_model(identity(TensorProto.FLOAT, [1, 3])).model_id
        big_id = conn.upload_model(attacks.constant_of_shape(reduce=False)).model_id
        ask = cbor2.dumps(
            {"model_id": big_id, "inputs": [_tensor([1], np.int64(4_000_000).tobytes())]}
        )
        assert refused() == b""  # room for it at first
        readers = [_tls(proc) for _ in range(2)]
        try:
            for sock in readers:
                sock.sendall(head % len(ask) + ask)  # and never read the answer
            for _ in range(100):  # until both answers are held
                if answer := refused():
                    break
            assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
            assert b"--max-body-memory" in answer
            assert any(small_request_served() for _ in range(100))
            assert refused().startswith(b"HTTP/1.1 503 ")  # still held
        finally:
            for sock in readers:
                sock.close()
        for _ in range(100):  # their room comes back once the server sees them leave
            if not (answer := refused()):
                break
        assert answer == b"", answer[:200]
        conn.close()
    finally:
        proc.stop()
