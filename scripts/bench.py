"""Latency of BlindAI's /run against onnxruntime in-process, and where the difference goes.

Run with ``make bench`` (or ``python scripts/bench.py [--quick]``). For each model, batch 1:

- ``in-process``: ``onnxruntime.InferenceSession.run`` in this process (same session options
  as the server: all graph optimisations, default threads);
- ``codec``: our client's request encoding plus reply decoding, in this process;
- ``echo``: the same request body through our client transport (pinned TLS 1.2+, HTTP/1.1
  keep-alive, TCP_NODELAY) to a bare uvicorn + starlette HTTPS route that echoes it back;
- ``blindai``: ``Connection.run_model`` against ``blindai serve --simulation`` on loopback.

``server own`` = blindai - echo - codec - in-process (p50): what our server adds beyond the
transport and the model itself. Client and servers share this machine's CPUs.

Then our hand-written HTTP/1.1 client against ``h11`` in the same run: the same /run body of
the tiny model, on the same pinned TLS socket set-up, to the same server, in interleaved
rounds (the order alternates each round); the ratio h11 / ours at p50 is what our client
saves a request.

``--device cuda`` runs both the in-process session and the server (``blindai serve --device
cuda``) on onnxruntime's CUDA execution provider (needs onnxruntime-gpu and a GPU).
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import ssl
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import h11
import numpy as np
import onnx
import onnxruntime as ort
from _serverproc import EchoServer, ServerProcess, echo_server, simulation_server
from onnx import TensorProto, helper

import blindai
from blindai.client._tensors import to_wire_tensors
from blindai.client._transport import PinnedTlsTransport
from blindai.errors import BlindAIError
from blindai.protocol import codec
from blindai.protocol.messages import WireTensor
from blindai.server.runtime import check_device, providers_for

WARMUP = 30
TIME_CAP_S = 5.0
H11_ROUNDS = 20


@dataclass(frozen=True)
class Model:
    """A benchmark model: its name, ONNX bytes, one input and the parameter count."""

    name: str
    onnx_bytes: bytes
    x: np.ndarray
    params: int


@dataclass(frozen=True)
class Stats:
    """Latency percentiles in milliseconds."""

    p50: float
    p99: float
    n: int


def _dense_layers(
    sizes: list[int], seed: int
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        w = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
        b = rng.standard_normal(n_out).astype(np.float32) * 0.01
        inits += [
            helper.make_tensor(f"W{i}", TensorProto.FLOAT, w.shape, w.ravel()),
            helper.make_tensor(f"B{i}", TensorProto.FLOAT, b.shape, b),
        ]
        last = i == len(sizes) - 2
        out = "y" if last else f"h{i}"
        nodes += [
            helper.make_node("MatMul", [prev, f"W{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"B{i}"], [out if last else f"a{i}"]),
        ]
        if not last:
            nodes.append(helper.make_node("Relu", [f"a{i}"], [out]))
        prev = out
    return nodes, inits


def mlp(name: str, sizes: list[int], seed: int = 0) -> Model:
    """A stack of dense layers (ReLU between them) built with onnx.helper."""
    nodes, inits = _dense_layers(sizes, seed)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, sizes[0]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, sizes[-1]])
    graph = helper.make_graph(nodes, name, [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    params = sum(int(np.prod(t.dims)) for t in inits)
    sample = np.random.default_rng(seed + 1).standard_normal((1, sizes[0])).astype(np.float32)
    return Model(name, model.SerializeToString(), sample, params)


def measure(fn: Callable[[], object], n: int) -> Stats:
    """Warm up, then time ``fn`` up to ``n`` times (stopping early after TIME_CAP_S)."""
    for _ in range(WARMUP):
        fn()
    times: list[float] = []
    stop = time.perf_counter() + TIME_CAP_S
    while len(times) < n and time.perf_counter() < stop:
        t0 = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - t0) / 1e6)
    arr = np.asarray(times)
    return Stats(float(np.percentile(arr, 50)), float(np.percentile(arr, 99)), len(times))


def in_process(m: Model, n: int, device: str = "cpu") -> Stats:
    """onnxruntime in this process, with the server's session options and device."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    providers = providers_for("cuda" if device == "cuda" else "cpu")
    session = ort.InferenceSession(m.onnx_bytes, options, providers=providers)
    return measure(lambda: session.run(["y"], {"x": m.x}), n)


