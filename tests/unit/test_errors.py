"""The exception tree and the public surface."""

from __future__ import annotations

import re

import blindai
import blindai.attestation
import blindai.client
import blindai.errors
import blindai.pipeline
from blindai.errors import (
    BlindAIError,
    ConfigurationError,
    NetworkError,
    PolicyError,
    RequestTimeout,
    ServerError,
    Violation,
    WrongPort,
)


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


def test_public_names_match_all():
    for module in (blindai, blindai.client, blindai.attestation, blindai.errors, blindai.pipeline):
        public = {n for n in vars(module) if not n.startswith("_")}
        exported = set(module.__all__) - {"__version__"}
        assert exported <= public | set(dir(module))
        for name in module.__all__:
            assert hasattr(module, name), (module.__name__, name)


def test_core_module_path_of_0_6_3():
    from blindai.core import connect

    assert connect is blindai.connect


def test_the_tree_in_the_docstring_names_every_error():
    doc = blindai.errors.__doc__ or ""
    for name in blindai.errors.__all__:
        obj = getattr(blindai.errors, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and obj is not BlindAIError:
            assert re.search(rf"── {name}\b", doc), name


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
