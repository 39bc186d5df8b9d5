"""What the Open Inference Protocol tests share: the pinned certificate, a pinned tritonclient
context, onnxruntime's reference outputs, and each datatype with values at its extremes."""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import Callable
from typing import Any

import cbor2
import numpy as np
import onnxruntime as ort
from onnx import TensorProto
from prometheus_client.parser import text_string_to_metric_families

from tests._server import ServerProcess

__all__ = ["DTYPES", "Samples", "attested_pem", "extremes", "pinned_factory", "reference", "scrape"]

#: each Open Inference Protocol datatype (but BYTES and BF16): its ONNX and numpy types
DTYPES: dict[str, tuple[int, Any]] = {
    "BOOL": (TensorProto.BOOL, np.bool_),
    "UINT8": (TensorProto.UINT8, np.uint8),
    "UINT16": (TensorProto.UINT16, np.uint16),
    "UINT32": (TensorProto.UINT32, np.uint32),
    "UINT64": (TensorProto.UINT64, np.uint64),
    "INT8": (TensorProto.INT8, np.int8),
    "INT16": (TensorProto.INT16, np.int16),
    "INT32": (TensorProto.INT32, np.int32),
    "INT64": (TensorProto.INT64, np.int64),
    "FP16": (TensorProto.FLOAT16, np.float16),
    "FP32": (TensorProto.FLOAT, np.float32),
    "FP64": (TensorProto.DOUBLE, np.float64),
}


def extremes(dtype: Any) -> np.ndarray:
    """A [2, 3] array of ``dtype`` whose values reach the type's extremes."""
    if dtype is np.bool_:
        return np.array([[True, False, True], [False, False, True]])
    if np.issubdtype(dtype, np.integer):
        i = np.iinfo(dtype)
        return np.array([[i.min, 0, i.max], [1, i.max - 1, i.min + 1]], dtype=dtype)
    f = np.finfo(dtype)
    return np.array([[f.min, -0.5, f.max], [f.tiny, 1 / 3, 0]], dtype=dtype)


def reference(model: bytes, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs of onnxruntime run in-process, by name."""
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def attested_pem(server: ServerProcess) -> str:
    """The attested port's certificate (PEM), from ``GET /`` on the unattested port."""
    with urllib.request.urlopen(f"http://{server.host}:{server.unattested_port}/") as reply:
        der = cbor2.loads(reply.read())
    assert isinstance(der, bytes)
    return ssl.DER_cert_to_PEM_cert(der)


def pinned_factory(pem: str) -> Callable[..., ssl.SSLContext]:
    """A tritonclient.http SSL context factory trusting only ``pem`` (not the CA bundle)."""
    import gevent.ssl  # type: ignore[import-untyped]

    def factory(cafile: str | None = None) -> ssl.SSLContext:
        del cafile  # geventhttpclient passes certifi's bundle; the pin replaces it
        context: ssl.SSLContext = gevent.ssl.create_default_context(cadata=pem)
        return context

    return factory


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""Prometheus samples by name and sorted labels."""


def scrape(server: ServerProcess, pem: str, *, api_key: str | None = None) -> Samples:
    """``GET /metrics`` on the management port (attested TLS pinned to ``pem``), parsed."""
    context = ssl.create_default_context(cadata=pem)
    context.check_hostname = False  # dialled as 127.0.0.1; the pin still applies
    headers = {} if api_key is None else {"Authorization": f"Bearer {api_key}"}
    url = f"https://{server.host}:{server.management_port}/metrics"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), context=context) as r:
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