def request_body(model_id: str, x: np.ndarray) -> bytes:
    """The /run body our client sends for ``{"x": x}``."""
    tensors = to_wire_tensors({"x": x})
    return codec.dumps(
        {
            "model_id": model_id,
            "model_hash": "",
            "inputs": [codec.encode_tensor(t) for t in tensors],
        }
    )


def client_codec(m: Model, y: np.ndarray, n: int) -> Stats:
    """Encode a request and decode a reply of the model's output, as the client does."""
    reply = codec.dumps({"outputs": [codec.encode_tensor(WireTensor.from_numpy(y, "y"))]})

    def once() -> None:
        request_body("00000000-0000-4000-8000-000000000000", m.x)
        body = codec.decode_map(reply, what="run reply")
        for t in codec.decode_tensors(body.get("outputs"), what="outputs"):
            t.as_numpy().copy()

    return measure(once, n)


def echo(server: EchoServer, m: Model, n: int) -> Stats:
    """The same request body, echoed by a bare HTTPS route, through our transport."""
    body = request_body("00000000-0000-4000-8000-000000000000", m.x)
    transport = PinnedTlsTransport(server.host, server.port, server.cert_der, 30.0)
    try:
        return measure(lambda: transport.request("POST", "/run", body), n)
    finally:
        transport.close()


def through_blindai(conn: blindai.Connection, m: Model, n: int) -> tuple[Stats, np.ndarray]:
    """Upload, time ``run_model``, check the output against onnxruntime, delete."""
    model_id = conn.upload_model(m.onnx_bytes, model_name=f"bench-{m.name}").model_id
    stats = measure(lambda: conn.run_model(model_id, input_tensors={"x": m.x}), n)
    y = conn.run_model(model_id, input_tensors={"x": m.x}).output[0].as_numpy()
    conn.delete_model(model_id)
    return stats, y


