"""What per-connection attestation costs a request, and what verifying evidence costs a client.

Run with ``make bench`` (or ``python scripts/bench_attestation.py [--quick]``).

1. Against ``blindai serve --simulation`` on loopback, the tiny model's ``/run`` through:

   - ``pinned``: the transport trusting one certificate given in advance (TLS verification of
     that certificate; what a client pinning a known replica pays);
   - ``attested``: every new connection admitted by the gate, its certificate found in the
     attestation cache (a replica seen before): the requirement is that this adds under 1 ms
     a request;

   with keep-alive on (one TLS connection for all requests) and off (a new TCP and TLS
   connection per request, as behind a load balancer), in interleaved rounds.

2. A new connection whose certificate is not cached: ``GET /attestation`` on it and the
   verification of simulated evidence, without and with a fresh nonce (``connect(nonce=True)``,
   which makes the server produce new evidence for each connection). ``--host H --policy
   FILE`` measures this against a running server instead, e.g. one in a TEE, where the fresh
   row then includes what the TEE takes to produce a quote or report.

3. Verifying real evidence on this client, per platform (the published evidence sets in
   ``tests/data/evidence``, at the time their collateral was valid):
   what a client pays once per replica (or per connection with ``nonce=True``). What the TEE
   pays to *produce* fresh evidence cannot be measured without the hardware: see
   docs/scale-out.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "src")]

import numpy as np  # noqa: E402

import blindai  # noqa: E402
from blindai.attestation.policy import Policy  # noqa: E402
from blindai.attestation.simulation import SimulationModeWarning  # noqa: E402
from blindai.client._peers import AttestationCache, PeerGate, VerifyOptions  # noqa: E402
from blindai.client._tensors import to_wire_tensors  # noqa: E402
from blindai.client._transport import AttestedTlsTransport, PinnedTlsTransport  # noqa: E402
from blindai.protocol import codec  # noqa: E402
from scripts._serverproc import simulation_server  # noqa: E402

ROUNDS = 10


def _ms(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values)
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def interleaved(fns: dict[str, Callable[[], object]], n: int) -> dict[str, list[float]]:
    """Time each function ``n`` times in ``ROUNDS`` rounds, alternating their order."""
    for fn in fns.values():
        for _ in range(10):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(ROUNDS):
        for name in names if r % 2 == 0 else names[::-1]:
            for _ in range(max(1, n // ROUNDS)):
                t0 = time.perf_counter_ns()
                fns[name]()
                times[name].append((time.perf_counter_ns() - t0) / 1e6)
    return times


def per_request(server: object, conn: blindai.Connection, n: int) -> None:
    """Section 1: pinned against attested-from-cache, keep-alive on and off."""
    host, port = server.host, server.attested_port  # type: ignore[attr-defined]
    model = _tiny()
    model_id = conn.upload_model(model, model_name="bench-attestation").model_id
    x = np.ones((1, 4), np.float32)
    body = codec.dumps(
        {
            "model_id": model_id,
            "model_hash": "",
            "inputs": [codec.encode_tensor(t) for t in to_wire_tensors({"x": x})],
        }
    )
    options = VerifyOptions(simulation_mode=True, policy=None)
    print("\n1. /run of a tiny model, milliseconds (p50, p99); attested = certificate cached")
    print(f"   {'keep-alive':<12}{'pinned':>18}{'attested':>18}{'attested - pinned':>22}")
    for keep_alive in (True, False):
        gate = PeerGate(options)
        pinned = PinnedTlsTransport(host, port, conn.certificate, 30.0, keep_alive=keep_alive)
        attested = AttestedTlsTransport(host, port, 30.0, gate=gate, keep_alive=keep_alive)
        attested.open()  # the one verification; every later connection: from the cache
        try:
            times = interleaved(
                {
                    "pinned": lambda t=pinned: t.request("POST", "/run", body),
                    "attested": lambda t=attested: t.request("POST", "/run", body),
                },
                n,
            )
        finally:
            pinned.close()
            attested.close()
        p, a = _ms(times["pinned"]), _ms(times["attested"])
        label = "on" if keep_alive else "off"
        print(
            f"   {label:<12}{p[0]:8.3f} {p[1]:8.3f} {a[0]:8.3f} {a[1]:8.3f}"
            f"{(a[0] - p[0]) * 1000:+14.0f} us at p50"
        )
        stats = gate.stats
        print(
            f"   {'':<12}(gate: {stats.verified} verified, {stats.reused} admitted from the "
            f"cache, {stats.refused} refused)"
        )
    conn.delete_model(model_id)


def per_new_replica(host: str, port: int, n: int, policy: Policy | None = None) -> None:
    """Section 2: a new connection whose certificate must be verified (cache cleared).

    Against a simulation server, or (``policy``) a real one: then the fresh row includes what
    its TEE takes to produce evidence for each nonce (start that server with a
    ``--fresh-evidence-per-second`` above what the row asks: at its default, 10, the eleventh
    report within a second is answered 503)."""
    options = VerifyOptions(simulation_mode=policy is None, policy=policy)
    print("\n2. opening a connection to an unseen replica (TCP + TLS + GET /attestation + verify)")
    print(f"   {'evidence':<34}{'p50 ms':>9}{'p99 ms':>9}")
    for fresh in (False, True):
        cache = AttestationCache()
        gate = PeerGate(options, cache=cache, nonce=fresh)

        def one(gate: PeerGate = gate, cache: AttestationCache = cache) -> None:
            cache.clear()
            t = AttestedTlsTransport(host, port, 30.0, gate=gate)
            try:
                t.open()
            finally:
                t.close()

        times = interleaved({"x": one}, n)["x"]
        p50, p99 = _ms(times)
        label = "fresh, over a nonce (nonce=True)" if fresh else "cached by the server (60 s)"
        print(f"   {label:<34}{p50:9.3f}{p99:9.3f}")


def per_platform(n: int) -> None:
    """Section 3: client-side verification of real evidence, one set per platform."""
    from scripts._verify_sets import real_sets

    print("\n3. verifying real evidence on this client (no network), milliseconds")
    print(f"   {'platform':<10}{'evidence set':<32}{'p50':>9}{'p99':>9}")
    for platform, name, verify in real_sets():
        times = []
        for _ in range(max(5, n // 10)):
            t0 = time.perf_counter_ns()
            verify()
            times.append((time.perf_counter_ns() - t0) / 1e6)
        p50, p99 = _ms(times)
        print(f"   {platform:<10}{name:<32}{p50:9.3f}{p99:9.3f}")


def _tiny() -> bytes:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def main() -> int:
    """Run the three sections; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke test)")
    parser.add_argument(
        "--host",
        help="measure section 2 against this running server instead (with --policy), e.g. on "
        "a TEE: its fresh row then includes producing evidence for each nonce",
    )
    parser.add_argument("--attested-port", type=int, default=9924)
    parser.add_argument("--policy", type=Path, help="the TOML policy for --host")
    args = parser.parse_args()
    n = 100 if args.quick else 1000
    began = time.perf_counter()
    if args.host is not None:
        if args.policy is None:
            parser.error("--host needs --policy")
        print(f"Per-connection attestation of {args.host}:{args.attested_port}")
        per_new_replica(
            args.host, args.attested_port, max(20, n // 20), Policy.from_file(args.policy)
        )
        per_platform(n)
        return 0
    print("Per-connection attestation (simulation mode: no TEE; see docs/scale-out.md)")
    logging.getLogger("blindai.attestation.simulation").setLevel(logging.ERROR)  # said above
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SimulationModeWarning)
        # the fresh row asks for a report per connection, back to back: well past the
        # server's default --fresh-evidence-per-second (10), which would answer 503
        with simulation_server(
            "--log-level", "warning", "--fresh-evidence-per-second", "100000"
        ) as server:
            conn = blindai.connect(server.host, simulation_mode=True, **server.ports)
            with conn:
                per_request(server, conn, n)
            per_new_replica(server.host, server.attested_port, max(50, n // 5))
    per_platform(n)
    print(f"\n(total {time.perf_counter() - began:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
