"""The request fuzzer's seeds (real, valid requests of each kind) and its oracle.

Each :class:`Seed` is one valid request: where it goes (a port, a method, a path), its
headers, its document (CBOR or JSON, or a protobuf message for gRPC) and how it is encoded.
:func:`case_for` turns a seed into a mutated :class:`Case`: its body's bytes mutated, or its
document's values (then encoded again), or its framing headers. :func:`judge` says what is
wrong with the server's answer to a case, if anything.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cbor2
import numpy as np

from tests.integration._mutate import MARKER, Mutator, cbor_dumps, json_dumps
from tests.integration._rawhttp import Reply

__all__ = [
    "CLASS_LABELS",
    "Case",
    "Seed",
    "case_for",
    "judge",
    "judge_grpc",
]

CLASS_LABELS = {"red", "green", "blue"}
"""The image classifier's labels: a result names only these."""

_DOCUMENTED_5XX = {503, 504}
_ODD_PATHS = [
    "%00", "%ff", "caf%C3%A9", "%E2%80%AE", "fz-f32/versions/99999999999999999999",
    "fz-f32/versions/-1", "fz-f32/versions/%00", "fz-f32/versions/1", "fz-f32/versions/",
    "..", "fz-f32%2Fx", "a" * 3000, "fz-f32%20", "%F0%9F%98%80", "fz%2d%66%33%32",
]  # fmt: skip
"""Server-side statuses the docs give for a request's load or time (busy, timed out)."""


@dataclass(frozen=True)
class Seed:
    """A real, valid request."""

    name: str
    port: str
    """``attested``, ``management`` or ``grpc``."""
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    doc: Any
    format: str
    """``cbor``, ``json``, ``v2binary`` (JSON then blobs) or ``grpc``."""
    blobs: tuple[bytes, ...] = ()
    check: Callable[[Case, Any], str | None] | None = None
    """What is wrong with a success's decoded reply, given the case; None: nothing."""


@dataclass
class Case:
    """One mutated request: the seed it came from, what was done, and the bytes to send."""

    seed: Seed
    how: str
    headers: list[tuple[str, str]]
    body: bytes
    sent_doc: Any = None
    """The document as encoded when only values were mutated (None: bytes were mutated)."""
    truncated: bool = False
    """The headers declare more body than is sent: the server may close without answering."""
    extra: dict[str, Any] = field(default_factory=dict)

    path: str = ""
    """The request's path (the seed's, unless mutated)."""
    ambiguous: bool = False
    """A header the route reads is repeated, or a content or transfer coding the server does
    not do is declared: the request must be refused (501 for a transfer coding)."""

    def __post_init__(self) -> None:
        self.path = self.path or self.seed.path

    @property
    def label(self) -> str:
        return f"{self.seed.name}/{self.how}"


def encode(seed: Seed, doc: Any, blobs: tuple[bytes, ...]) -> tuple[bytes, list[tuple[str, str]]]:
    """The body for ``doc`` (and ``blobs``), and the seed's headers with the JSON's length."""
    headers = list(seed.headers)
    if seed.format == "cbor":
        return cbor_dumps(doc), headers
    if seed.format == "json":
        return json_dumps(doc), headers
    if seed.format == "v2binary":
        head = json_dumps(doc)
        headers.append(("Inference-Header-Content-Length", str(len(head))))
        return head + b"".join(blobs), headers
    raise ValueError(seed.format)