class H11Client:
    """HTTP/1.1 through ``h11`` on the same pinned TLS socket as our transport (keep-alive)."""

    def __init__(self, transport: PinnedTlsTransport) -> None:
        self._transport = transport
        self._sock = transport._socket()
        self._conn = h11.Connection(h11.CLIENT)

    def request(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        """One request and its whole response body."""
        if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            self._conn.start_next_cycle()
        host = f"{self._transport.host}:{self._transport.port}"
        headers = [("Host", host), ("Content-Length", str(len(body)))]
        out = self._conn.send(h11.Request(method=method, target=path, headers=headers))
        out += self._conn.send(h11.Data(data=body)) + self._conn.send(h11.EndOfMessage())
        self._sock.sendall(out)
        status, parts = 0, []
        while True:
            event = self._conn.next_event()
            if event is h11.NEED_DATA:
                self._conn.receive_data(self._sock.recv(1 << 16))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return status, b"".join(parts)

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()


@dataclass(frozen=True)
class ClientComparison:
    """Our HTTP/1.1 client against h11, same requests, interleaved."""

    ours: Stats
    h11: Stats


def compare_h11(
    server: ServerProcess, conn: blindai.Connection, m: Model, n: int
) -> ClientComparison:
    """The tiny model's /run through our client and through h11, in alternating rounds."""
    model_id = conn.upload_model(m.onnx_bytes, model_name="bench-h11").model_id
    body = request_body(model_id, m.x)
    ours_t = PinnedTlsTransport(server.host, server.attested_port, conn.certificate, 30.0)
    h11_t = H11Client(PinnedTlsTransport(server.host, server.attested_port, conn.certificate, 30.0))
    want = ours_t.request("POST", "/run", body).body

    def ours() -> bytes:
        return ours_t.request("POST", "/run", body).body

    def theirs() -> bytes:
        return h11_t.request("POST", "/run", body)[1]

    try:
        if theirs() != want:
            raise RuntimeError("h11 and our client read different replies")
        for _ in range(WARMUP):
            ours(), theirs()
        times: dict[str, list[float]] = {"ours": [], "h11": []}
        per_round = max(1, n // H11_ROUNDS)
        for r in range(H11_ROUNDS):
            order = [("ours", ours), ("h11", theirs)]
            for name, fn in order if r % 2 == 0 else order[::-1]:
                for _ in range(per_round):
                    t0 = time.perf_counter_ns()
                    fn()
                    times[name].append((time.perf_counter_ns() - t0) / 1e6)
    finally:
        ours_t.close()
        h11_t.close()
        conn.delete_model(model_id)

    def stats(values: list[float]) -> Stats:
        arr = np.asarray(values)
        return Stats(float(np.percentile(arr, 50)), float(np.percentile(arr, 99)), len(values))

    return ClientComparison(stats(times["ours"]), stats(times["h11"]))


def report_h11(cmp: ClientComparison, m: Model) -> None:
    """Our client against h11: p50 and p99, the ratio and the difference a request."""
    print(
        f"\nHTTP/1.1 client, {m.name} /run to blindai serve, {cmp.ours.n} requests each in "
        f"{H11_ROUNDS} interleaved rounds; milliseconds"
    )
    print(f"  {'client':<22}{'p50':>8} {'p99':>8}")
    print(f"  {'ours (_http11)':<22}{cmp.ours.p50:8.3f} {cmp.ours.p99:8.3f}")
    print(f"  {'h11 ' + h11.__version__:<22}{cmp.h11.p50:8.3f} {cmp.h11.p99:8.3f}")
    saved = (cmp.h11.p50 - cmp.ours.p50) * 1000
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"  h11 / ours at p50: {cmp.h11.p50 / cmp.ours.p50:.2f}x "
        f"(h11 - ours: {saved:+.0f} us a request; load average {load})"
    )


def connect(server: ServerProcess) -> blindai.Connection:
    """Connect in simulation mode (the warning is printed once, by main)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", blindai.SimulationModeWarning)
        return blindai.connect(
            server.host,
            unattested_server_port=server.unattested_port,
            attested_server_port=server.attested_port,
            model_management_port=server.management_port,
            simulation_mode=True,
        )


def header() -> None:
    """Machine and versions."""
    print("BlindAI latency benchmark (simulation mode: no TEE, protects nothing; a TEE adds its")
    print("own costs, e.g. SGX enclave transitions or encrypted memory, not measured here)")
    print(
        f"machine : {platform.machine()}, {os.cpu_count()} CPUs visible, "
        f"{len(os.sched_getaffinity(0))} usable; {platform.platform()}"
    )
    print(
        f"versions: python {platform.python_version()}, blindai {blindai.__version__}, "
        f"onnxruntime {ort.__version__}, numpy {np.__version__}, onnx {onnx.__version__}, "
        f"{ssl.OPENSSL_VERSION}"
    )
    import starlette
    import uvicorn

    print(f"          uvicorn {uvicorn.__version__}, starlette {starlette.__version__}")


def row(name: str, params: int, cells: list[Stats], ratio: float) -> str:
    """One table row: p50 / p99 per column, then the ratio."""
    text = "  ".join(f"{s.p50:8.3f} {s.p99:8.3f}" for s in cells)
    return f"{name:<22}{params:>10,}  {text}  {ratio:7.1f}x"


Result = tuple[Model, Stats, Stats, Stats, Stats]


def run_all(
    server: ServerProcess, echo_srv: EchoServer, models: list[Model], n: int, device: str = "cpu"
) -> tuple[list[Result], ClientComparison]:
    """Measure every column for every model; check the served outputs against onnxruntime.

    Then our HTTP/1.1 client against h11 on the first (tiny) model.
    """
    results = []
    with connect(server) as conn:
        print(
            f"connect (fetch + check simulated evidence, pin TLS): "
            f"{conn.attestation_seconds * 1000:.1f} ms\n"
        )
        for m in models:
            local = in_process(m, n, device)
            served, y = through_blindai(conn, m, n)
            ref = ort.InferenceSession(m.onnx_bytes, providers=["CPUExecutionProvider"])
            np.testing.assert_allclose(y, ref.run(["y"], {"x": m.x})[0], rtol=1e-4, atol=1e-5)
            results.append((m, local, client_codec(m, y, n), echo(echo_srv, m, n), served))
        clients = compare_h11(server, conn, models[0], n)
    return results, clients


def main() -> int:
    """Run the benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke test)")
    parser.add_argument(
        "--server-log-level",
        default="info",
        help="the server's --log-level (default info, as `blindai serve`; warning drops the "
        "access log)",
    )
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="where the models run, in-process and in the server (default cpu)",
    )
    args = parser.parse_args()
    if args.device == "cuda":
        check_device("cuda")  # one line and exit 2 below when onnxruntime has no CUDA
    n = 50 if args.quick else 500
    models = [mlp("dense 16->4", [16, 4]), mlp("mlp 1024-1024-768-10", [1024, 1024, 768, 10])]
    began = time.perf_counter()
    header()
    print(f"device  : {args.device} (in-process and server)")
    extra = ("--log-level", args.server_log_level, "--device", args.device)
    with simulation_server(*extra) as server, echo_server() as echo_srv:
        try:
            results, clients = run_all(server, echo_srv, models, n, args.device)
        except (BlindAIError, OSError) as exc:
            text = exc.diagnostics() if isinstance(exc, BlindAIError) else str(exc)
            tail = "\n".join(server.log().splitlines()[-5:])
            print(f"bench failed: {text}\nlast server log lines:\n{tail}", file=sys.stderr)
            return 1
    report(results, n)
    report_h11(clients, models[0])
    print(f"\n(total {time.perf_counter() - began:.1f} s)")
    return 0


