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


def test_a_store_once_served_under_the_operators_admin_key_is_refused(tmp_path: Path):
    """The operator restarts the store once with the hash of an admin key of their own (they
    are its admin then: they create a key for themselves, which still works after), then with
    the right one. The store keeps every admin key's hash it was served under; a tenant whose
    policy pins the admin key refuses the server, unless the other key is a rotation its policy
    names. Before, the [server] check saw only the current start."""
    from blindai.attestation.policy import Policy
    from blindai.attestation.server_config import ServerPolicy
    from blindai.errors import PolicyError

    store, _ = closed_store(tmp_path, model=False)
    operators = generate_key()
    operators_sha = hashlib.sha256(operators.encode()).hexdigest()
    server = start_server(tmp_path, "--admin-key-sha256", operators_sha, "--store", store)
    try:
        assert "store: served before under 1 other admin key(s)" in server.log()
        with connect(server, operators) as admin:
            admin.create_key("mallory")
    finally:
        server.stop()
    server = start_server(tmp_path, "--admin-key-sha256", ADMIN_SHA, "--store", store)
    try:
        pinned = Policy(server=ServerPolicy(admin_key_sha256=ADMIN_SHA))
        with pytest.raises(PolicyError, match=rf"server\.store_admin_keys: .*{operators_sha}"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", blindai.SimulationModeWarning)
                blindai.connect(
                    server.host,
                    simulation_mode=True,
                    policy=pinned,
                    api_key=ADMIN_KEY,
                    **server.ports,
                )
        rotated = Policy(
            server=ServerPolicy(admin_key_sha256=ADMIN_SHA, previous_admin_keys=(operators_sha,))
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", blindai.SimulationModeWarning)
            with blindai.connect(
                server.host,
                simulation_mode=True,
                policy=rotated,
                api_key=ADMIN_KEY,
                **server.ports,
            ) as admin:
                assert "mallory" in [k.name for k in admin.list_keys()]
    finally:
        server.stop()
