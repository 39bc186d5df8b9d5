"""CPU time of the v2 codec's stages, this checkout against another, in alternating processes.

Each round runs, for each checkout in turn (the order alternating), a child process with that
checkout's ``src`` first on its path; the child times ``parse_request`` (JSON decode and every
check, into numpy arrays) on request bodies of several shapes and ``encode_response`` on a
ResNet18-sized reply (1000 floats), as CPU time a call (``time.process_time``), with the
server's malloc setting (``keep_freed_memory``). Printed: the medians over the rounds with
their spread, the paired difference, and the load average: on a shared machine wall time
swings, CPU time a call less.

Usage: python scripts/bench_v2_json.py OTHER_SRC [--rounds 6]
(e.g. ``git archive main src | tar -x -C /tmp/main`` then ``OTHER_SRC=/tmp/main/src``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

OURS = Path(__file__).resolve().parents[1] / "src"


def _body(datatype: str, array: np.ndarray, *, python_json: bool = False) -> bytes:
    """A v2 JSON request of one input; ``python_json``: as Python's json writes floats (17
    digits for a float32 widened to float64, as tritonclient sends them), else orjson's."""
    import orjson

    tensor = {"name": "input", "datatype": datatype, "shape": list(array.shape)}
    if python_json:
        doc = {"inputs": [{**tensor, "data": array.reshape(-1).tolist()}]}
        return json.dumps(doc).encode()
    doc = {"inputs": [{**tensor, "data": array.reshape(-1)}]}
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


def _cpu_ms(call: Callable[[], object], count: int) -> float:
    for _ in range(max(3, count // 10)):
        call()
    start = time.process_time()
    for _ in range(count):
        call()
    return (time.process_time() - start) / count * 1e3


def child() -> None:
    """In a child: this checkout's codec; one JSON line of milliseconds a call."""
    import blindai
    from blindai.server.protocols.v2.codec import encode_response, parse_request

    blindai.keep_freed_memory(64 << 20)
    rng = np.random.default_rng(0)
    image = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    cases = {
        "FP32 1x3x224x224 (orjson text)": (_body("FP32", image), 30),
        "FP32 1x3x224x224 (Python json text)": (_body("FP32", image, python_json=True), 20),
        "UINT8 1x3x224x224": (_body("UINT8", rng.integers(0, 256, image.shape, np.uint8)), 20),
        "INT64 1x512": (_body("INT64", rng.integers(0, 30000, (1, 512))), 2000),
        "FP32 1x16 (tiny)": (_body("FP32", rng.standard_normal((1, 16)).astype(np.float32)), 20000),
    }
    found: dict[str, object] = {"module": blindai.__file__}
    for name, (body, count) in cases.items():
        found[f"decode {name} ({len(body) / 1e6:.2f} MB)"] = _cpu_ms(
            lambda body=body: parse_request(body, None), count
        )
    request = parse_request(cases["FP32 1x16 (tiny)"][0], None)
    reply = [("output", rng.standard_normal((1, 1000)).astype(np.float32))]
    found["encode FP32 1x1000"] = _cpu_ms(
        lambda: encode_response(request, reply, model_name="m", model_version="1"), 3000
    )
    print(json.dumps(found))


def _run(src: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child"],
        env=dict(os.environ, PYTHONPATH=str(src)),
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode:
        raise RuntimeError(f"the child for {src} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not str(result.pop("module")).startswith(str(src)):
        raise RuntimeError(f"the child did not import {src}")
    return {k: float(v) for k, v in result.items()}


def main() -> None:
    """Alternating rounds; prints the medians, their spread and the paired differences."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="the other checkout's src folder")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"this": [], "other": []}
    loads = []
    for r in range(args.rounds):
        order = [("this", OURS), ("other", args.other.resolve())]
        for label, src in order if r % 2 == 0 else order[::-1]:
            runs[label].append(_run(src))
        loads.append(os.getloadavg()[0])
        print(f"round {r + 1} of {args.rounds} (load {loads[-1]:.2f})", flush=True)
    print(f"CPU a call in ms, median [min-max] of {args.rounds} rounds; load {min(loads):.1f}-"
          f"{max(loads):.1f}")  # fmt: skip
    for name in runs["this"][0]:
        this = np.array([run[name] for run in runs["this"]])
        other = np.array([run[name] for run in runs["other"]])
        diff = this - other
        print(
            f"{name}: other {np.median(other):.4f} [{other.min():.4f}-{other.max():.4f}], "
            f"this {np.median(this):.4f} [{this.min():.4f}-{this.max():.4f}]; paired "
            f"{np.median(diff):+.4f} (IQR {np.percentile(diff, 25):+.4f} to "
            f"{np.percentile(diff, 75):+.4f})"
        )


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        child()
    else:
        main()
