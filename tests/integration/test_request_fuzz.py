"""A seeded mutation fuzzer over every request the server parses, against a real server.

Real, valid requests of each kind (0.6 ``/run`` with tensors and with a raw image, text or
WAV for pipeline models, ``/upload`` with and without a pipeline, ``/delete``; v2 REST
inference as JSON and with the binary extension, v2 model repository load, unload and index;
gRPC ``ModelInfer`` and repository calls) are mutated (``tests.integration._mutate``: bytes,
decoded values, framing headers) and sent to a ``blindai serve --simulation`` on loopback,
each on a new attested TLS connection.

What must hold for every case (``tests.integration._fuzzcases.judge``): a 4xx with a readable
message (or a documented 503/504; 501 for a transfer coding), or a success whose result is
right for the input as sent; never a 500, never a gRPC INTERNAL or UNKNOWN, never a dropped
connection where HTTP allows an answer, never more than :data:`CASE_SECONDS`; a request that
is ambiguous (a framing header repeated, a content or transfer coding declared that no route
undoes) is refused, never served. After the batch, the server still serves a checking client
correctly, and its log holds neither the planted marker (``MARKER``, in text inputs, ids,
strings and unknown keys) nor a Python traceback nor an unexpected failure.

The default run makes :data:`DEFAULT_CASES` cases from :data:`DEFAULT_SEED`; the ``slow`` one
:data:`SLOW_CASES`. ``BLINDAI_FUZZ_SEED`` and ``BLINDAI_FUZZ_CASES`` set both, to replay a
failure (its seed and case number are in the failure's message). The defects it found are
regression tests at the end, one request each.
"""

from __future__ import annotations

import json
import os
import random
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import cbor2
import grpc
import numpy as np
import pytest
from google.protobuf import json_format
from onnx import TensorProto
from PIL import Image

import blindai
from blindai.pipeline import Pipeline
from blindai.server.protocols.grpc._generated import grpc_service_pb2 as pb
from tests import models
from tests._server import ServerProcess, start_server
from tests.integration import _fuzzcases as fc
from tests.integration._grpc_mutate import mutate_message
from tests.integration._mutate import MARKER, Mutator
from tests.integration._oip import attested_pem
from tests.integration._rawhttp import Reply, exchange, head, pinned_context
from tests.unit.pipeline._factory import encode, wav_bytes, wordpiece_json

DEFAULT_SEED = 20261202
DEFAULT_CASES = 500
"""Cases of the default run (about 11 s here, 17 s with the server's start-up)."""
SLOW_CASES = 6000
CASE_SECONDS = 5.0
"""The most one case may take, its answer read whole."""
BODY_TIMEOUT = 0.5
"""The server's --body-timeout: a body declared longer than sent is given up on after it."""

_GRPC = "/inference.GRPCInferenceService/"


@dataclass
class Target:
    """The server under test, and what the seeds need of it."""

    server: ServerProcess
    pem: str
    seeds: list[fc.Seed]
    channel: grpc.Channel


def _connect(server: ServerProcess) -> blindai.Connection:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", blindai.SimulationModeWarning)
        return blindai.connect(server.host, simulation_mode=True, **server.ports)


def _png() -> bytes:
    return encode(Image.new("RGB", (24, 20), (10, 20, 230)), "PNG")


def _upload_models(server: ServerProcess) -> None:
    labels = {"labels.txt": b"red\ngreen\nblue\n"}
    with _connect(server) as c:
        c.upload_model(models.identity(TensorProto.FLOAT), model_name="fz-f32")
        c.upload_model(models.identity(TensorProto.STRING, [None]), model_name="fz-str")
        c.upload_model(models.identity(TensorProto.FLOAT), model_name="fz-load")
        image = {"kind": "image", "resize": [16, 16]}
        output = {"kind": "labels", "labels": "labels.txt", "top_k": 2}
        pipe = Pipeline({"input": image, "output": output}, labels)
        c.upload_model(models.colour_classifier(16), model_name="fz-img", pipeline=pipe)
        text = {"kind": "text", "tokenizer": "tokenizer.json", "max_length": 8}
        pipe = Pipeline({"input": text}, {"tokenizer.json": wordpiece_json()})
        c.upload_model(models.token_embedder(30, dim=3), model_name="fz-text", pipeline=pipe)
        vocab = {"vocab.json": json.dumps({"<pad>": 0, "A": 1, "B": 2}).encode()}
        audio = {"kind": "audio", "sample_rate": 8000, "max_seconds": 1}
        pipe = Pipeline({"input": audio, "output": {"kind": "ctc", "vocab": "vocab.json"}}, vocab)
        c.upload_model(models.sign_ctc(), model_name="fz-wav", pipeline=pipe)
        for i in range(4):
            c.upload_model(models.identity(TensorProto.FLOAT), model_name=f"fz-del-{i}")