def _mutated_headers(rng: random.Random, case: Case) -> None:
    """One framing or content header mutated (Content-Length is added later, from the body,
    unless one is set here)."""
    n = len(case.body)
    how = rng.randrange(11)
    if how == 10 and "/infer" in case.path:
        name, value = rng.choice(
            [
                ("Inference-Header-Content-Length", str(n)),
                ("Content-Encoding", "gzip"),
                ("Content-Encoding", "identity"),
            ]
        )
        case.headers = [*case.headers, (name, value), (name, value if rng.random() < 0.5 else "3")]
        case.ambiguous = True
        case.how += f"+{name}-twice"
    elif how == 9 and case.path.startswith("/v2/"):
        name = case.path.split("/")[3]
        odd = rng.choice(_ODD_PATHS)
        case.path = case.path.replace(f"/{name}/", f"/{odd}/", 1)
        case.how += f"+path={odd[:30]}"
    elif how == 0:
        value = rng.choice(
            [str(n + 1), str(n + 100), "99999999999999999999", str(1 << 40), str(n * 2 + 7)]
        )
        case.truncated = True
        case.headers.append(("Content-Length", value))
        case.how += f"+cl={value[:24]}"
    elif how == 1:
        value = rng.choice([str(max(n - 1, 0)), "0", str(n // 2)])
        case.headers.append(("Content-Length", value))
        case.how += f"+cl={value}"
    elif how == 2:
        value = rng.choice(["-1", "+5", "1_0", "0x10", "\u0663", " ", "1e3", f"{n}, {n}"])
        case.headers.append(("Content-Length", value))
        case.how += "+cl-bad"
    elif how == 3:
        case.headers += [("Content-Length", str(n)), ("Content-Length", str(n + 1))]
        case.truncated = True
        case.how += "+cl-twice"
    elif how == 4:
        case.headers = [(k, v) for k, v in case.headers if k != "Inference-Header-Content-Length"]
        value = rng.choice(
            ["-1", "0", str(n), str(n + 1), "99999999999999999999999", "abc", " 5 ", "\u0663",
             "1" * 5000, "", "4294967296"]
        )  # fmt: skip
        case.headers.append(("Inference-Header-Content-Length", value))
        case.how += f"+ihcl={value[:24]!r}"
    elif how == 5:
        value = rng.choice(
            ["application/json; charset=utf-16", "text/plain", "multipart/form-data",
             "application/cbor", "\u00e9", "a" * 4000]
        )  # fmt: skip
        case.headers.append(("Content-Type", value))
        case.how += "+ctype"
    elif how == 6:
        case.headers.append(("Content-Encoding", rng.choice(["gzip", "br", "identity, gzip"])))
        case.ambiguous = case.seed.method == "POST"  # a body no route decodes: refused
        case.how += "+cenc"
    elif how == 7:
        coding = rng.choice(("chunked", "chunked", "gzip, chunked", "identity, chunked"))
        case.headers.append(("Transfer-Encoding", coding))
        chunked = f"{n:x}\r\n".encode() + case.body + b"\r\n0\r\n\r\n"
        case.body = chunked
        if coding != "chunked":
            case.ambiguous = True  # another coding: refused, not read as chunked
        elif rng.random() < 0.5:
            case.body = chunked[: rng.randrange(len(chunked))]
            case.truncated = True  # a cut chunked body: the server waits for the rest
        case.how += f"+te={coding}"
    elif how == 8:
        case.headers.append(("Expect", "100-continue"))
        case.how += "+expect"


def case_for(seed: Seed, rng: random.Random) -> Case:
    """A mutation of ``seed``: its values (three in seven), its bytes (two in seven), or its
    headers or path (two in seven; the body then stays valid)."""
    mutator = Mutator(rng)
    pick = rng.randrange(7)
    blobs = seed.blobs
    if seed.format == "v2binary" and rng.random() < 0.3:
        blobs = tuple(mutator.bytes_(b) if rng.random() < 0.5 else b for b in blobs)
    if pick < 3:
        doc = mutator.value(seed.doc, cbor=seed.format == "cbor")
        body, headers = encode(seed, doc, blobs)
        case = Case(seed, "value", headers, body, sent_doc=doc)
    else:
        body, headers = encode(seed, seed.doc, blobs)
        if pick < 5:
            case = Case(seed, "bytes", headers, mutator.bytes_(body))
        else:
            case = Case(seed, "header", headers, body, sent_doc=seed.doc)
            _mutated_headers(rng, case)
    if not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in case.headers):
        case.headers.append(("Content-Length", str(len(case.body))))
    return case


def _readable(reply: Reply) -> str | None:
    """The error message an error reply carries: a CBOR text, a JSON ``error``, or text."""
    body = reply.body
    if not body:
        return None
    kind = reply.headers.get("content-type", "")
    try:
        if "cbor" in kind:
            value = cbor2.loads(body)
            return value if isinstance(value, str) and value else None
        if "json" in kind:
            value = json.loads(body)
            error = value.get("error") if isinstance(value, dict) else None
            return error if isinstance(error, str) and error else None
        text = body.decode("utf-8")
    except (ValueError, cbor2.CBORDecodeError, UnicodeDecodeError):
        return None
    return text if text.strip() else None


def judge(case: Case, reply: Reply | None) -> str | None:
    """What is wrong with ``reply`` to ``case`` (None: it is a fine answer)."""
    if reply is None:
        return None if case.truncated else "the connection closed without an answer"
    if case.ambiguous and reply.status < 300:
        return "an ambiguous request (a header repeated, a coding not done) was served"
    documented = _DOCUMENTED_5XX | ({501} if case.ambiguous else set())
    if reply.status >= 500 and reply.status not in documented:
        return f"status {reply.status}: {reply.body[:200]!r}"
    if reply.status >= 300:
        if _readable(reply) is None:
            return f"status {reply.status} without a readable message: {reply.body[:200]!r}"
        return None
    if case.seed.check is None:
        return None
    try:
        decoded = _decoded(case.seed.format, reply)
    except (ValueError, cbor2.CBORDecodeError) as exc:
        return f"a success whose body does not decode: {exc}"
    return case.seed.check(case, decoded)


def judge_grpc(code_name: str, details: str | None) -> str | None:
    """What is wrong with a failed gRPC call's status (None: a client's error, said)."""
    if code_name in ("INTERNAL", "UNKNOWN", "DATA_LOSS"):
        return f"gRPC {code_name}: {details!r}"
    if not details:
        return f"gRPC {code_name} without details"
    return None


def _decoded(fmt: str, reply: Reply) -> Any:
    if fmt == "cbor":
        return cbor2.loads(reply.body)
    cut = reply.headers.get("inference-header-content-length")
    head = reply.body if cut is None else reply.body[: int(cut)]
    doc = json.loads(head)
    if cut is not None:
        doc["_blobs"] = reply.body[int(cut) :]
    return doc


# -- success checks --------------------------------------------------------------------------


def run_identity(case: Case, reply: Any) -> str | None:
    """A 0.6 /run on the identity model: the output's bytes are the input's."""
    outputs = reply.get("outputs") if isinstance(reply, dict) else None
    if not isinstance(outputs, list) or not outputs:
        return f"a /run success without outputs: {str(reply)[:200]}"
    doc = case.sent_doc if case.sent_doc is not None else _cbor_or_none(case.body)
    if not isinstance(doc, dict) or doc.get("model_id") != "fz-f32" or doc.get("model_hash"):
        return None  # another model meant (the newest, by an empty id): well-formed is enough
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        return None
    sent = inputs[0].get("bytes_data")
    sent = bytes(sent) if isinstance(sent, bytes | list) else None
    got = outputs[0].get("bytes_data") if isinstance(outputs[0], dict) else None
    if sent is not None and got != sent:
        return "the identity model's output differs from its input"
    return None


def _cbor_or_none(body: bytes) -> Any:
    try:
        return cbor2.loads(body)
    except Exception:
        return None


def classification(case: Case, reply: Any) -> str | None:
    """An image classification: labels of the model's, scores in [0, 1]."""
    result = reply.get("result") if isinstance(reply, dict) else None
    if not isinstance(result, dict):
        return None if isinstance(reply, dict) and "outputs" in reply else f"no result: {reply}"
    labels = result.get("labels")
    if not isinstance(labels, list) or not labels:
        return f"a classification without labels: {str(result)[:200]}"
    for item in labels:
        label, score = item.get("label"), item.get("score")
        if label not in CLASS_LABELS or not (0 <= score <= 1):
            return f"a classification with {label!r} scored {score!r}"
    return None


def any_result(case: Case, reply: Any) -> str | None:
    """A pipeline run: a result or outputs, finite numbers in it."""
    if not isinstance(reply, dict) or not ({"result", "outputs"} & set(reply)):
        return f"a /run success without result or outputs: {str(reply)[:200]}"
    return None


def uploaded(case: Case, reply: Any) -> str | None:
    """An upload: an id, and the hash of the model bytes sent."""
    if not isinstance(reply, dict) or not isinstance(reply.get("model_id"), str):
        return f"an upload success without model_id: {str(reply)[:200]}"
    doc = case.sent_doc if case.sent_doc is not None else _cbor_or_none(case.body)
    model = doc.get("model") if isinstance(doc, dict) else None
    if isinstance(model, bytes) and reply.get("hash") != hashlib.sha256(model).digest():
        return "the upload's hash is not the hash of the model sent"
    return None


def deleted(case: Case, reply: Any) -> str | None:
    return None if reply is None else f"a delete answered {reply!r}"


def _json_docs(case: Case) -> list[Any]:
    """The sent JSON document read last-key-wins and first-key-wins (either may be meant)."""
    cut = dict((k.lower(), v) for k, v in case.headers).get("inference-header-content-length")
    raw = case.body
    if cut is not None and cut.strip().isdigit():
        raw = raw[: int(cut)]
    docs = []
    for hook in (None, lambda pairs: dict(reversed(pairs))):
        try:
            docs.append(json.loads(raw, object_pairs_hook=hook))
        except (ValueError, RecursionError):
            pass
    return docs


def v2_identity(case: Case, reply: Any) -> str | None:
    """A v2 infer on the identity model: output ``y`` holds the input's values."""
    outputs = reply.get("outputs") if isinstance(reply, dict) else None
    if not isinstance(outputs, list) or not outputs:
        return f"an infer success without outputs: {str(reply)[:200]}"
    out = outputs[0]
    if out.get("parameters", {}).get("binary_data_size") is not None:
        got = np.frombuffer(reply["_blobs"][: out["parameters"]["binary_data_size"]], np.float32)
    elif "data" in out and out.get("datatype") == "FP32":
        got = np.asarray(out["data"], np.float32).reshape(-1)
    else:
        return None
    wants = []
    for doc in _json_docs(case):
        inputs = doc.get("inputs") if isinstance(doc, dict) else None
        if isinstance(inputs, list) and len(inputs) == 1 and isinstance(inputs[0], dict):
            data = inputs[0].get("data")
            if not isinstance(data, list):
                continue
            try:
                wants.append(np.asarray(data, np.float64).astype(np.float32).reshape(-1))
            except (ValueError, TypeError, OverflowError):
                pass
    if case.seed.format == "v2binary" and not wants:
        return None  # blobs: compared by the fuzz loop where they still decode
    if wants and not any(w.shape == got.shape and np.array_equal(w, got, equal_nan=True)
                         for w in wants):  # fmt: skip
        return "the identity model's output differs from its input"
    return None


def v2_any(case: Case, reply: Any) -> str | None:
    if not isinstance(reply, dict):
        return f"a v2 success that is not a JSON object: {str(reply)[:200]}"
    return None


def finite(values: list[float]) -> bool:
    return all(math.isfinite(v) for v in values)


def text_marker() -> str:
    return f"the cat {MARKER} food"


def _prefixed(blob: bytes) -> list[bytes] | None:
    """Length-prefixed elements (the binary BYTES layout); None when it does not parse."""
    out, at = [], 0
    while at < len(blob):
        if at + 4 > len(blob):
            return None
        n = int.from_bytes(blob[at : at + 4], "little")
        out.append(blob[at + 4 : at + 4 + n])
        at += 4 + n
    return out if at == len(blob) else None


def v2_strings(case: Case, reply: Any) -> str | None:
    """A v2 infer on the string identity: output ``y`` holds the input's strings."""
    outputs = reply.get("outputs") if isinstance(reply, dict) else None
    if not isinstance(outputs, list) or len(outputs) != 1:
        return f"an infer success without one output: {str(reply)[:200]}"
    out = outputs[0]
    size = out.get("parameters", {}).get("binary_data_size")
    got = _prefixed(reply["_blobs"][:size]) if size is not None else None
    if got is None and isinstance(out.get("data"), list):
        got = [str(x).encode() for x in out["data"]]
    sents: list[list[bytes]] = []
    for doc in _json_docs(case):
        inputs = doc.get("inputs") if isinstance(doc, dict) else None
        if isinstance(inputs, list) and len(inputs) == 1 and isinstance(inputs[0], dict):
            data = inputs[0].get("data")
            if isinstance(data, list) and all(isinstance(x, str) for x in data):
                sents.append([x.encode("utf-8", "surrogatepass") for x in data])
    if not sents and case.seed.format == "v2binary":
        cut = dict((k.lower(), v) for k, v in case.headers).get("inference-header-content-length")
        blobs = _prefixed(case.body[int(cut) :]) if cut and cut.strip().isdigit() else None
        sents = [] if blobs is None else [blobs]
    if sents and got is not None and got not in sents:
        return "the string identity model's output differs from its input"
    return None
