"""Prometheus metrics: one ``CollectorRegistry`` per server, never the process-wide one.

:class:`Metrics` holds the registry and every metric the server exports; :class:`MetricsMiddleware`
counts HTTP requests (by port, route *template* and status), their durations and their bytes;
:func:`metrics_route` serves the text exposition format on ``GET /metrics``.

Labels never carry what a client chose: a request's path is reported as the route template it
matched (``/v2/models/{name}/infer``), or ``unmatched``; there are no labels for model names,
key names, inputs or outputs. Per-model inference counts and durations carry the model's id
(assigned by the server) only when its owner made it public; every other model is counted
under ``model="private"``, and a deleted model's series go with it.

Example::

    metrics = Metrics()
    app = MetricsMiddleware(Starlette(routes=[metrics_route(metrics)]), metrics, port="management")
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from blindai.server._connection_limits import answered
from blindai.server.statistics import Timing

__all__ = ["LATENCY_BUCKETS", "PRIVATE_MODEL", "Metrics", "MetricsMiddleware", "metrics_route"]

LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
"""Histogram buckets (seconds), from 100 µs (a tiny model's phase) to a minute."""
_COMPILE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_NS = 1e-9
PRIVATE_MODEL = "private"
"""The ``model`` label of every model that is not public (never its id)."""
_OUTCOMES = ("success", "failure")


class Metrics:
    """Every metric of one server, in its own registry (``registry``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}
        r = self.registry
        self.requests = Counter(
            "blindai_http_requests",
            "HTTP requests answered, by port, route template and status",
            ["port", "route", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "blindai_http_request_duration_seconds",
            "HTTP request durations, by port and route template",
            ["port", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.grpc_requests = Counter(
            "blindai_grpc_requests",
            "gRPC calls answered, by method and status code",
            ["method", "code"],
            registry=r,
        )
        self.grpc_seconds = Histogram(
            "blindai_grpc_request_duration_seconds",
            "gRPC call durations, by method",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.phase_seconds = Histogram(
            "blindai_inference_phase_duration_seconds",
            "Inference request phases: decode, queue (waiting for a worker), infer, encode",
            ["protocol", "phase"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.received_bytes = Counter(
            "blindai_received_bytes", "Request body bytes received, by port", ["port"], registry=r
        )
        self.sent_bytes = Counter(
            "blindai_sent_bytes", "Response body bytes sent, by port", ["port"], registry=r
        )
        self.models_loaded = Gauge(
            "blindai_models_loaded", "Models whose onnxruntime session is loaded", registry=r
        )
        self.model_host_ends = Counter(
            "blindai_model_host_ends",
            "Model host processes (--run-isolation process) that ended during runs: crashed "
            "(onnxruntime on a request's values), or killed to stop a run",
            ["why"],
            registry=r,
        )
        self.active_connections = Gauge(
            "blindai_active_connections", "Open client connections, by port", ["port"], registry=r
        )
        self.upload_seconds = Histogram(
            "blindai_model_upload_duration_seconds",
            "Model uploads and loads, from the bytes received to the model registered",
            buckets=_COMPILE_BUCKETS,
            registry=r,
        )
        self.compile_seconds = Histogram(
            "blindai_model_compile_duration_seconds",
            "onnxruntime session creation (graph optimisation included)",
            buckets=_COMPILE_BUCKETS,
            registry=r,
        )
        self.model_requests = Counter(
            "blindai_model_inference_requests",
            "Inference requests by model (the id of a public model, else 'private') and outcome",
            ["model", "outcome"],
            registry=r,
        )
        self.model_seconds = Histogram(
            "blindai_model_inference_duration_seconds",
            "Successful inference durations (all phases) by model (a public model's id, else "
            "'private')",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.evidence_refreshes = Counter(
            "blindai_evidence_refreshes",
            "Attestation evidence collected anew, by kind (cpu, gpu)",
            ["kind"],
            registry=r,
        )

    def child(self, metric: Counter | Histogram, *labels: str) -> Any:
        """``metric.labels(*labels)``, kept: prometheus_client checks and locks on each call,
        which is most of what counting a request costs. Label values are bounded (ports, route
        templates, statuses, phases, methods, public model ids, which :meth:`forget_model`
        drops), so the cache is too."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def observe_phases(self, protocol: str, timing: Timing) -> None:
        """Add one inference request's phase durations."""
        for phase, ns in timing.ns.items():
            self.child(self.phase_seconds, protocol, phase).observe(ns * _NS)

    def observe_model(self, *, model_id: str, public: bool, success: bool, timing: Timing) -> None:
        """Count one inference request on a model (labelled by its id only if ``public``)."""
        model = model_id if public else PRIVATE_MODEL
        self.child(self.model_requests, model, _OUTCOMES[not success]).inc()
        if success:
            self.child(self.model_seconds, model).observe(sum(timing.ns.values()) * _NS)

    def forget_model(self, model_id: str) -> None:
        """Drop a deleted model's series (nothing for a private one: it has none)."""
        for outcome in _OUTCOMES:
            self._children.pop((self.model_requests, (model_id, outcome)), None)
            with contextlib.suppress(KeyError):
                self.model_requests.remove(model_id, outcome)
        self._children.pop((self.model_seconds, (model_id,)), None)
        with contextlib.suppress(KeyError):
            self.model_seconds.remove(model_id)

    def count_connections(self, port: str, count: Callable[[], int]) -> None:
        """Report ``count()`` (read at each scrape) as the open connections of ``port``."""
        self.active_connections.labels(port).set_function(lambda: float(count()))

    def render(self) -> bytes:
        """The text exposition format of every metric."""
        return generate_latest(self.registry)


def metrics_route(metrics: Metrics) -> Route:
    """``GET /metrics``: the Prometheus text format."""

    async def scrape(_: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", scrape, methods=["GET"])


def _template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None) if isinstance(route, BaseRoute) else None
    return path if isinstance(path, str) else "unmatched"


class MetricsMiddleware:
    """Counts each HTTP request by route template and status, its duration and its bytes."""

    def __init__(self, app: ASGIApp, metrics: Metrics, *, port: str) -> None:
        self.app = app
        self._metrics = metrics
        self._port = port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        received = sent = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            m, route, port = self._metrics, _template(scope), self._port
            m.child(m.requests, port, route, str(answered(scope, status))).inc()
            m.child(m.request_seconds, port, route).observe(time.perf_counter() - start)
            m.child(m.received_bytes, port).inc(received)
            m.child(m.sent_bytes, port).inc(sent)