def _tensor(array: np.ndarray, name: str | None) -> dict[str, Any]:
    return {
        "info": {"fact": list(array.shape), "datum_type": 0, "node_name": name},
        "bytes_data": array.tobytes(),
    }


X = np.array([[1.5, -2.0, 3.25], [0.0, 1e-3, 7.0]], np.float32)
BIG = np.arange(1500 * 3, dtype=np.float32).reshape(1500, 3)
"""Over 16 KiB on the wire: decoded by the server's bounded CBOR decoder, not cbor2."""


def _v06_seeds() -> list[fc.Seed]:
    run = ("attested", "POST", "/run", ())
    wav = wav_bytes(np.concatenate([np.full(80, 0.5), np.zeros(40)]).astype(np.float32), 8000)
    model = models.identity(TensorProto.FLOAT)
    upload = {"length": len(model), "model_name": "fz-up", "optimize": True, "model": model}
    pipeline = Pipeline(
        {"input": {"kind": "image", "resize": [16, 16]}, "output": {"kind": "labels",
         "labels": "labels.txt", "top_k": 2}}, {"labels.txt": b"red\ngreen\nblue\n"},
    )  # fmt: skip
    colour = models.colour_classifier(16)
    piped = {
        "length": len(colour),
        "model_name": "fz-up-pipe",
        "optimize": True,
        "pipeline": pipeline.to_wire(),
        "model": colour,
    }
    ints = {**upload, "model": list(model), "client_info": {"platform": MARKER}}
    manage = ("management", "POST")
    return [
        fc.Seed(
            "v06-run", *run, {"model_id": "fz-f32", "model_hash": "", "inputs": [_tensor(X, "x")]},
            "cbor", check=fc.run_identity,
        ),
        fc.Seed(
            "v06-run-list", *run,
            {"model_id": "fz-f32", "model_hash": "", "inputs": [_tensor(X.reshape(-1), None)],
             "client_info": {"is_colab": False}},
            "cbor", check=fc.run_identity,
        ),
        fc.Seed(
            "v06-run-big", *run,
            {"model_id": "fz-f32", "model_hash": "", "inputs": [_tensor(BIG, "x")]},
            "cbor", check=fc.run_identity,
        ),
        fc.Seed(
            "v06-run-big-ints", *run,
            {"model_id": "fz-f32", "model_hash": "", "inputs": [
                {**_tensor(BIG, None), "bytes_data": list(BIG.tobytes())}]},
            "cbor", check=fc.run_identity,
        ),
        fc.Seed("v06-image", *run, {"model_id": "fz-img", "image": _png()}, "cbor",
                check=fc.classification),
        fc.Seed("v06-text", *run, {"model_id": "fz-text", "text": fc.text_marker()}, "cbor",
                check=fc.any_result),
        fc.Seed("v06-audio", *run, {"model_id": "fz-wav", "audio": wav}, "cbor",
                check=fc.any_result),
        fc.Seed("v06-upload", *manage, "/upload", (), upload, "cbor", check=fc.uploaded),
        fc.Seed("v06-upload-ints", *manage, "/upload", (), ints, "cbor", check=fc.uploaded),
        fc.Seed("v06-upload-pipeline", *manage, "/upload", (), piped, "cbor", check=fc.uploaded),
        *(
            fc.Seed(f"v06-delete-{i}", *manage, "/delete", (), {"model_id": f"fz-del-{i}"},
                    "cbor", check=fc.deleted)
            for i in range(4)
        ),
    ]  # fmt: skip


