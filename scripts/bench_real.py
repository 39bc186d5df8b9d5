"""Real model shapes through the server against onnxruntime in-process, as ratios in one run.

Run by ``make bench`` after the tiny-model section (or ``python scripts/bench_real.py
[--quick]``). DistilBERT (seq 128) and ResNet18 (224x224), random weights, are exported on
first use into ``.bench-models/`` (needs the ``bench`` extra: torch 2.13.0, transformers).

The reference is onnxruntime in this process with the server's session options
(``blindai.server.runtime.session_options``), one session shared by all client threads. The
served variant is ``blindai serve --simulation`` on loopback, driven by our client (0.6 CBOR
``/run``) or by a lean Open Inference Protocol v2 client (JSON, or binary tensors) over the
same pinned TLS transport. Client and server share this machine's cores with the reference.

Sections: p50/p90 latency at batch 1 (sequential); throughput at 1, 4 and 16 clients; one
request of batch 16 against 16 concurrent requests of batch 1; the payload's own cost (a model
that does no compute, 2 KiB and 588 KiB inputs); v2 JSON and binary against CBOR at 16
clients; uploading a 500 MB model (MB/s, peak RSS of server and client against onnxruntime's
own load peak). Every comparison is a pair measured back to back, the order alternating, and
measured again when other processes took CPU meanwhile (``_benchkit.Quiet``); the load average
is printed with each section and the run's quietness at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _benchkit import Pair, Quiet, Sample, load_line, paired, rss, run_clients
from _realmodels import CACHE, big_model, identity_model, real_model
from _serverproc import ServerProcess, simulation_server

import blindai
from blindai.client._transport import PinnedTlsTransport

BUSY_LOAD = 0.5
"""Load average per core above which the run is flagged as busy."""
SERVER: list[int | None] = [None]
"""The server's process id, for its CPU time (set by main)."""


def reference_session(model: str | bytes) -> ort.InferenceSession:
    """onnxruntime with the server's session options for this model."""
    from blindai.server.runtime import session_options

    return ort.InferenceSession(
        model, session_options(optimize=True), providers=["CPUExecutionProvider"]
    )


def connect(server: ServerProcess) -> blindai.Connection:
    """Our client, in simulation mode."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", blindai.SimulationModeWarning)
        return blindai.connect(server.host, simulation_mode=True, **server.ports)


class V2Client:
    """A lean Open Inference Protocol v2 client on our pinned TLS transport (JSON or binary)."""

    def __init__(self, server: ServerProcess, cert: bytes, model: str, binary: bool) -> None:
        self._t = PinnedTlsTransport(server.host, server.attested_port, cert, 60.0)
        self._path = f"/v2/models/{model}/infer"
        self._binary = binary

    def infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One request; the outputs as arrays."""
        params = {"binary_data_output": self._binary}
        if self._binary:
            inputs, blobs = [], []
            for name, x in feeds.items():
                blob = np.ascontiguousarray(x).data
                inputs.append(
                    {
                        "name": name,
                        "datatype": _V2[x.dtype.name],
                        "shape": list(x.shape),
                        "parameters": {"binary_data_size": blob.nbytes},
                    }
                )
                blobs.append(blob)
            head = orjson.dumps({"inputs": inputs, "parameters": params})
            body = b"".join([head, *blobs])
            headers = {"Inference-Header-Content-Length": str(len(head))}
        else:
            doc = {
                "inputs": [
                    {
                        "name": n,
                        "datatype": _V2[x.dtype.name],
                        "shape": list(x.shape),
                        "data": x.reshape(-1),
                    }
                    for n, x in feeds.items()
                ],
                "parameters": params,
            }
            body, headers = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), {}
        resp = self._t.request("POST", self._path, body, headers)
        if resp.status != 200:
            raise RuntimeError(f"v2 infer: {resp.status} {resp.body[:200]!r}")
        return _v2_outputs(resp.body, resp.headers.get("inference-header-content-length"))

    def close(self) -> None:
        """Close the connections."""
        self._t.close()


_V2 = {"float32": "FP32", "int64": "INT64", "float64": "FP64", "int32": "INT32"}
_NP = {v: k for k, v in _V2.items()}


