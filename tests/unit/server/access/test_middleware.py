"""The access middleware and the /models and /keys routes, in process (httpx ASGI transport)."""

from __future__ import annotations

import hashlib
import io
import json
import re
from typing import Any

import cbor2
import pytest

from blindai.protocol.apikeys import generate_key
from blindai.protocol.names import ERROR_HEADER
from blindai.server.access import AuditAction
from blindai.server.access.middleware import OPEN_PATHS, audit_action, caller_of
from tests.models import add_constant
from tests.unit.server._inprocess import InProcess, in_process

ADMIN_KEY = generate_key()
ADMIN_SHA = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def server():
    with in_process(admin_key_sha256=ADMIN_SHA) as s:
        yield s


def tenant(server: InProcess, name: str) -> str:
    resp = server.management.post(
        "/keys/create", content=cbor2.dumps({"name": name}), headers=auth(ADMIN_KEY)
    )
    assert resp.status_code == 200, resp.content
    reply: dict[str, Any] = cbor2.loads(resp.content)
    assert set(reply) == {"name", "key_id", "created_ns", "key"}
    return str(reply["key"])


@pytest.mark.parametrize(
    ("method", "path", "action"),
    [
        ("POST", "/upload", AuditAction.UPLOAD),
        ("POST", "/run", AuditAction.RUN),
        ("POST", "/delete", AuditAction.DELETE),
        ("POST", "/export", AuditAction.EXPORT),
        ("GET", "/models", AuditAction.LIST),
        ("GET", "/keys", AuditAction.KEY_LIST),
        ("POST", "/keys/create", AuditAction.KEY_CREATE),
        ("POST", "/keys/revoke", AuditAction.KEY_REVOKE),
        ("POST", "/v2/models/m/infer", AuditAction.RUN),
        ("POST", "/v2/models/m/versions/1/infer", AuditAction.RUN),
        ("GET", "/v2/models/m", AuditAction.METADATA),
        ("GET", "/v2/models/m/ready", AuditAction.METADATA),
        ("GET", "/v2/models/m/versions/1", AuditAction.METADATA),
        ("GET", "/v2/models/stats", AuditAction.STATISTICS),
        ("GET", "/v2/models/m/stats", AuditAction.STATISTICS),
        ("GET", "/v2/models/m/versions/2/stats", AuditAction.STATISTICS),
        ("POST", "/v2/repository/index", AuditAction.LIST),
        ("POST", "/v2/repository/models/m/load", AuditAction.LOAD),
        ("POST", "/v2/repository/models/m/unload", AuditAction.UNLOAD),
        ("GET", "/metrics", None),
        ("GET", "/v2/health/live", None),
        ("GET", "/v2", None),
        ("GET", "/upload", None),
        ("POST", "/v2/models/m/infer/extra", None),
        ("GET", "/", None),
    ],
)
def test_audit_actions(method: str, path: str, action: AuditAction | None):
    assert audit_action(method, path) is action


def test_head_requests_are_audited_as_their_get(server: InProcess):
    """Starlette answers HEAD on every GET route, running the route (the model lookup, the key
    listing) and dropping the body; the audit log, which matched GET only, missed them."""
    for method in ("GET", "HEAD"):
        assert audit_action(method, "/keys") is AuditAction.KEY_LIST
        assert audit_action(method, "/v2/models/m") is AuditAction.METADATA
    stream = server.apps.access.audit._stream
    assert isinstance(stream, io.StringIO)
    before = len(stream.getvalue().splitlines())
    assert server.management.request("HEAD", "/keys", headers=auth(ADMIN_KEY)).status_code == 200
    assert (
        server.attested.request("HEAD", "/v2/models/m", headers=auth(ADMIN_KEY)).status_code == 404
    )
    lines = [json.loads(line) for line in stream.getvalue().splitlines()[before:]]
    assert [(line["key"], line["action"], line["status"]) for line in lines] == [
        ("admin", "key-list", 200),
        ("admin", "metadata", 404),
    ]


def test_deny_by_default(server: InProcess):
    for path in ("/no-such-route", "/models", "/v2/models/x", "/v2/repository/index"):
        resp = server.attested.get(path)
        assert resp.status_code == 401, path
        assert resp.headers[ERROR_HEADER] == "AuthenticationError"
        assert resp.headers["www-authenticate"] == "Bearer"
    assert server.attested.get("/no-such-route", headers=auth(ADMIN_KEY)).status_code == 404


@pytest.mark.parametrize("path", sorted(OPEN_PATHS))
def test_probes_server_metadata_and_gpu_evidence_need_no_key(server: InProcess, path: str):
    resp = server.attested.get(path)
    # without a GPU, /gpu-evidence answers 404; never 401
    assert resp.status_code == (404 if path == "/gpu-evidence" else 200), resp.content


def test_refusals_speak_the_protocol_of_the_path(server: InProcess):
    v2 = server.attested.post("/v2/models/m/infer", content=b"{}")
    assert v2.json() == {
        "error": "this server requires an API key (Authorization: Bearer KEY)",
        "type": "AuthenticationError",
    }
    v06 = server.attested.post("/run", content=cbor2.dumps({}), headers={"Authorization": "x"})
    assert cbor2.loads(v06.content) == "the Authorization header must be 'Bearer KEY'"