def _v2_seeds() -> list[fc.Seed]:
    infer = ("attested", "POST", "/v2/models/fz-f32/infer", (("Content-Type", "application/json"),))
    data = X.reshape(-1).tolist()
    json_doc = {
        "id": MARKER,
        "parameters": {"binary_data_output": False},
        "inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": data}],
        "outputs": [{"name": "y", "parameters": {"binary_data": False}}],
    }
    binary_doc = {
        "id": MARKER,
        "inputs": [
            {"name": "x", "shape": [2, 3], "datatype": "FP32",
             "parameters": {"binary_data_size": X.nbytes}}
        ],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
    }  # fmt: skip
    strings = [MARKER, "caf\u00e9", ""]
    str_doc = {
        "inputs": [{"name": "x", "shape": [3], "datatype": "BYTES", "data": strings}],
    }
    blob = b"".join(len(s.encode()).to_bytes(4, "little") + s.encode() for s in strings)
    str_binary = {
        "inputs": [{"name": "x", "shape": [3], "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(blob)}}],
        "parameters": {"binary_data_output": True},
    }  # fmt: skip
    classify = {
        "inputs": json_doc["inputs"],
        "outputs": [{"name": "y", "parameters": {"classification": 2}}],
    }
    png = _png()
    image_doc = {
        "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                    "parameters": {"binary_data_size": 4 + len(png)}}],
    }  # fmt: skip
    image_blob = len(png).to_bytes(4, "little") + png
    text_doc = {
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                    "data": [fc.text_marker()]}],
    }  # fmt: skip
    str_infer = ("attested", "POST", "/v2/models/fz-str/infer", ())
    repo = ("attested", "POST")
    return [
        fc.Seed("v2-json", *infer, json_doc, "json", check=fc.v2_identity),
        fc.Seed("v2-binary", *infer, binary_doc, "v2binary", (X.tobytes(),), fc.v2_identity),
        fc.Seed("v2-classify", *infer, classify, "json", check=fc.v2_any),
        fc.Seed(
            "v2-image", "attested", "POST", "/v2/models/fz-img/infer", (), image_doc,
            "v2binary", (image_blob,), fc.v2_any,
        ),
        fc.Seed(
            "v2-text", "attested", "POST", "/v2/models/fz-text/infer", (), text_doc, "json",
            check=fc.v2_any,
        ),
        fc.Seed("v2-bytes", *str_infer, str_doc, "json", check=fc.v2_strings),
        fc.Seed("v2-bytes-binary", *str_infer, str_binary, "v2binary", (blob,), fc.v2_strings),
        fc.Seed("v2-load", *repo, "/v2/repository/models/fz-load/load", (), {}, "json"),
        fc.Seed("v2-unload", *repo, "/v2/repository/models/fz-load/unload", (), {}, "json"),
        fc.Seed("v2-index", *repo, "/v2/repository/index", (), {"ready": True}, "json"),
        *(
            fc.Seed(f"v2-get-{what or 'metadata'}", "attested", "GET",
                    f"/v2/models/fz-f32/versions/1{what and '/' + what}", (), {}, "json")
            for what in ("", "ready", "stats")
        ),
    ]  # fmt: skip


