"""A store written with access control, restarted by the operator without it: an open server
lets anyone run and export every model, so it refuses to start on a store holding tenants'
models or API-key records (it served them: the operator downloaded a tenant's private model)."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import pytest

import blindai
from blindai.protocol.apikeys import generate_key
from tests._server import ServerProcess, start_server
from tests.models import add_constant

ADMIN_KEY = generate_key()
ADMIN_SHA = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()


def connect(server: ServerProcess, key: str | None) -> blindai.Connection:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", blindai.SimulationModeWarning)
        return blindai.connect(server.host, simulation_mode=True, api_key=key, **server.ports)


def closed_store(tmp_path: Path, *, model: bool) -> tuple[str, str | None]:
    """A store with Alice's key record, or (``model``) her private model, her key revoked."""
    store = str(tmp_path / "store")
    server = start_server(tmp_path, "--admin-key-sha256", ADMIN_SHA, "--store", store)
    private = None
    try:
        with connect(server, ADMIN_KEY) as admin:
            alice_key = admin.create_key("alice").key
            if model:
                with connect(server, alice_key) as alice:
                    private = alice.upload_model(add_constant(7)).model_id
                admin.revoke_key("alice")  # no key record left: her model stays
    finally:
        server.stop()
    return store, private


def test_an_open_restart_does_not_serve_a_tenants_private_model(tmp_path: Path):
    store, private = closed_store(tmp_path, model=True)
    with pytest.raises(RuntimeError, match="the store holds models uploaded with access control"):
        start_server(tmp_path, "--store", store, "--allow-model-export")
    server = start_server(tmp_path, "--admin-key-sha256", ADMIN_SHA, "--store", store)
    try:
        with connect(server, ADMIN_KEY) as admin:
            assert [m.model_id for m in admin.list_models()] == [private]
    finally:
        server.stop()


def test_an_open_restart_refuses_a_store_with_key_records(tmp_path: Path):
    store, _ = closed_store(tmp_path, model=False)
    with pytest.raises(RuntimeError, match="the store holds API-key records"):
        start_server(tmp_path, "--store", store)