def test_the_unattested_port_ignores_keys(server: InProcess):
    assert server.unattested.get("/").status_code == 200
    info = cbor2.loads(server.unattested.get("/info").content)
    assert info["access_control"] is True and "api-keys" in info["capabilities"]


def test_models_lists_what_the_caller_may_see(server: InProcess):
    alice, bob = tenant(server, "alice"), tenant(server, "bob")
    body = {"model": add_constant(1), "model_name": "secret"}
    resp = server.management.post("/upload", content=cbor2.dumps(body), headers=auth(alice))
    private = cbor2.loads(resp.content)["model_id"]
    body = {"model": add_constant(2), "public": True}
    resp = server.management.post("/upload", content=cbor2.dumps(body), headers=auth(alice))
    public = cbor2.loads(resp.content)["model_id"]
    seen = cbor2.loads(server.management.get("/models", headers=auth(bob)).content)
    assert [m["model_id"] for m in seen] == [public]
    (entry,) = seen
    assert entry["owner"] == "alice" and entry["public"] is True and entry["name"] is None
    assert entry["hash"] == hashlib.sha256(add_constant(2)).digest()
    assert entry["size"] == len(add_constant(2)) and isinstance(entry["uploaded_ns"], int)
    mine = cbor2.loads(server.management.get("/models", headers=auth(alice)).content)
    assert [m["model_id"] for m in mine] == [private, public]


@pytest.mark.parametrize(
    "body",
    [b"", b"\xff", cbor2.dumps([]), cbor2.dumps({"name": 3}), cbor2.dumps({"name": "a b"})],
)
def test_malformed_key_requests_are_400(server: InProcess, body: bytes):
    resp = server.management.post("/keys/create", content=body, headers=auth(ADMIN_KEY))
    assert resp.status_code == 400
    assert resp.headers[ERROR_HEADER] == "InvalidInput"


def test_a_public_field_of_another_type_is_400(server: InProcess):
    body = {"model": add_constant(1), "public": "yes"}
    resp = server.management.post("/upload", content=cbor2.dumps(body), headers=auth(ADMIN_KEY))
    assert resp.status_code == 400 and cbor2.loads(resp.content) == "public must be a boolean"


def test_an_open_server_has_no_keys_to_manage():
    with in_process() as server:
        resp = server.management.get("/keys")
        assert resp.status_code == 403
        assert "access control is off" in cbor2.loads(resp.content)
        assert server.management.get("/models").status_code == 200


def test_routes_fail_closed_without_the_middleware():
    from blindai.errors import AuthenticationError

    with pytest.raises(AuthenticationError, match="not authenticated"):
        caller_of({"type": "http", "state": {}})


def test_metrics_on_the_management_port_need_a_key(server: InProcess):
    assert server.management.get("/metrics").status_code == 401
    resp = server.management.get("/metrics", headers=auth(ADMIN_KEY))
    assert resp.status_code == 200 and "blindai_" in resp.text


def test_export_gives_a_models_bytes_to_its_owner_only():
    with in_process(admin_key_sha256=ADMIN_SHA, allow_model_export=True) as server:
        alice, bob = tenant(server, "alice"), tenant(server, "bob")
        body = {"model": add_constant(1), "public": True}
        resp = server.management.post("/upload", content=cbor2.dumps(body), headers=auth(alice))
        model_id = cbor2.loads(resp.content)["model_id"]
        ask = cbor2.dumps({"model_id": model_id})
        mine = server.management.post("/export", content=ask, headers=auth(alice))
        assert mine.status_code == 200 and cbor2.loads(mine.content)["model"] == add_constant(1)
        for key in (bob, ADMIN_KEY):  # a public model runs for bob; its bytes stay alice's
            refused = server.management.post("/export", content=ask, headers=auth(key))
            assert refused.status_code == 403, key
            assert "only the key that uploaded" in cbor2.loads(refused.content)
        listed = cbor2.loads(server.management.get("/models", headers=auth(bob)).content)
        assert [(m["model_id"], m["owner"], m["public"]) for m in listed] == [
            (model_id, "alice", True)
        ]


def _routes(app: Any) -> list[Any]:
    """The routes of the Starlette app under an app's middlewares."""
    while not hasattr(app, "routes"):
        app = app.app
    return list(app.routes)


#: routes that touch no model and no key: nothing for the audit log
_UNAUDITED = {("GET", "/metrics")} | {
    (method, "/v2/{rest:path}") for method in ("GET", "POST", "PUT", "DELETE")
}  # the v2 routes this server does not serve (404 or 501)


def test_every_route_a_key_may_reach_is_audited_or_open():
    """Each route on the attested and management ports either needs no key (OPEN_PATHS) or
    has an audit action: a route added without one (as POST /export was) fails here."""
    with in_process(admin_key_sha256=ADMIN_SHA) as s:
        apps = (s.apps.attested, s.apps.management)
        seen = []
        for route in (r for app in apps for r in _routes(app)):
            path = re.sub(r"\{[^}]+\}", "m", route.path)
            for method in sorted(route.methods - {"HEAD"}):
                if (method, route.path) in _UNAUDITED or path in OPEN_PATHS:
                    continue
                seen.append(route.path)
                assert audit_action(method, path) is not None, f"{method} {route.path}"
    assert {"/export", "/upload", "/keys/create", "/run"} <= set(seen)