def _grpc_seeds() -> list[fc.Seed]:
    raw = pb.ModelInferRequest(model_name="fz-f32", id=MARKER)
    raw.inputs.add(name="x", datatype="FP32", shape=[2, 3])
    raw.outputs.add(name="y")
    raw.raw_input_contents.append(X.tobytes())
    typed = pb.ModelInferRequest(model_name="fz-f32")
    t = typed.inputs.add(name="x", datatype="FP32", shape=[2, 3])
    t.contents.fp32_contents.extend(X.reshape(-1).tolist())
    strings = pb.ModelInferRequest(model_name="fz-str")
    s = strings.inputs.add(name="x", datatype="BYTES", shape=[2])
    s.contents.bytes_contents.extend([MARKER.encode(), b"\xc3\xa9"])
    load = pb.RepositoryModelLoadRequest(model_name="fz-load")
    unload = pb.RepositoryModelUnloadRequest(model_name="fz-load")
    where = ("grpc", "POST")
    return [
        fc.Seed("grpc-raw", *where, _GRPC + "ModelInfer", (), raw, "grpc"),
        fc.Seed("grpc-typed", *where, _GRPC + "ModelInfer", (), typed, "grpc"),
        fc.Seed("grpc-bytes", *where, _GRPC + "ModelInfer", (), strings, "grpc"),
        fc.Seed(
            "grpc-metadata",
            *where,
            _GRPC + "ModelMetadata",
            (),
            pb.ModelMetadataRequest(name="fz-f32"),
            "grpc",
        ),
        fc.Seed(
            "grpc-ready",
            *where,
            _GRPC + "ModelReady",
            (),
            pb.ModelReadyRequest(name="fz-f32", version="1"),
            "grpc",
        ),
        fc.Seed(
            "grpc-stats",
            *where,
            _GRPC + "ModelStatistics",
            (),
            pb.ModelStatisticsRequest(name="fz-f32"),
            "grpc",
        ),
        fc.Seed(
            "grpc-index",
            *where,
            _GRPC + "RepositoryIndex",
            (),
            pb.RepositoryIndexRequest(ready=True),
            "grpc",
        ),
        fc.Seed("grpc-load", *where, _GRPC + "RepositoryModelLoad", (), load, "grpc"),
        fc.Seed("grpc-unload", *where, _GRPC + "RepositoryModelUnload", (), unload, "grpc"),
    ]


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A server of its own (its log is checked), with the seeds' models uploaded."""
    server = start_server(
        tmp_path_factory.mktemp("fuzz"),
        "--max-models", "10000", "--body-timeout", str(BODY_TIMEOUT),
    )  # fmt: skip
    try:
        _upload_models(server)
        pem = attested_pem(server)
        channel = grpc.secure_channel(
            f"{server.host}:{server.grpc_port}",
            grpc.ssl_channel_credentials(root_certificates=pem.encode()),
            options=[("grpc.ssl_target_name_override", "blindai-srv")],
        )
        with channel:
            yield Target(server, pem, _v06_seeds() + _v2_seeds() + _grpc_seeds(), channel)
    finally:
        server.stop()


def _grpc_case(seed: fc.Seed, rng: random.Random) -> tuple[str, bytes]:
    """A mutated gRPC request: its fields (``_grpc_mutate``), its values (through the
    message's JSON form), else its serialized bytes."""
    message = seed.doc
    pick = rng.random()
    if pick < 0.4:
        return "field", mutate_message(message, rng).SerializeToString()
    if pick < 0.7:
        as_dict = json_format.MessageToDict(message)
        mutated = Mutator(rng).value(as_dict, cbor=False)
        try:
            again = json_format.ParseDict(mutated, type(message)())
            return "value", again.SerializeToString()
        except Exception:  # protobuf's own errors (even SystemError) for what it cannot hold
            pass
    return "bytes", Mutator(rng).bytes_(message.SerializeToString())


def _send_grpc(target: Target, seed: fc.Seed, body: bytes) -> tuple[str | None, str]:
    """What is wrong with the answer, and the answer's code."""
    call = target.channel.unary_unary(seed.path)  # bytes in, bytes out
    try:
        reply = call(body, timeout=CASE_SECONDS)
    except grpc.RpcError as exc:
        return fc.judge_grpc(exc.code().name, exc.details()), exc.code().name
    return _grpc_success(seed, body, reply), "OK"


def _grpc_success(seed: fc.Seed, body: bytes, reply: bytes) -> str | None:
    if not seed.path.endswith("ModelInfer"):
        return None
    request, answer = pb.ModelInferRequest(), pb.ModelInferResponse()
    request.MergeFromString(body)
    answer.MergeFromString(reply)
    if request.model_name != "fz-f32" or len(request.inputs) != 1:
        return None
    if any("classification" in o.parameters for o in request.outputs):
        return None  # the top k, not the tensor
    if request.raw_input_contents:
        sent = request.raw_input_contents[0]
    else:
        sent = np.asarray(request.inputs[0].contents.fp32_contents, np.float32).tobytes()
    if answer.raw_output_contents[0] != sent:
        return "the identity model's gRPC output differs from its input"
    return None


