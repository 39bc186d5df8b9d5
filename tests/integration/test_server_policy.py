"""A policy's [server] section, checked on each connection against what the server states over
the attested channel: the admin key's hash, access control, model export. A server started
otherwise is refused before any request is sent."""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import blindai
from blindai.attestation.policy import Policy
from blindai.attestation.server_config import ServerPolicy
from blindai.client import attest
from blindai.errors import ConfigurationError, PolicyError
from blindai.protocol.apikeys import generate_key
from tests._server import ServerProcess, start_server

ADMIN_KEY = generate_key()
ADMIN_SHA = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
OPERATORS_KEY = generate_key()
OPERATORS_SHA = hashlib.sha256(OPERATORS_KEY.encode()).hexdigest()


@pytest.fixture(scope="module")
def closed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("closed"), "--admin-key-sha256", ADMIN_SHA)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def exporting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """An operator's own admin key, with model export on."""
    server = start_server(
        tmp_path_factory.mktemp("exporting"),
        "--admin-key-sha256",
        OPERATORS_SHA,
        "--allow-model-export",
    )
    yield server
    server.stop()


def connect(server: ServerProcess, policy: Policy, key: str = ADMIN_KEY) -> blindai.Connection:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", blindai.SimulationModeWarning)
        return blindai.connect(
            server.host, simulation_mode=True, policy=policy, api_key=key, **server.ports
        )


def test_the_expected_configuration_is_accepted(closed: ServerProcess):
    policy = Policy.from_toml(
        f'[server]\nadmin_key_sha256 = "{ADMIN_SHA.upper()}"\nallow_model_export = false\n'
    )
    with connect(closed, policy) as conn:
        assert conn.list_models() == []


def test_an_operators_admin_key_or_model_export_is_refused_before_any_request(
    exporting: ServerProcess,
):
    """The operator configured the hash of a key of their own (so they are the admin) and
    turned model export on: the tenant's client refuses at connect, naming both."""
    policy = Policy(server=ServerPolicy(admin_key_sha256=ADMIN_SHA, allow_model_export=False))
    before = exporting.log()
    with pytest.raises(PolicyError) as refused:
        connect(exporting, policy, key=generate_key())
    text = str(refused.value)
    assert "server.admin_key_sha256" in text and OPERATORS_SHA in text
    assert "server.allow_model_export: expected false, got true" in text
    # nothing but the evidence request reached the attested ports: no key, no model call
    time.sleep(0.2)  # any request the client sent is logged by now
    lines = exporting.wait_for_log("attested GET /attestation")[len(before) :].splitlines()
    reached = [line.split("blindai.access: ")[1] for line in lines if "blindai.access: " in line]
    attested = [line.rsplit(" ", 2)[0] for line in reached if not line.startswith("unattested")]
    assert attested == ["attested GET /attestation"]


def test_attest_holds_the_server_to_the_section_too(
    closed: ServerProcess, exporting: ServerProcess
):
    """``attest()`` (``blindai attest HOST``) verifies over an attested connection, so it
    checks [server] as connect does (the docs said it did not)."""
    policy = Policy(server=ServerPolicy(admin_key_sha256=ADMIN_SHA, allow_model_export=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", blindai.SimulationModeWarning)
        found = attest(
            closed.host,
            closed.unattested_port,
            simulation_mode=True,
            policy=policy,
            attested_server_port=closed.attested_port,
        )
        assert found.server_info["admin_key_sha256"] == ADMIN_SHA
        with pytest.raises(PolicyError, match=r"server\.allow_model_export"):
            attest(
                exporting.host,
                exporting.unattested_port,
                simulation_mode=True,
                policy=policy,
                attested_server_port=exporting.attested_port,
            )


def test_an_open_server_is_refused_when_the_policy_wants_access_control(tmp_path: Path):
    server = start_server(tmp_path)
    try:
        with pytest.raises(PolicyError, match=r"server\.access_control: expected true, got false"):
            connect(server, Policy(server=ServerPolicy(access_control=True)), key=None)
        with connect(server, Policy(server=ServerPolicy(access_control=False)), key=None) as c:
            assert c.list_models() == []
    finally:
        server.stop()


def test_a_malformed_server_section_is_a_configuration_error():
    for text, problem in [
        ('[server]\nadmin_key_sha256 = "abc"\n', "64 hex digits"),
        ("[server]\nallow_model_export = 1\n", "true or false"),
        ("[server]\nexport = false\n", "unknown key"),
        ("[server]\n", "checks nothing"),
        (f'[server]\nadmin_key_sha256 = "{ADMIN_SHA}"\naccess_control = false\n', "means"),
    ]:
        with pytest.raises(ConfigurationError, match=problem):
            Policy.from_toml(text)


def test_a_store_whose_manifest_was_rebuilt_is_refused(tmp_path: Path):
    """The operator chooses the flags: one start with --store-rebuild-manifest accepts any
    entry put back (a revoked key's record). The server states it for good over the attested
    channel, and a policy with store_manifest_rebuilt = false refuses it at connect."""
    store = str(tmp_path / "store")
    policy = Policy.from_toml("[server]\nstore_manifest_rebuilt = false\n")
    server = start_server(tmp_path, "--store", store)
    try:
        with connect(server, policy, key=None) as conn:
            assert conn.server_info["store_manifest_rebuilt"] is False
    finally:
        server.stop()
    server = start_server(tmp_path, "--store", store, "--store-rebuild-manifest")
    server.stop()
    server = start_server(tmp_path, "--store", store)  # the flag gone, the mark stays
    try:
        with pytest.raises(
            PolicyError, match=r"server\.store_manifest_rebuilt: expected false, got true"
        ):
            connect(server, policy, key=None)
    finally:
        server.stop()