def _v2_outputs(body: bytes, head_len: str | None) -> list[np.ndarray]:
    cut = int(head_len) if head_len else len(body)
    doc = orjson.loads(body[:cut])
    out, offset = [], cut
    for o in doc["outputs"]:
        dtype = np.dtype(_NP[o["datatype"]])
        if "data" in o:
            out.append(np.asarray(o["data"], dtype).reshape(o["shape"]))
        else:
            size = o["parameters"]["binary_data_size"]
            blob = np.frombuffer(body, dtype, size // dtype.itemsize, offset)
            out.append(blob.reshape(o["shape"]))
            offset += size
    return out


def ratio_line(label: str, pair: Pair, *, throughput: bool = False) -> str:
    """One comparison: reference and served, and the ratio (served / reference)."""
    r, g = pair.ref, pair.got
    cpu = f"CPU/req {r.cpu_ms:6.2f} | {g.cpu_ms:6.2f} ms ({g.cpu_ms / max(r.cpu_ms, 1e-6):4.2f}x)"
    if throughput:
        return (
            f"  {label:<34}{r.per_s:9.1f}{g.per_s:9.1f} req/s  {g.per_s / r.per_s:5.2f}x  {cpu}"
            f"   (other processes {pair.foreign:.0%} of a core)"
        )
    return (
        f"  {label:<34}{r.p50:8.2f}{r.p90:8.2f}{g.p50:9.2f}{g.p90:8.2f} ms  "
        f"{g.p50 / r.p50:5.2f}x  +{(g.p50 - r.p50) * 1e3:6.0f} us  {cpu}"
        f"   (other processes {pair.foreign:.0%} of a core)"
    )


def section(title: str) -> None:
    """A section's title, with the load average at its start."""
    print(f"\n{title}  [{load_line()}]")


def latency(quiet: Quiet, conn: blindai.Connection, name: str, path: str, feeds, n: int) -> None:
    """p50/p90 at batch 1, sequential, in interleaved rounds."""
    session = reference_session(path)
    model_id = conn.upload_model(path, model_name=f"bench-{name}").model_id
    want = session.run(None, feeds)
    got = conn.run_model(model_id, input_tensors=feeds).output[0].as_numpy()
    np.testing.assert_allclose(got, want[0], rtol=1e-4, atol=1e-4)
    for _ in range(3):
        session.run(None, feeds), conn.run_model(model_id, input_tensors=feeds)
    rounds = 4
    refs, gots, foreign = [], [], []
    for r in range(rounds):
        pair = paired(
            quiet,
            lambda: run_clients(lambda: session.run(None, feeds), 1, n // rounds),
            lambda: run_clients(
                lambda: conn.run_model(model_id, input_tensors=feeds),
                1,
                n // rounds,
                server=SERVER[0],
            ),
            flip=bool(r % 2),
        )
        refs.append(pair.ref)
        gots.append(pair.got)
        foreign.append(pair.foreign)
    best = int(np.argmin([g.p50 / r.p50 for r, g in zip(refs, gots, strict=True)]))
    med = int(np.argsort([g.p50 / r.p50 for r, g in zip(refs, gots, strict=True)])[rounds // 2])
    print(ratio_line(f"{name} (median round)", Pair(refs[med], gots[med], foreign[med])))
    print(ratio_line(f"{name} (best round)", Pair(refs[best], gots[best], foreign[best])))
    conn.delete_model(model_id)


def throughput(
    quiet: Quiet, conn: blindai.Connection, name: str, path: str, feeds, seconds_per: float
) -> None:
    """Requests/s at 1, 4 and 16 clients: one shared session against the server."""
    session = reference_session(path)
    model_id = conn.upload_model(path, model_name=f"bench-{name}").model_id
    t0 = time.perf_counter()
    session.run(None, feeds)
    one = time.perf_counter() - t0
    count = max(8, int(seconds_per / max(one, 1e-4)))
    for i, clients in enumerate((1, 4, 16)):
        c = max(count, 2 * clients)
        pair = paired(
            quiet,
            lambda c=c, clients=clients: run_clients(lambda: session.run(None, feeds), clients, c),
            lambda c=c, clients=clients: run_clients(
                lambda: conn.run_model(model_id, input_tensors=feeds), clients, c, server=SERVER[0]
            ),
            flip=bool(i % 2),
        )
        print(ratio_line(f"{name} {clients:>2} client(s)", pair, throughput=True))
    conn.delete_model(model_id)


def batch16(quiet: Quiet, conn: blindai.Connection, name: str, path: str, model) -> None:
    """One request of batch 16 against 16 concurrent requests of batch 1 (wall time for 16)."""
    session = reference_session(path)
    model_id = conn.upload_model(path, model_name=f"bench-{name}").model_id
    big = model.batch(16)
    one = model.feeds

    def ref_batch() -> Sample:
        return run_clients(lambda: session.run(None, big), 1, 3)

    def ref_singles() -> Sample:
        return run_clients(lambda: session.run(None, one), 16, 48)

    def srv_batch() -> Sample:
        return run_clients(
            lambda: conn.run_model(model_id, input_tensors=big), 1, 3, server=SERVER[0]
        )

    def srv_singles() -> Sample:
        return run_clients(
            lambda: conn.run_model(model_id, input_tensors=one), 16, 48, server=SERVER[0]
        )

    for label, ref, got in (
        ("in-process", ref_singles, ref_batch),
        ("server", srv_singles, srv_batch),
    ):
        pair = paired(quiet, ref, got, flip=False)
        singles_rows = pair.ref.per_s
        batch_rows = pair.got.per_s * 16
        print(
            f"  {name} {label:<11} 16 x batch 1: {singles_rows:7.1f} rows/s, 1 x batch 16: "
            f"{batch_rows:7.1f} rows/s  batch/singles {batch_rows / singles_rows:5.2f}x"
            f"   (other processes {pair.foreign:.0%} of a core)"
        )
    conn.delete_model(model_id)


def payload(quiet: Quiet, conn: blindai.Connection, shape: list[int], n: int) -> None:
    """A model that does no compute: what moving the input and output costs."""
    model = identity_model(shape)
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    session = reference_session(model)
    model_id = conn.upload_model(model, model_name="bench-identity").model_id
    feeds = {"x": x}
    for _ in range(20):
        session.run(None, feeds), conn.run_model(model_id, input_tensors=feeds)
    pair = paired(
        quiet,
        lambda: run_clients(lambda: session.run(None, feeds), 1, n),
        lambda: run_clients(
            lambda: conn.run_model(model_id, input_tensors=feeds), 1, n, server=SERVER[0]
        ),
        flip=False,
    )
    print(ratio_line(f"identity, {x.nbytes / 1024:.0f} KiB in and out", pair))
    conn.delete_model(model_id)


def v2_routes(
    quiet: Quiet, server: ServerProcess, conn: blindai.Connection, name: str, path: str, feeds
) -> None:
    """v2 JSON and v2 binary against CBOR /run, throughput at 16 clients."""
    model_id = conn.upload_model(path, model_name=f"bench-{name}").model_id
    want = conn.run_model(model_id, input_tensors=feeds).output[0].as_numpy()
    session = reference_session(path)
    t0 = time.perf_counter()
    session.run(None, feeds)
    count = max(32, int(4.0 / max(time.perf_counter() - t0, 1e-4)))

    def cbor() -> Sample:
        return run_clients(
            lambda: conn.run_model(model_id, input_tensors=feeds), 16, count, server=SERVER[0]
        )

    for binary in (False, True):
        client = V2Client(server, conn.certificate, model_id, binary)
        np.testing.assert_allclose(client.infer(feeds)[0], want, rtol=1e-5, atol=1e-5)

        def v2(client: V2Client = client) -> Sample:
            return run_clients(lambda: client.infer(feeds), 16, count, server=SERVER[0])

        pair = paired(quiet, cbor, v2, flip=binary)
        label = f"{name} v2 {'binary' if binary else 'JSON'} vs CBOR, 16 clients"
        print(ratio_line(label, pair, throughput=True))
        client.close()
    conn.delete_model(model_id)


def _child_json(*args: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"{args[0]} failed:\n{out.stderr[-2000:]}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def upload(size_mb: int) -> None:
    """Upload a large model: MB/s and peak RSS of both sides against onnxruntime's own."""
    path = big_model(size_mb * 10**6, CACHE / f"big-{size_mb}mb.onnx")
    size = path.stat().st_size
    ort_path = _child_json("--ort-load", str(path))
    ort_bytes = _child_json("--ort-load-bytes", str(path))
    with simulation_server("--log-level", "warning") as server:
        before, _ = rss(server.process.pid)
        client = _child_json(
            "--upload-client",
            server.host,
            json.dumps(server.ports),
            str(path),
        )
        _, server_peak = rss(server.process.pid)
    print(
        f"  {size / 1e6:.0f} MB model: {size / 1e6 / client['seconds']:.0f} MB/s "
        f"({client['seconds']:.2f} s from the call to the reply)"
    )
    grow = (server_peak - before) / size
    print(
        f"  server peak RSS: +{grow:.2f}x the model over its RSS before the upload, plus the "
        f"model's bytes in a memory file (1.00x, kept to load the model again; not in RSS): "
        f"{grow + 1:.2f}x in all"
    )
    print(
        f"  onnxruntime alone: +{ort_path['peak'] / size:.2f}x loading from a file, "
        f"+{ort_bytes['peak'] / size:.2f}x from a bytes object (with the bytes); target: the "
        "server <= onnxruntime's own + 0.5x"
    )
    print(f"  client peak: +{client['peak'] / size:.2f}x the model (target <= 1.2x)")


def _ort_load(path: str, from_bytes: bool) -> None:
    from blindai.server.runtime import session_options

    data = Path(path).read_bytes() if from_bytes else None
    before, _ = rss()
    source: str | bytes = data if data is not None else path
    ort.InferenceSession(source, session_options(optimize=True), providers=["CPUExecutionProvider"])
    _, peak = rss()
    extra = len(data) if data is not None else 0  # the bytes held before: part of the cost
    print(json.dumps({"peak": peak - before + extra}))


def _upload_client(host: str, ports: str, path: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", blindai.SimulationModeWarning)
        conn = blindai.connect(host, simulation_mode=True, **json.loads(ports))
    before, _ = rss()
    t0 = time.perf_counter()
    conn.upload_model(path, model_name="big")
    seconds = time.perf_counter() - t0
    _, peak = rss()
    print(json.dumps({"seconds": seconds, "peak": peak - before}))


def main() -> int:
    """Run every section; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test: few requests")
    parser.add_argument("--upload-mb", type=int, default=500)
    args = parser.parse_args()
    # said once here: every new connection (16 client threads) would warn again
    warnings.simplefilter("ignore", blindai.SimulationModeWarning)
    cores = len(os.sched_getaffinity(0))
    print(
        "\nReal models: in-process onnxruntime (the server's session options) vs blindai "
        "serve --simulation"
    )
    print(f"onnxruntime {ort.__version__}; {load_line()}")
    # this process runs both the clients and the in-process sessions: both keep freed memory
    # for reuse, as the server does (docs/performance.md, "Copies of tensor bytes")
    kept = blindai.keep_freed_memory(64 << 20)
    print(f"this process keeps 64 MiB of freed memory for reuse (mallopt): {kept}")
    if os.getloadavg()[0] > BUSY_LOAD * cores:
        print(
            f"WARNING: this machine is busy (1-minute load above {BUSY_LOAD} per core): other "
            "processes take CPU from both sides; pairs are measured again when disturbed, but "
            "ratios are only trustworthy from a quiet run"
        )
    n = 16 if args.quick else 80
    seconds = 1.0 if args.quick else 4.0
    models = [real_model("distilbert"), real_model("resnet18")]
    with simulation_server("--log-level", "warning") as server:
        quiet = Quiet(server_pid=server.process.pid)
        SERVER[0] = server.process.pid
        with connect(server) as conn:
            section("p50/p90 latency at batch 1, sequential: in-process | server")
            for m in models:
                latency(quiet, conn, m.name, str(m.path), m.feeds, n)
            section("payload: a model that does no compute, in-process | server")
            for shape in ([1, 512], [1, 3, 224, 224]):
                payload(quiet, conn, shape, 4 * n)
            section("throughput: in-process (one session, N threads) | server (N clients)")
            for m in models:
                throughput(quiet, conn, m.name, str(m.path), m.feeds, seconds)
            section("one request of batch 16 vs 16 concurrent requests of batch 1")
            for m in models:
                batch16(quiet, conn, m.name, str(m.path), m)
            section("v2 protocol vs 0.6 CBOR /run, same server (CBOR | v2)")
            for m in models:
                v2_routes(quiet, server, conn, m.name, str(m.path), m.feeds)
    section("upload")
    upload(50 if args.quick else args.upload_mb)
    print(f"\nquietness: {quiet.summary()}; {load_line()}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--ort-load":
        _ort_load(sys.argv[2], from_bytes=False)
    elif len(sys.argv) > 1 and sys.argv[1] == "--ort-load-bytes":
        _ort_load(sys.argv[2], from_bytes=True)
    elif len(sys.argv) > 1 and sys.argv[1] == "--upload-client":
        _upload_client(*sys.argv[2:5])
    else:
        sys.exit(main())