def _send_http(target: Target, case: fc.Case) -> tuple[str | None, Reply | None]:
    server = target.server
    port = server.attested_port if case.seed.port == "attested" else server.management_port
    raw = head(case.seed.method, case.path, case.headers) + case.body
    context = pinned_context(target.pem)
    reply = exchange(server.host, port, context, raw, timeout=CASE_SECONDS)
    return fc.judge(case, reply), reply


def _log_faults(text: str) -> list[str]:
    """What the server's log must not hold: the marker, a traceback, an unexpected failure."""
    return [bad for bad in (MARKER, "Traceback", "failed unexpectedly") if bad in text]


def fuzz(target: Target, seed: int, cases: int) -> list[str]:
    """Run ``cases`` mutated requests from ``seed``; the failures, each replayable."""
    rng = random.Random(seed)
    failures: list[str] = []
    outcomes: Counter[str] = Counter()
    slowest: list[tuple[float, str]] = []
    log_at = len(target.server.log())
    for n in range(cases):
        spec = rng.choice(target.seeds)
        case_rng = random.Random(rng.getrandbits(64))
        started = time.monotonic()
        if spec.format == "grpc":
            how, body = _grpc_case(spec, case_rng)
            label = f"{spec.name}/{how}"
            problem, outcome = _send_grpc(target, spec, body)
        else:
            case = fc.case_for(spec, case_rng)
            label = case.label
            try:
                problem, reply = _send_http(target, case)
                outcome = "closed" if reply is None else str(reply.status)
            except TimeoutError:
                problem, outcome = "no answer in time", "timeout"
        outcomes[f"{spec.name} {outcome}"] += 1
        took = time.monotonic() - started
        slowest.append((took, f"case {n} {label}"))
        if problem is None and took > CASE_SECONDS:
            problem = f"took {took:.1f} s"
        log = target.server.log()
        faults = _log_faults(log[log_at:])
        log_at = len(log)
        if faults:
            problem = f"{problem or 'answered'}; the log then held {faults}"
        if problem is not None:
            failures.append(f"seed {seed} case {n} ({label}): {problem}")
    print("outcomes:", ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items())))
    print("slowest:", ", ".join(f"{t:.2f} s {what}" for t, what in sorted(slowest)[-5:]))
    return failures


def _check_still_serving(target: Target) -> None:
    """A checking client gets right answers; the log holds nothing it must not."""
    with _connect(target.server) as c:
        got = c.predict("fz-f32", {"x": X})
        assert np.array_equal(got["y"], X)
        assert c.predict("fz-img", image=_png()).top.label == "blue"
    time.sleep(0.2)  # the log line of the last request
    log = target.server.log()
    assert not _log_faults(log), f"the server's log holds {_log_faults(log)}"


def _run_and_check(target: Target, seed: int, cases: int) -> None:
    started = time.monotonic()
    failures = fuzz(target, seed, cases)
    took = time.monotonic() - started
    print(f"request fuzz: seed {seed}, {cases} cases, {took:.1f} s, {len(failures)} failures")
    assert not failures, (
        f"{len(failures)} of {cases} cases failed (replay: BLINDAI_FUZZ_SEED={seed} "
        f"BLINDAI_FUZZ_CASES={cases}):\n" + "\n".join(failures[:40])
    )
    _check_still_serving(target)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value is None else int(value)


def test_mutated_requests_get_clean_answers(target: Target) -> None:
    seed = _env_int("BLINDAI_FUZZ_SEED", DEFAULT_SEED)
    _run_and_check(target, seed, _env_int("BLINDAI_FUZZ_CASES", DEFAULT_CASES))


@pytest.mark.slow
def test_many_mutated_requests_get_clean_answers(target: Target) -> None:
    seed = _env_int("BLINDAI_FUZZ_SEED", DEFAULT_SEED + 1)
    _run_and_check(target, seed, _env_int("BLINDAI_FUZZ_CASES", SLOW_CASES))


