"""Per-request cost of the tiny model, this checkout against another, in interleaved rounds.

Each round starts, for each checkout in turn (the order alternating), a child process with
that checkout's ``src`` first on its path; the child starts that checkout's ``blindai serve
--simulation`` and times ``run_model`` on a dense 16->4 model with that checkout's client. The
p50 of every round is printed with the load average, then the median of the rounds' p50s.

Usage: python scripts/bench_compare.py OTHER_SRC [--rounds 6] [--requests 400] [--model NAME]
(e.g. ``git archive main src | tar -x -C /tmp/main`` then ``OTHER_SRC=/tmp/main/src``).
``--model resnet18`` (or ``distilbert``) times that real model instead, with ``make bench``'s
export (``.bench-models/``) and inputs (``scripts/_realmodels.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OURS = HERE.parent / "src"


def child(requests: int, model: str | None = None) -> None:
    """In a child: this checkout's server and client, the tiny model's (or the real model
    ``model``'s) p50 in ms."""
    import warnings

    import numpy as np

    sys.path.insert(0, str(HERE))
    import _serverproc
    from bench import mlp

    # the server runs this child's checkout too (the helper puts its REPO/src first)
    _serverproc.REPO = Path(os.environ.get("SERVER_SRC") or os.environ["PYTHONPATH"]).parent

    import blindai

    if model:
        from _realmodels import real_model

        real = real_model(model)  # make bench's export and inputs
        onnx_bytes, feeds = real.path.read_bytes(), real.feeds
    else:
        m = mlp("dense 16->4", [16, 4])
        onnx_bytes, feeds = m.onnx_bytes, {"x": m.x}
    with _serverproc.simulation_server("--log-level", "warning") as server:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            conn = blindai.connect(server.host, simulation_mode=True, **server.ports)
        model_id = conn.upload_model(onnx_bytes).model_id
        for _ in range(10 if model else 50):
            conn.run_model(model_id, input_tensors=feeds)
        from _benchkit import _process_cpu

        times = []
        cpu0 = time.process_time() + _process_cpu(server.process.pid)
        for _ in range(requests):
            t0 = time.perf_counter()
            conn.run_model(model_id, input_tensors=feeds)
            times.append(time.perf_counter() - t0)
        cpu = time.process_time() + _process_cpu(server.process.pid) - cpu0
        conn.close()
    print(
        json.dumps(
            {
                "p50": float(np.median(times)) * 1e3,
                "cpu": cpu / requests * 1e3,
                "module": blindai.__file__,
            }
        )
    )


def one(src: Path, requests: int, side: str, model: str | None = None) -> tuple[float, float]:
    """``side``: which part runs ``src`` (both, the server only, or the client only); the
    other part runs this checkout."""
    client = src if side in ("both", "client") else OURS
    server = src if side in ("both", "server") else OURS
    env = dict(os.environ, PYTHONPATH=str(client), SERVER_SRC=str(server.resolve()))
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(requests), *([model] if model else [])],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode:
        raise RuntimeError(f"the child for {src} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["module"].startswith(str(client)):
        raise RuntimeError(f"the child imported {result['module']}, not {client}")
    return float(result["p50"]), float(result["cpu"])


def main() -> None:
    """Interleaved rounds; prints each round and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="the other checkout's src folder")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument(
        "--side",
        choices=["both", "server", "client"],
        default="both",
        help="what differs: both sides, or only the server (or client) runs OTHER_SRC",
    )
    parser.add_argument(
        "--model", choices=["distilbert", "resnet18"], help="a real model instead of the tiny one"
    )
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"this": [], "other": []}
    for r in range(args.rounds):
        order = [("this", OURS), ("other", args.other.resolve())]
        for label, src in order if r % 2 == 0 else order[::-1]:
            results[label].append(one(src, args.requests, args.side, args.model))
        load = os.getloadavg()[0]
        (tp, tc), (op, oc) = results["this"][-1], results["other"][-1]
        print(
            f"round {r + 1}: p50 this {tp:.3f} ms, other {op:.3f} ms; CPU (client + server) "
            f"a request: this {tc:.3f} ms, other {oc:.3f} ms (load {load:.2f})",
            flush=True,
        )
    for i, what in ((0, "p50"), (1, "CPU a request")):
        this = sorted(x[i] for x in results["this"])[len(results["this"]) // 2]
        other = sorted(x[i] for x in results["other"])[len(results["other"]) // 2]
        print(f"median {what}: this {this:.3f} ms, other {other:.3f} ms, ratio {this / other:.3f}")


if __name__ == "__main__":
    if len(sys.argv) in (3, 4) and sys.argv[1] == "--child":
        child(int(sys.argv[2]), sys.argv[3] if len(sys.argv) == 4 else None)
    else:
        main()
