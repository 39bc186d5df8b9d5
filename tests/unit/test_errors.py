"""The exception tree and the public surface."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import blindai
import blindai.errors
import blindai.pipeline
from blindai.errors import (
    BlindAIError,
    ConfigurationError,
    EvidenceError,
    InvalidInput,
    NetworkError,
    PayloadTooLarge,
    PolicyError,
    RegistryFull,
    RequestTimeout,
    ServerError,
    Violation,
    WrongPort,
)

CLASSES = [
    obj
    for obj in (getattr(blindai.errors, name) for name in blindai.errors.__all__)
    if isinstance(obj, type) and issubclass(obj, Exception)
]


def test_every_error_descends_from_the_root():
    for name in blindai.errors.__all__:
        obj = getattr(blindai.errors, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, BlindAIError), name


def test_policy_error_lists_every_violation():
    err = PolicyError([Violation("a", "1", "2"), Violation("b", "x", "y")])
    assert err.diagnostics().splitlines() == [
        "PolicyError: a: expected 1, got 2",
        "PolicyError: b: expected x, got y",
    ]


def test_server_error_has_status():
    err = ServerError("gone", status_code=404)
    assert err.status_code == 404 and "gone" in err.diagnostics()


@pytest.mark.parametrize("cls", [InvalidInput, PayloadTooLarge, RegistryFull])
def test_raised_without_a_status_an_error_takes_its_classs(cls: type[ServerError]):
    assert cls("x").status_code == cls.http_status
    assert cls("x", status_code=599).status_code == 599  # what a server answered


@pytest.mark.parametrize("cls", CLASSES, ids=[c.__name__ for c in CLASSES])
def test_the_docstring_tree_draws_every_class_with_its_status(cls: type[BlindAIError]):
    doc = blindai.errors.__doc__ or ""
    lines = [ln for ln in doc.splitlines() if re.search(rf"(── |^    ){cls.__name__}\b", ln)]
    assert len(lines) == 1, f"{cls.__name__} is not drawn once in the tree"
    status = re.search(rf"{cls.__name__}\s+(\d{{3}})\b", lines[0])
    if "http_status" in vars(cls) or cls is BlindAIError:
        assert status is not None and int(status[1]) == cls.http_status, lines[0]


def test_no_raise_site_in_the_server_states_a_status():
    server = Path(blindai.__file__).parent / "server"
    offenders = [str(path) for path in server.rglob("*.py") if "status_code=" in path.read_text()]
    assert offenders == []


def test_core_module_path_of_0_6_3():
    from blindai.core import connect

    assert connect is blindai.connect


def test_network_errors_are_not_server_errors():
    assert issubclass(RequestTimeout, NetworkError)
    assert not issubclass(NetworkError, ServerError)
    err = NetworkError("cannot reach the unattested port 10.0.0.1:9923: Connection refused")
    assert err.diagnostics() == (
        "NetworkError: cannot reach the unattested port 10.0.0.1:9923: Connection refused"
    )


def test_wrong_port_is_a_configuration_error_with_fields():
    err = WrongPort("port 9924 speaks TLS", port=9924, role="unattested", found="TLS")
    assert isinstance(err, ConfigurationError)
    assert (err.port, err.role, err.found) == (9924, "unattested", "TLS")
    assert err.diagnostics() == "WrongPort: port 9924 speaks TLS"


def test_diagnostics_escape_what_is_not_printable():
    """A message may quote a server or its evidence (a Nitro field name, a reply's value): a
    newline or a terminal escape there forged lines of the CLI's output."""
    forged = EvidenceError("unknown field \x1b[2J\nVerificationError: none, all OK\r")
    assert forged.diagnostics() == (
        "EvidenceError: unknown field \\x1b[2J\\nVerificationError: none, all OK\\r"
    )
    assert EvidenceError("évidence ok").diagnostics() == "EvidenceError: évidence ok"
    policy = PolicyError(
        [Violation("module_id", "i-1", "i-2\nPolicyError: none"), Violation("a", "b", "c")]
    )
    assert policy.diagnostics().splitlines() == [
        "PolicyError: module_id: expected i-1, got i-2\\nPolicyError: none",
        "PolicyError: a: expected b, got c",
    ]
