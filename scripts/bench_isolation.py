"""What ``--run-isolation process`` costs a request: p50 through a real server, isolated or not.

Two simulation servers (``--run-isolation none`` and ``process``, the same flags otherwise) serve
a tiny model (Identity of 1x3 float32) and a model that does no compute on a 588 KiB input
(Identity of 1x3x224x224 float32: the request's bytes go to the host and back). Rounds alternate
between the servers; each round's p50 is taken, and the median of the rounds reported, with the
machine's load average before and after.

Run: ``.venv/bin/python scripts/bench_isolation.py [--rounds 5] [--requests 300]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import blindai
from scripts._serverproc import simulation_server


def identity(shape: list[int]) -> bytes:
    """y = Identity(x), float32 of ``shape``."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


CASES = {"tiny (1x3)": [1, 3], "588 KiB (1x3x224x224)": [1, 3, 224, 224]}


def p50_ms(conn: blindai.Connection, model_id: str, x: np.ndarray, n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        conn.predict(model_id, {"x": x})
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    warnings.simplefilter("ignore", blindai.SimulationModeWarning)
    load_before = os.getloadavg()
    results: dict[tuple[str, str], list[float]] = {}
    with (
        simulation_server("--run-isolation", "none") as plain,
        simulation_server("--run-isolation", "process") as isolated,
    ):
        conns, models = {}, {}
        for mode, server in (("none", plain), ("process", isolated)):
            conns[mode] = blindai.connect(server.host, simulation_mode=True, **server.ports)
            for case, shape in CASES.items():
                models[mode, case] = conns[mode].upload_model(identity(shape)).model_id
        rng = np.random.default_rng(0)
        inputs = {
            case: rng.standard_normal(shape).astype(np.float32) for case, shape in CASES.items()
        }
        for mode in conns:  # warm up (the tiny model qualifies for the event loop in-process)
            for case in CASES:
                p50_ms(conns[mode], models[mode, case], inputs[case], 50)
        for _ in range(args.rounds):
            for case in CASES:
                for mode in conns:
                    took = p50_ms(conns[mode], models[mode, case], inputs[case], args.requests)
                    results.setdefault((mode, case), []).append(took)
        for conn in conns.values():
            conn.close()
    load_after = os.getloadavg()
    print(
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
        f"{os.cpu_count()} CPUs"
    )
    print("| input | p50 in-process (none) | p50 isolated (process) | difference |")
    print("|---|---|---|---|")
    for case in CASES:
        none = statistics.median(results["none", case])
        isolated_p50 = statistics.median(results["process", case])
        print(
            f"| {case} | {none:.3f} ms | {isolated_p50:.3f} ms | +{isolated_p50 - none:.3f} ms "
            f"({isolated_p50 / none:.2f}x) |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
