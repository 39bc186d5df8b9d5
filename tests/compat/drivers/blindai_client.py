"""Drive an original BlindAI client from PyPI against a server; print one JSON result.

Runs inside a compat venv (``.venv-compat/preview`` or ``.venv-compat/v063``), never inside the
project's own venv: it imports ``blindai_preview`` (blindai-preview 0.0.8) or ``blindai.core``
(blindai 0.6.3). Start it with ``python -I`` so that neither PYTHONPATH nor the working
directory can put the project's own ``blindai`` package in front of the PyPI one.

Reads a JSON plan on stdin::

    {"client": "preview" | "v063",
     "host": "127.0.0.1", "unattested_port": 9923, "attested_port": 9924,
     "management_port": 9925,            # v063 only
     "simulation_mode": true,
     "trace": true,                      # record every HTTP request and reply (no payloads)
     "ops": [
        {"op": "connect"},
        {"op": "upload", "path": "/tmp/m.onnx", "name": "add"},
        {"op": "run", "by": "id" | "hash", "model": 0,    # index of an earlier upload op
         "form": "numpy" | "dict" | "flat",
         "inputs": [{"name": "x", "dtype": "float32", "shape": [2, 3], "data": [...]}]},
        {"op": "delete", "model": 0}
     ]}

Writes ``{"client", "version", "results": [...], "trace": [...]}``: one result per op, either
the op's outcome or ``{"error": ..., "status": ...}``. The plan stops at a failed ``connect``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import traceback
import warnings
from typing import Any

import cbor2
import numpy as np
import requests  # type: ignore[import-untyped,unused-ignore]

TRACE: list[dict[str, Any]] = []

DATUM = {
    "float32": "F32",
    "float64": "F64",
    "int32": "I32",
    "int64": "I64",
    "uint32": "U32",
    "uint64": "U64",
    "uint8": "U8",
    "uint16": "U16",
    "int8": "I8",
    "int16": "I16",
    "bool": "Bool",
}


def _summarize(value: Any) -> Any:
    """Describe a decoded CBOR value by its shape, never by its payload."""
    if isinstance(value, dict):
        return {str(k): _summarize(v) for k, v in value.items()}
    if isinstance(value, list):
        kinds = sorted({type(v).__name__ for v in value})
        if value and kinds == ["int"]:
            return {"type": "array", "items": "int", "len": len(value)}
        return [_summarize(v) for v in value[:4]]
    if isinstance(value, bytes | bytearray):
        return {"type": "bytes", "len": len(value)}
    if isinstance(value, str):
        return {"type": "str", "len": len(value)}
    return {"type": type(value).__name__, "value": value}


def _decode(body: bytes | None) -> Any:
    if not body:
        return None
    try:
        return _summarize(cbor2.loads(body))
    except Exception as exc:  # a non-CBOR body is itself a finding
        return {"undecodable": type(exc).__name__, "len": len(body)}


def _install_trace() -> None:
    """Wrap requests.Session.send to record each exchange's method, URL, headers, body shape."""
    original = requests.Session.send

    def send(self: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> Any:
        body = request.body if isinstance(request.body, bytes) else None
        entry: dict[str, Any] = {
            "method": request.method,
            "url": request.url,
            "headers": dict(request.headers),
            "body": _decode(body),
            "verify": str(kwargs.get("verify")),
        }
        TRACE.append(entry)
        response = original(self, request, **kwargs)
        entry["status"] = response.status_code
        entry["reply_headers"] = dict(response.headers)
        entry["reply"] = _decode(response.content)
        return response

    setattr(requests.Session, "send", send)  # noqa: B010 (patching a library class)


def _error(exc: BaseException) -> dict[str, Any]:
    out: dict[str, Any] = {
        "error": type(exc).__name__,
        "module": type(exc).__module__,
        "message": str(exc)[:500],
    }
    response = getattr(exc, "response", None)
    if response is not None:
        out["status"] = response.status_code
    if not isinstance(exc, requests.HTTPError):
        out["traceback"] = traceback.format_exc()[-2000:]
    return out


def _arrays(spec: list[dict[str, Any]]) -> list[np.ndarray]:
    return [np.array(i["data"], dtype=i["dtype"]).reshape(i["shape"]) for i in spec]


def _tensor_out(tensor: Any, client: Any) -> dict[str, Any]:
    info = tensor.info
    array = tensor.as_numpy()
    return {
        "node_name": info.node_name,
        "datum_type": client.ModelDatumType(info.datum_type).name,
        "fact": list(info.fact),
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        "data": array.ravel().tolist(),
    }


class Driver:
    """Holds the connection and the uploads made so far."""

    def __init__(self, plan: dict[str, Any], client: Any) -> None:
        self.plan = plan
        self.client = client
        self.conn: Any = None
        self.uploads: list[dict[str, Any]] = []

    def connect(self, op: dict[str, Any]) -> dict[str, Any]:
        plan = self.plan
        kwargs: dict[str, Any] = {
            "addr": plan["host"],
            "unattested_server_port": plan["unattested_port"],
            "attested_server_port": plan["attested_port"],
            "simulation_mode": op.get("simulation_mode", plan.get("simulation_mode", True)),
            "hazmat_http_on_unattested_port": op.get("http_on_unattested_port", True),
        }
        if plan["client"] == "v063":
            kwargs["model_management_port"] = plan["management_port"]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.conn = self.client.connect(**kwargs)
        return {"ok": True, "warnings": sorted({type(w.message).__name__ for w in caught})}

    def upload(self, op: dict[str, Any]) -> dict[str, Any]:
        reply = self.conn.upload_model(op["path"], model_name=op.get("name"))
        with open(op["path"], "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        record: dict[str, Any] = {"model_id": reply.model_id, "sha256": digest}
        if hasattr(reply, "hash"):
            record["hash_type"] = type(reply.hash).__name__
            record["hash"] = reply.hash.hex() if isinstance(reply.hash, bytes) else reply.hash
        self.uploads.append(record)
        return record

    def run(self, op: dict[str, Any]) -> dict[str, Any]:
        spec = op["inputs"]
        form = op.get("form", "numpy")
        kwargs: dict[str, Any] = {}
        if form == "numpy":
            kwargs["input_tensors"] = _arrays(spec)
        elif form == "dict":
            kwargs["input_tensors"] = dict(
                zip([i["name"] for i in spec], _arrays(spec), strict=True)
            )
        elif form == "flat":
            kwargs["input_tensors"] = [list(np.array(i["data"]).ravel().tolist()) for i in spec]
            kwargs["dtypes"] = [self.client.ModelDatumType[DATUM[i["dtype"]]] for i in spec]
            kwargs["shapes"] = [list(i["shape"]) for i in spec]
        else:
            raise ValueError(f"unknown form {form}")
        target = self.uploads[op.get("model", -1)] if self.uploads else {}
        if op.get("by", "id") == "hash":
            kwargs["model_hash"] = op.get("model_hash", target.get("sha256", ""))
        else:
            kwargs["model_id"] = op.get("model_id", target.get("model_id", ""))
        reply = self.conn.run_model(**kwargs)
        return {"outputs": [_tensor_out(t, self.client) for t in reply.output]}

    def delete(self, op: dict[str, Any]) -> dict[str, Any]:
        target = self.uploads[op.get("model", -1)] if self.uploads else {}
        self.conn.delete_model(op.get("model_id", target.get("model_id", "")))
        return {"ok": True}

    def close(self, op: dict[str, Any]) -> dict[str, Any]:
        self.conn.close()
        return {"ok": True}


def _import_client(name: str) -> tuple[Any, str]:
    from importlib.metadata import version

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba / transformers deprecation noise at import
        if name == "preview":
            import blindai_preview as client  # type: ignore[import-not-found]

            return client, version("blindai-preview")
        if name == "v063":
            import blindai.core as client  # type: ignore[import-not-found,unused-ignore]

            return client, version("blindai")
    raise ValueError(f"unknown client {name!r}")


def main() -> int:
    plan = json.load(sys.stdin)
    client, version = _import_client(plan["client"])
    if plan.get("trace", True):
        _install_trace()
    driver = Driver(plan, client)
    results: list[dict[str, Any]] = []
    for op in plan.get("ops", []):
        try:
            results.append(getattr(driver, op["op"])(op))
        except Exception as exc:
            results.append(_error(exc))
            if op["op"] == "connect":
                break
    out = {
        "client": plan["client"],
        "version": version,
        "module": client.__name__,
        "module_file": client.__file__,
        "results": results,
        "trace": TRACE,
    }
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