def test_every_seed_is_valid(target: Target) -> None:
    """Unmutated, every seed succeeds (so that the mutations start from real requests)."""
    for spec in target.seeds:
        if spec.name.startswith(("v06-delete", "v2-unload", "grpc-unload")):
            continue  # they would take the models other cases use
        if spec.format == "grpc":
            body = spec.doc.SerializeToString()
            reply = target.channel.unary_unary(spec.path)(body, timeout=CASE_SECONDS)
            assert _grpc_success(spec, body, reply) is None, spec.name
            continue
        body, headers = fc.encode(spec, spec.doc, spec.blobs)
        case = fc.Case(spec, "none", [*headers, ("Content-Length", str(len(body)))], body,
                       sent_doc=spec.doc)  # fmt: skip
        problem, reply = _send_http(target, case)
        assert reply is not None and reply.status == 200, (spec.name, reply)
        assert problem is None, (spec.name, problem)


# -- regressions: each defect the fuzzer found, as one request --------------------------------


def _v2_binary_body() -> tuple[bytes, int]:
    doc = {
        "inputs": [
            {"name": "x", "shape": [2, 3], "datatype": "FP32",
             "parameters": {"binary_data_size": X.nbytes}}
        ]
    }  # fmt: skip
    head_ = json.dumps(doc).encode()
    return head_ + X.tobytes(), len(head_)


@pytest.mark.parametrize(
    "headers",
    [
        [("Inference-Header-Content-Length", "{n}"), ("Inference-Header-Content-Length", "3")],
        [("Inference-Header-Content-Length", "{n}"), ("Inference-Header-Content-Length", "{n}")],
        [
            ("Inference-Header-Content-Length", "{n}"),
            ("Content-Encoding", "identity"),
            ("Content-Encoding", "gzip"),
        ],
    ],
    ids=["ihcl-differing", "ihcl-same", "content-encoding"],
)
def test_a_repeated_v2_header_is_refused(target: Target, headers: list[tuple[str, str]]) -> None:
    """The v2 route read the first Inference-Header-Content-Length (or Content-Encoding) and
    ignored the others: a request saying two JSON lengths ran with the first, one saying its
    body was identity and gzip ran as identity (a proxy reading the last one saw another
    request). The HTTP layer refuses a repeated Content-Length; these are refused too now."""
    body, n = _v2_binary_body()
    sent = [(k, v.format(n=n)) for k, v in headers]
    case = fc.Case(target.seeds[0], "regression", [*sent, ("Content-Length", str(len(body)))], body)
    case.path = "/v2/models/fz-f32/infer"
    _, reply = _send_http(target, case)
    assert reply is not None and reply.status == 400, reply
    assert "given more than once" in json.loads(reply.body)["error"]


def test_bytes_beyond_the_declared_shape_are_not_decoded(target: Target) -> None:
    """A binary BYTES input declaring shape [1] whose blob held 2 million elements: every one
    was decoded into a Python string (3 s of a worker here, 850 MB for a 64 MiB body) before
    the count was compared with the shape, so the per-request bound on strings, counted from
    the declared shapes, did not bound them. Decoding now stops at the first element past the
    shape's count."""
    blob = b"\x02\x00\x00\x00ab" * 2_000_000
    doc = {
        "inputs": [
            {"name": "x", "shape": [1], "datatype": "BYTES",
             "parameters": {"binary_data_size": len(blob)}}
        ]
    }  # fmt: skip
    head_ = json.dumps(doc).encode()
    headers = [("Inference-Header-Content-Length", str(len(head_)))]
    case = fc.Case(target.seeds[0], "regression", headers, head_ + blob)
    case.headers.append(("Content-Length", str(len(case.body))))
    case.path = "/v2/models/fz-str/infer"
    _, reply = _send_http(target, case)
    assert reply is not None and reply.status == 400, reply
    assert "more than 1 element" in json.loads(reply.body)["error"]