def report(results: list[Result], n: int) -> None:
    """The latency table and the per-request breakdown."""
    print(f"batch 1, {WARMUP} warm-up then up to {n} requests each; milliseconds")
    cols = ["in-process", "codec", "echo (TLS)", "blindai /run"]
    print(f"{'model':<22}{'params':>10}  " + "  ".join(f"{c:^17}" for c in cols) + "  ratio p50")
    print(f"{'':<32}  " + "  ".join(f"{'p50':>8} {'p99':>8}" for _ in cols))
    for m, local, cod, ech, served in results:
        print(row(m.name, m.params, [local, cod, ech, served], served.p50 / local.p50))
    print("\nper request at p50 (blindai /run minus in-process = what serving adds):")
    for m, local, cod, ech, served in results:
        added = served.p50 - local.p50
        own = added - ech.p50 - cod.p50
        print(
            f"  {m.name:<22} adds {added:6.3f} ms = transport (echo) {ech.p50:6.3f} + client "
            f"codec {cod.p50:6.3f} + BlindAI server own {own:6.3f}"
        )
    if any(38 < served.p50 - ech.p50 < 48 for _, _, _, ech, served in results):
        print(
            "  (about 40 ms over the echo route is the signature of Nagle's algorithm meeting "
            "delayed ACKs:\n   a reply written in two pieces on a socket without TCP_NODELAY)"
        )
    counts = {s.n for _, *cells in results for s in cells}
    if counts != {n}:
        print(f"(some columns stopped at the {TIME_CAP_S:.0f} s cap: {sorted(counts)} requests)")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BlindAIError as exc:
        print(exc.diagnostics(), file=sys.stderr)
        sys.exit(2)
