"""BlindAI end to end in under a minute: train, convert, serve, attest, upload, predict, delete.

Run with ``make demo`` (or ``python scripts/demo.py``). Everything is local: scikit-learn's
bundled breast-cancer data set (no download), a ``blindai serve --simulation`` process on free
loopback ports, and the client over TLS. Simulation mode protects nothing: there is no TEE.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np
from _serverproc import ServerProcess, simulation_server

import blindai
from blindai.errors import BlindAIError

_BANNER_LINES = [
    "SIMULATION MODE: THIS PROTECTS NOTHING.",
    "There is no TEE here. The server's evidence is made up by the server",
    "itself and vouched for by nobody: whoever runs the server sees every",
    "model and every input. Never send real data to a --simulation server.",
]
BANNER = "\n".join(["=" * 77, *(f" !! {line:<71}!!" for line in _BANNER_LINES), "=" * 77])

SHOWN_ROWS = 8


@dataclass(frozen=True)
class Trained:
    """The fitted pipeline, its ONNX bytes and the held-out split."""

    onnx_model: bytes
    input_name: str
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    n_train: int


def step(n: int, text: str) -> None:
    """Print one numbered step."""
    print(f"\n[{n}/6] {text}", flush=True)


def train_and_convert() -> Trained:
    """Fit StandardScaler + LogisticRegression, then convert with probabilities as a tensor."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer()
    x = data.data.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, data.target, test_size=0.25, random_state=0, stratify=data.target
    )
    clf = LogisticRegression(max_iter=1000)
    pipe = make_pipeline(StandardScaler(), clf).fit(x_train, y_train)
    print(
        f"      {x.shape[0]} samples, {x.shape[1]} features; "
        f"{len(x_train)} to train, {len(x_test)} held out"
    )
    onx = convert_sklearn(
        pipe,
        initial_types=[("input", FloatTensorType([None, x.shape[1]]))],
        options={id(clf): {"zipmap": False}},  # probabilities as a plain float tensor
    )
    return Trained(
        onx.SerializeToString(),
        "input",
        x_test,
        np.asarray(y_test),
        [str(n) for n in data.target_names],
        len(x_train),
    )


def local_reference(model: bytes, input_name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    """The same model run by onnxruntime in this process, keyed by output name."""
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {input_name: x}), strict=True))


def connect(server: ServerProcess) -> blindai.Connection:
    """Connect in simulation mode, turning the client's warning into our loud banner."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", blindai.SimulationModeWarning)
        conn = blindai.connect(
            server.host,
            unattested_server_port=server.unattested_port,
            attested_server_port=server.attested_port,
            model_management_port=server.management_port,
            simulation_mode=True,
        )
    total = time.perf_counter() - start
    print(
        f"      evidence kind: {conn.claims.kind.value} (made up by the server; checked for "
        "form and TLS binding only)"
    )
    print(
        f"      connect {total * 1000:.1f} ms, of which fetching and checking evidence "
        f"{conn.attestation_seconds * 1000:.1f} ms"
    )
    return conn


def show_predictions(t: Trained, labels: np.ndarray, probs: np.ndarray) -> None:
    """A few rows: truth beside prediction."""
    print(f"      {'row':>4}  {'truth':<10} {'predicted':<10} {'P(predicted)':>12}")
    for i in range(min(SHOWN_ROWS, len(labels))):
        truth, pred = t.class_names[t.y_test[i]], t.class_names[labels[i]]
        mark = "" if labels[i] == t.y_test[i] else "   <- wrong"
        print(f"      {i:>4}  {truth:<10} {pred:<10} {probs[i, labels[i]]:>12.3f}{mark}")


def run(server: ServerProcess, t: Trained) -> int:
    """Steps 4 to 6 against a running server; returns the exit status."""
    step(4, "Connecting: fetch the server's certificate and evidence, then pin the TLS key")
    with connect(server) as conn:
        step(5, "Uploading the model over the attested TLS channel")
        reply = conn.upload_model(t.onnx_model, model_name="breast-cancer")
        print(f"      model_id {reply.model_id}\n      sha256   {reply.hash.hex()}")
        try:
            step(6, f"Predicting the {len(t.x_test)} held-out rows in one batch")
            start = time.perf_counter()
            out = conn.predict(reply.model_id, {t.input_name: t.x_test})
            print(f"      one round trip: {(time.perf_counter() - start) * 1000:.1f} ms")
            return report(t, out)
        finally:
            conn.delete_model(reply.model_id)
            print(f"\n      deleted model {reply.model_id}")


def report(t: Trained, out: dict[str, np.ndarray]) -> int:
    """Print predictions, accuracy and the in-process comparison; 0 if everything agrees."""
    labels, probs = out["label"].astype(np.int64).ravel(), out["probabilities"]
    show_predictions(t, labels, probs)
    correct = int((labels == t.y_test).sum())
    print(
        f"\n      Accuracy on the held-out rows: {correct / len(labels):.4f} "
        f"({correct}/{len(labels)})"
    )
    ref = local_reference(t.onnx_model, t.input_name, t.x_test)
    same = int((ref["label"].ravel() == labels).sum())
    diff = float(np.abs(ref["probabilities"] - probs).max())
    verdict = "yes" if same == len(labels) else "NO"
    print(
        f"      onnxruntime in this process gives the same labels: {verdict} "
        f"({same}/{len(labels)}; largest probability difference {diff:.2e})"
    )
    return 0 if same == len(labels) else 1


def main() -> int:
    """Run the demo; returns the exit status."""
    logging.getLogger("blindai").setLevel(logging.ERROR)  # the banner says it once, loudly
    began = time.perf_counter()
    print(BANNER)
    step(1, "Training StandardScaler + LogisticRegression on the breast-cancer data set")
    t = train_and_convert()
    step(2, "Converting to ONNX with skl2onnx (float32 input, probabilities as a tensor)")
    print(
        f"      {len(t.onnx_model)} bytes; input '{t.input_name}' float32 [N, "
        f"{t.x_test.shape[1]}]; outputs 'label', 'probabilities'"
    )
    step(3, "Starting `blindai serve --simulation` on free loopback ports")
    try:
        with simulation_server() as server:
            print(
                f"      {server.host}: unattested {server.unattested_port}, attested "
                f"{server.attested_port}, management {server.management_port}"
            )
            status = run(server, t)
        print("      server stopped")
    except BlindAIError as exc:
        print(f"\ndemo failed: {exc.diagnostics()}", file=sys.stderr)
        return 1
    except RuntimeError as exc:  # the server did not start
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        return 1
    print(
        f"\nDone in {time.perf_counter() - began:.1f} s. Reminder: simulation mode protects "
        "nothing; on real hardware, connect with a policy (see README, Attestation)."
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