def test_grpc_bytes_beyond_the_declared_shape_are_not_decoded(target: Target) -> None:
    """The same through gRPC's raw_input_contents, which the same decoder reads."""
    request = pb.ModelInferRequest(model_name="fz-str")
    request.inputs.add(name="x", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(b"\x02\x00\x00\x00ab" * 2_000_000)
    call = target.channel.unary_unary(_GRPC + "ModelInfer")
    with pytest.raises(grpc.RpcError) as caught:
        call(request.SerializeToString(), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "more than 1 element" in (caught.value.details() or "")


@pytest.mark.parametrize("codings", ["gzip, chunked", "deflate,chunked", "x-custom, chunked"])
def test_a_transfer_coding_other_than_chunked_is_refused(target: Target, codings: str) -> None:
    """``Transfer-Encoding: gzip, chunked`` was read as if it said ``chunked``: the body,
    declared gzip-compressed, was run as it came (the v2 route refuses a gzip Content-Encoding
    for the same reason; a proxy that decodes the gzip coding sees another request). A
    transfer coding the server does not implement is now answered 501, as RFC 9112 says."""
    body = json.dumps(
        {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [0] * 6}]}
    ).encode()
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    headers = [("Transfer-Encoding", codings)]
    raw = head("POST", "/v2/models/fz-f32/infer", headers) + chunked
    context = pinned_context(target.pem)
    reply = exchange(target.server.host, target.server.attested_port, context, raw, timeout=10)
    assert reply is not None and reply.status == 501, reply
    assert b"Transfer-Encoding" in reply.body


@pytest.mark.parametrize(
    ("port", "path", "body"),
    [
        ("attested", "/run", {"model_id": "fz-f32", "model_hash": "", "inputs": [_tensor(X, "x")]}),
        ("management", "/upload", {"model": models.identity(TensorProto.FLOAT)}),
        ("management", "/delete", {"model_id": "no-such-model"}),
        ("attested", "/v2/repository/index", {}),
    ],
    ids=["run", "upload", "delete", "v2-index"],
)
def test_a_content_encoding_is_refused_on_every_body(
    target: Target, port: str, path: str, body: dict[str, Any]
) -> None:
    """Only v2 inference refused a Content-Encoding: /run, /upload, /delete and the v2
    repository routes read a body declared gzip-compressed as it came (a /run so declared ran
    with 200). Every route reading a body now refuses any coding but identity (400)."""
    raw_body = json.dumps(body).encode() if path.startswith("/v2/") else cbor2.dumps(body)
    headers = [("Content-Encoding", "gzip"), ("Content-Length", str(len(raw_body)))]
    raw = head("POST", path, headers) + raw_body
    server = target.server
    where = server.attested_port if port == "attested" else server.management_port
    reply = exchange(server.host, where, pinned_context(target.pem), raw, timeout=10)
    assert reply is not None and reply.status == 400, reply
    assert b"Content-Encoding" in reply.body


@pytest.mark.parametrize(
    "raw",
    [
        b'{"inputs":[{"name":"x","shape":[2,3],"datatype":"FP32","data":DATA}],"\\u0000":1}',
        b'{"inputs":[{"name":"x","shape":[2,3],"datatype":"FP32","data":DATA,"a\\u0000b":1}]}',
    ],
    ids=["request-key", "tensor-key"],
)
def test_a_json_key_holding_nul_is_read(target: Target, raw: bytes) -> None:
    """A v2 JSON request with a key holding ``\\u0000`` (an unknown key, ignored) got 500:
    simdjson listed the key, then could not look it up by that name (pysimdjson passes it as a
    C string, cut at the NUL: KeyError). Found by the slow fuzz run (seed 4242, case 5594)."""
    body = raw.replace(b"DATA", json.dumps(X.reshape(-1).tolist()).encode())
    case = fc.Case(target.seeds[0], "regression", [("Content-Length", str(len(body)))], body)
    case.path = "/v2/models/fz-f32/infer"
    _, reply = _send_http(target, case)
    assert reply is not None and reply.status == 200, reply
    got = np.asarray(json.loads(reply.body)["outputs"][0]["data"], np.float32)
    assert np.array_equal(got, X.reshape(-1))
