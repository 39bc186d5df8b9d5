"""Finding replicas: addresses as given, DNS names resolved to every address, no duplicates."""

from __future__ import annotations

import socket
from typing import Any

import pytest

import blindai
from blindai.client.replicas import resolve_replicas
from blindai.errors import ConfigurationError, NetworkError


def test_addresses_are_kept_in_order_without_duplicates():
    assert resolve_replicas(["127.0.0.3", "127.0.0.2", "127.0.0.3"]) == ["127.0.0.3", "127.0.0.2"]
    assert resolve_replicas(["[::1]", "::1"]) == ["::1"]


def test_a_name_gives_every_address(monkeypatch: pytest.MonkeyPatch):
    """A headless Service's name resolves to one address per ready pod (and per family)."""

    def getaddrinfo(name: str, port: Any, type: int = 0) -> list[Any]:
        assert name == "blindai-replicas.blindai.svc" and type == socket.SOCK_STREAM
        v4 = [(socket.AF_INET, type, 6, "", (f"10.0.0.{i}", 0)) for i in (7, 5, 7)]
        v6 = [(socket.AF_INET6, type, 6, "", ("fd00::7", 0, 0, 0))]
        return v4 + v6

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    assert resolve_replicas(["blindai-replicas.blindai.svc"]) == ["10.0.0.7", "10.0.0.5"]


def test_a_name_with_ipv6_only(monkeypatch: pytest.MonkeyPatch):
    def getaddrinfo(name: str, port: Any, type: int = 0) -> list[Any]:
        return [(socket.AF_INET6, type, 6, "", ("fd00::1", 0, 0, 0))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    assert resolve_replicas(["v6-only"]) == ["fd00::1"]


def test_localhost_resolves():
    assert resolve_replicas(["localhost"]) == ["127.0.0.1"]


@pytest.mark.parametrize("names", [[], [""], [" "]])
def test_nothing_named(names: list[str]):
    with pytest.raises(ConfigurationError):
        resolve_replicas(names)


def test_an_unknown_name():
    with pytest.raises(NetworkError, match=r"cannot resolve 'no-such-host\.invalid'"):
        resolve_replicas(["no-such-host.invalid"])


@pytest.mark.parametrize("name", ["a..b", "x" * 64, "replica." + "y" * 64 + ".svc"])
def test_a_name_the_resolver_cannot_encode_is_a_configuration_error(name: str):
    """An empty or over-long label made the idna codec raise UnicodeError: a traceback in
    blindai upload --replicas, or in blindai.connect."""
    with pytest.raises(ConfigurationError, match="is not a valid host name"):
        resolve_replicas([name])
    with pytest.raises(ConfigurationError, match="is not a valid host name"):
        blindai.connect(name, simulation_mode=True, timeout=1)


@pytest.mark.parametrize("port", [0, 65536, 99240, -1])
def test_a_port_out_of_range_is_a_configuration_error(port: int):
    """The resolver took 99240 (a typo of 9924) modulo 65536: the client went to port 33704."""
    with pytest.raises(ConfigurationError, match=f"the attested port {port} is not a TCP port"):
        blindai.connect("127.0.0.1", attested_server_port=port, simulation_mode=True, timeout=1)
