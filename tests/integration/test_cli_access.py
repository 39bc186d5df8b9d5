"""``blindai keys``, ``blindai models``, ``--api-key`` / ``BLINDAI_API_KEY`` and ``--public``,
in subprocesses, against a simulation server with access control."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from blindai.protocol.apikeys import API_KEY
from tests._server import REPO, ServerProcess, start_server
from tests.integration.test_cli import one_error_line, target
from tests.models import add_constant


def cli(*args: str | Path, key: str | None = None, env_key: str | None = None):
    """``python -m blindai ARGS``; ``key`` as --api-key, ``env_key`` as BLINDAI_API_KEY."""
    env = {k: v for k, v in os.environ.items() if k != "BLINDAI_API_KEY"}
    env["PYTHONPATH"] = str(REPO / "src")
    if env_key is not None:
        env["BLINDAI_API_KEY"] = env_key
    flags = ["--api-key", key] if key is not None else []
    return subprocess.run(
        [sys.executable, "-m", "blindai", *map(str, args), *flags],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def admin_key() -> str:
    out = ok(cli("keys", "generate-admin"))
    digest, _, key = out.splitlines()
    assert API_KEY.fullmatch(key) and key.startswith("bai_")
    assert digest == f"--admin-key-sha256 {hashlib.sha256(key.encode()).hexdigest()}"
    return key


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, admin_key: str) -> Iterator[ServerProcess]:
    digest = hashlib.sha256(admin_key.encode()).hexdigest()
    proc = start_server(tmp_path_factory.mktemp("cli-access"), "--admin-key-sha256", digest)
    yield proc
    proc.stop()


def test_keys_create_list_revoke(server: ServerProcess, admin_key: str):
    out = ok(cli("keys", "create", "erin", *target(server), key=admin_key))
    key = out.splitlines()[-1]
    assert API_KEY.fullmatch(key) and key.startswith("bai_")
    assert key not in out.splitlines()[0]
    listed = ok(cli("keys", "list", *target(server), env_key=admin_key))
    assert re.search(r"^erin\tk_[0-9a-f]{16}\t\d{4}-\d\d-\d\dT", listed, re.M)
    assert key not in listed
    ok(cli("models", *target(server), env_key=key))  # the new key works
    assert "revoked key erin" in ok(cli("keys", "revoke", "erin", *target(server), key=admin_key))
    line = one_error_line(cli("models", *target(server), env_key=key), "AuthenticationError", 1)
    assert "invalid API key" in line


def test_upload_public_and_models(server: ServerProcess, admin_key: str, tmp_path: Path):
    keys = {}
    for name in ("frank", "grace"):
        out = ok(cli("keys", "create", name, *target(server), key=admin_key))
        keys[name] = out.splitlines()[-1]
    model = tmp_path / "m.onnx"
    model.write_bytes(add_constant(1))
    out = ok(cli("upload", model, "--name", "mine", *target(server), env_key=keys["frank"]))
    private = out.split()[1]
    out = ok(cli("upload", model, "--public", *target(server), env_key=keys["frank"]))
    public = out.split()[1]
    table = ok(cli("models", *target(server), env_key=keys["grace"])).splitlines()
    assert table[0].split() == [
        "MODEL_ID",
        "NAME",
        "SHA256",
        "OWNER",
        "PUBLIC",
        "BYTES",
        "UPLOADED",
    ]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert public in rows and private not in rows
    sha = hashlib.sha256(add_constant(1)).hexdigest()[:16]
    assert rows[public][1:6] == ["-", sha, "frank", "yes", str(len(add_constant(1)))]
    frank = {
        line.split()[0]
        for line in ok(cli("models", *target(server), key=keys["frank"])).splitlines()
    }
    assert {private, public} <= frank
    # grace may not delete frank's public model; his private one does not exist for her
    one_error_line(cli("delete", public, *target(server), key=keys["grace"]), "PermissionDenied", 1)
    one_error_line(cli("delete", private, *target(server), key=keys["grace"]), "ModelNotFound", 1)
    ok(cli("delete", "mine", *target(server), key=keys["frank"]))
    ok(cli("delete", public, *target(server), key=admin_key))


def test_without_a_key(server: ServerProcess, tmp_path: Path):
    line = one_error_line(cli("models", *target(server)), "AuthenticationError", 1)
    assert "requires an API key" in line
    line = one_error_line(
        cli("keys", "list", *target(server), key="no spaces allowed"), "ConfigurationError", 2
    )
    assert "the API key in --api-key" in line


@pytest.mark.parametrize("fresh", [False, True], ids=["cached-evidence", "fresh"])
def test_attest_host_needs_no_key(server: ServerProcess, fresh: bool):
    """``blindai attest HOST`` sends no key: ``GET /attestation`` on the attested port is open on
    a server with access control, so the evidence is still read there (not on the unattested
    port, as for a server without the route)."""
    ports = ["--unattested-port", str(server.unattested_port)]
    ports += ["--attested-port", str(server.attested_port)]
    flags = ["--simulation", "--fresh"] if fresh else ["--simulation"]
    result = cli("attest", server.host, *ports, *flags)
    assert "kind                   simulation" in ok(result)
    last = result.stderr.splitlines()[-1]
    assert last.startswith("certificate SHA-256 ")
    where = f"verified over GET /attestation on the attested port {server.host}:"
    where += str(server.attested_port) + (", evidence for this client's nonce" if fresh else "")
    assert last.endswith(where)


def test_serve_refuses_a_malformed_admin_hash():
    result = cli("serve", "--simulation", "--admin-key-sha256", "abc")
    line = one_error_line(result, "ConfigurationError", 2)
    assert "64 hex digits" in line


def test_an_open_server_says_so_at_start_up(tmp_path: Path):
    server = start_server(tmp_path)
    try:
        log = server.log()
    finally:
        server.stop()
    assert "WARNING blindai.server: access control: OFF, anyone who reaches" in log
    assert "store: none, models and API keys go when the server stops" in log


@pytest.mark.parametrize("ending", ["\n", "\r\n", " \t"], ids=["LF", "CRLF", "blanks"])
def test_a_key_with_its_line_ending_is_used(server: ServerProcess, admin_key: str, ending: str):
    # KEY=$(cat key.txt) keeps a CR; a key pasted with a blank: both were refused
    ok(cli("models", *target(server), env_key=admin_key + ending))
    ok(cli("models", *target(server), key=f" {admin_key}{ending}"))


@pytest.mark.parametrize("where", ["--api-key", "BLINDAI_API_KEY"])
def test_an_unusable_key_is_named_by_its_source_never_shown(server: ServerProcess, where: str):
    bad = "bai_SeCrEt\x1b[2Jtail"
    if where == "--api-key":
        r = cli("models", *target(server), key=bad)
    else:
        r = cli("models", *target(server), env_key=bad)
    line = one_error_line(r, "ConfigurationError", 2)
    assert f"the API key in {where} is not one a server gives" in line
    assert "SeCrEt" not in r.stdout + r.stderr
