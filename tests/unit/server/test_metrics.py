"""Prometheus metrics: a registry per server, route templates, bytes, parsed by the parser."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from blindai.server.metrics import Metrics, MetricsMiddleware, metrics_route
from blindai.server.statistics import Timing


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def app(metrics: Metrics) -> MetricsMiddleware:
    async def echo(request: Request) -> Response:
        return Response(await request.body())

    routes = [Route("/v2/models/{name}/infer", echo, methods=["POST"]), metrics_route(metrics)]
    return MetricsMiddleware(Starlette(routes=routes), metrics, port="attested")


@pytest.fixture
def client() -> tuple[httpx.AsyncClient, Metrics]:
    metrics = Metrics()
    transport = httpx.ASGITransport(app=app(metrics))
    return httpx.AsyncClient(transport=transport, base_url="http://t"), metrics


async def _drive(client: httpx.AsyncClient) -> None:
    async with client:
        assert (
            await client.post("/v2/models/secret-name/infer", content=b"12345")
        ).status_code == 200
        assert (await client.get("/no/such/private-path")).status_code == 404


def test_requests_are_counted_by_template_never_by_path(client) -> None:
    import asyncio

    http, metrics = client
    asyncio.run(_drive(http))
    got = samples(metrics)
    infer = (("port", "attested"), ("route", "/v2/models/{name}/infer"), ("status", "200"))
    assert got[("blindai_http_requests_total", infer)] == 1
    assert (
        got[
            (
                "blindai_http_requests_total",
                (("port", "attested"), ("route", "unmatched"), ("status", "404")),
            )
        ]
        == 1
    )
    assert got[("blindai_received_bytes_total", (("port", "attested"),))] == 5
    assert got[("blindai_sent_bytes_total", (("port", "attested"),))] >= 5
    text = metrics.render().decode()
    assert "secret-name" not in text
    assert "private-path" not in text


def test_each_server_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.evidence_refreshes.labels("cpu").inc()
    assert samples(a)[("blindai_evidence_refreshes_total", (("kind", "cpu"),))] == 1
    assert ("blindai_evidence_refreshes_total", (("kind", "cpu"),)) not in samples(b)
    assert REGISTRY.get_sample_value("blindai_evidence_refreshes_total", {"kind": "cpu"}) is None


def test_phases_and_connections() -> None:
    metrics = Metrics()
    timing = Timing()
    timing.add("infer", 2_000_000)
    metrics.observe_phases("grpc", timing)
    open_now = [3]
    metrics.count_connections("attested", lambda: open_now[0])
    got = samples(metrics)
    key = (("phase", "infer"), ("protocol", "grpc"))
    assert got[("blindai_inference_phase_duration_seconds_count", key)] == 1
    assert got[("blindai_inference_phase_duration_seconds_sum", key)] == pytest.approx(0.002)
    assert got[("blindai_active_connections", (("port", "attested"),))] == 3
    open_now[0] = 1
    assert samples(metrics)[("blindai_active_connections", (("port", "attested"),))] == 1


def test_metrics_route_serves_the_text_format(client) -> None:
    import asyncio

    http, _ = client

    async def scrape() -> httpx.Response:
        async with http:
            return await http.get("/metrics")

    reply = asyncio.run(scrape())
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(reply.text)}
    assert {"blindai_http_requests", "blindai_models_loaded"} <= names


def test_model_series_carry_only_public_ids_and_go_with_the_model() -> None:
    metrics = Metrics()
    timing = Timing()
    timing.add("infer", 2_000_000)
    metrics.observe_model(model_id="pub-id", public=True, success=True, timing=timing)
    metrics.observe_model(model_id="pub-id", public=True, success=False, timing=timing)
    metrics.observe_model(model_id="priv-id", public=False, success=True, timing=timing)
    got = samples(metrics)
    count = "blindai_model_inference_requests_total"
    assert got[(count, (("model", "pub-id"), ("outcome", "success")))] == 1
    assert got[(count, (("model", "pub-id"), ("outcome", "failure")))] == 1
    assert got[(count, (("model", "private"), ("outcome", "success")))] == 1
    duration = ("blindai_model_inference_duration_seconds_sum", (("model", "pub-id"),))
    assert got[duration] == pytest.approx(0.002)
    assert "priv-id" not in metrics.render().decode()
    metrics.forget_model("pub-id")
    metrics.forget_model("never-seen")  # nothing to drop: no error
    assert "pub-id" not in metrics.render().decode()
    assert samples(metrics)[(count, (("model", "private"), ("outcome", "success")))] == 1


def _documented_metrics() -> dict[str, tuple[str, ...]]:
    """docs/metrics.md's table rows: each metric name it lists, with the label names of its row
    (the backticked words of the labels cell, outside parentheses)."""
    text = (Path(__file__).resolve().parents[3] / "docs" / "metrics.md").read_text()
    documented = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| `blindai_") or len(cells) < 3:
            continue
        labels = cells[1]
        while re.search(r"\([^()]*\)", labels):
            labels = re.sub(r"\([^()]*\)", "", labels)
        for name in re.findall(r"`(blindai_[a-z_]+)`", cells[0]):
            documented[name] = tuple(re.findall(r"`([a-z_]+)`", labels))
    return documented


def test_docs_metrics_md_lists_every_metric_with_its_labels() -> None:
    """The names and labels of docs/metrics.md are those a server's ``/metrics`` exposes (the
    text format's counters end in ``_total``), no more and no fewer."""
    metrics = Metrics()
    exposed = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        suffix = "_total" if family.type == "counter" else ""
        if family.name.endswith("_created"):
            continue
        exposed[family.name + suffix] = family.name
    labels = {
        m._name + ("_total" if m._type == "counter" else ""): tuple(m._labelnames)
        for m in vars(metrics).values()
        if isinstance(m, Counter | Gauge | Histogram)
    }
    documented = _documented_metrics()
    assert sorted(documented) == sorted(exposed)
    assert {name: labels[name] for name in documented} == documented
