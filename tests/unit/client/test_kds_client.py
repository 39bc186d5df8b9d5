"""The client fetches SEV-SNP certificates from AMD's KDS when the server sends none, if asked.

A loopback HTTP server plays an SEV-SNP BlindAI server on a host without a certificate table:
``/``, ``/info``, ``/quote`` (go-sev-guest's real Milan report) and ``/endorsements`` with no
certificates; the same server also answers like KDS from that set's real VCEK and ASK/ARK. The
report's REPORT_DATA is not the SHA-256 of our certificate, so a client that verified the
report ends in :class:`BindingError`; without certificates it ends in :class:`ChainError`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest

import blindai
from blindai.attestation import Endorsements, EvidenceKind, KdsCertificateSource, Policy
from blindai.attestation._collateral import FetchResponse
from blindai.client._attest import _endorsements, attest_server
from blindai.errors import BindingError, ChainError, CollateralUnavailable
from blindai.protocol.attestation import AttestationReply
from tests.unit.attestation.pcs_fakes import FakeFetcher
from tests.unit.client._attested import attested_fake
from tests.unit.client._loopback import (
    LoopbackServer,
    Route,
    certificate,
    run_cli,
    serve,
    write_policy,
)

NOW = dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)
MEASUREMENT = (
    "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82"
    "705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"
)
CHIP_ID = (
    "3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8"
    "e53786184ca39e359669a2b76a1936776b564ea464cdce40c05f63c9b610c5068b006b5d"
)
VCEK_PATH = f"/vcek/v1/Milan/{CHIP_ID}?blSPL=02&teeSPL=00&snpSPL=05&ucodeSPL=68"
CHAIN_PATH = "/vcek/v1/Milan/cert_chain"
MIN_TCB = "0200000000000544"  # the set's REPORTED_TCB: bootloader 2, snp 5, microcode 68
POLICY_TOML = (
    f'[sev_snp]\nmeasurement = "{MEASUREMENT}"\nallow_debug = true\nmin_tcb = "{MIN_TCB}"\n'
)
KDS_PATHS = [VCEK_PATH, CHAIN_PATH]


def _kds_fetcher(server: LoopbackServer) -> FakeFetcher:
    prefix = "https://kdsintf.amd.com"
    return FakeFetcher({prefix + p: FetchResponse(server.routes[p][0]) for p in KDS_PATHS})


def _kds_asked(server: LoopbackServer) -> list[str]:
    return [p for p in server.asked if p.startswith("/vcek/")]


@pytest.fixture
def snp_set(evidence_dir: Path) -> Path:
    return evidence_dir / "sev-snp" / "go-sev-guest-milan"


@pytest.fixture
def server(snp_set: Path) -> Iterator[LoopbackServer]:
    routes: dict[str, Route] = {
        "/": (cbor2.dumps(certificate()), {}),
        "/info": (cbor2.dumps({"tee": "sev-snp"}), {}),
        "/quote": (cbor2.dumps((snp_set / "report.bin").read_bytes()), {}),
        "/endorsements": (cbor2.dumps({"collateral": None, "certificates": []}), {}),
        VCEK_PATH: ((snp_set / "vcek.der").read_bytes(), {}),
        CHAIN_PATH: ((snp_set / "ask_ark_milan.pem").read_bytes(), {}),
    }
    with serve(routes) as state:
        yield state


def _policy() -> Policy:
    return Policy.from_mapping(
        {"sev_snp": {"measurement": MEASUREMENT, "allow_debug": True, "min_tcb": MIN_TCB}}
    )


def _attest(server: LoopbackServer, source: KdsCertificateSource | None) -> None:
    plain = server.plain()
    try:
        attest_server(
            plain,
            simulation_mode=False,
            policy=_policy(),
            now=NOW,
            snp_certificate_source=source,
        )
    finally:
        plain.close()


def test_without_a_source_there_are_no_certificates(server: LoopbackServer):
    with pytest.raises(ChainError, match="no certificates"):
        _attest(server, None)
    assert _kds_asked(server) == []


def test_with_a_kds_source_the_report_verifies_then_the_binding_fails(server: LoopbackServer):
    fetcher = _kds_fetcher(server)
    with pytest.raises(BindingError):
        _attest(server, KdsCertificateSource(fetcher))
    assert fetcher.asked == ["https://kdsintf.amd.com" + p for p in KDS_PATHS]


def test_online_source_against_a_loopback_kds(server: LoopbackServer):
    with pytest.raises(BindingError):
        _attest(server, KdsCertificateSource.online(server.url))
    assert _kds_asked(server) == KDS_PATHS


def test_the_source_is_not_trusted(server: LoopbackServer):
    """A KDS answering with a chain to no pinned ARK: the verifier refuses it."""
    fetcher = _kds_fetcher(server)
    pem = fetcher.answers["https://kdsintf.amd.com" + CHAIN_PATH].body
    first = pem.index(b"-----END CERTIFICATE-----") + len(b"-----END CERTIFICATE-----\n")
    fetcher.answers["https://kdsintf.amd.com" + CHAIN_PATH] = FetchResponse(
        pem[:first] + pem[:first]
    )
    with pytest.raises(ChainError):
        _attest(server, KdsCertificateSource(fetcher))


def test_kds_failure_is_collateral_unavailable(server: LoopbackServer):
    with pytest.raises(CollateralUnavailable, match="no VCEK from KDS"):
        _attest(server, KdsCertificateSource(FakeFetcher({})))


def test_certificates_from_the_server_win_over_the_source(server: LoopbackServer, snp_set: Path):
    certs = [(snp_set / "vcek.der").read_bytes(), (snp_set / "ask_ark_milan.pem").read_bytes()]
    server.routes["/endorsements"] = (
        cbor2.dumps({"collateral": None, "certificates": certs}),
        {},
    )
    unused = FakeFetcher({})
    with pytest.raises(BindingError):
        _attest(server, KdsCertificateSource(unused))
    assert unused.asked == []


def test_no_kds_fetch_for_other_kinds(server: LoopbackServer):
    unused = FakeFetcher({})
    plain = server.plain()
    try:
        found = _endorsements(
            plain, EvidenceKind.NITRO, b"doc", snp_certificate_source=KdsCertificateSource(unused)
        )
    finally:
        plain.close()
    assert found == Endorsements()
    assert unused.asked == []


def test_vlek_report_is_collateral_unavailable(server: LoopbackServer, evidence_dir: Path):
    report = (evidence_dir / "sev-snp/trustee-milan-vlek/report.bin").read_bytes()
    server.routes["/quote"] = (cbor2.dumps(report), {})
    with pytest.raises(CollateralUnavailable, match="VLEK"):
        _attest(server, KdsCertificateSource.online(server.url))
    assert _kds_asked(server) == []


def test_connect_passes_the_source_on(server: LoopbackServer, snp_set: Path):
    """connect() verifies at the current time, within this VCEK's validity (to 2029).

    The attested port answers ``/attestation`` with the SNP report and no certificates."""
    report = (snp_set / "report.bin").read_bytes()

    def reply(cert: bytes, nonce: bytes | None) -> AttestationReply:
        return AttestationReply(kind="sev-snp", certificate=cert, evidence=report)

    with attested_fake(reply) as port:
        with pytest.raises(ChainError, match="no certificates"):
            blindai.connect("127.0.0.1", attested_server_port=port.port, policy=_policy())
        with pytest.raises(BindingError):
            blindai.connect(
                "127.0.0.1",
                attested_server_port=port.port,
                policy=_policy(),
                timeout=10,
                snp_certificate_source=KdsCertificateSource.online(server.url),
            )
    assert _kds_asked(server) == KDS_PATHS


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    return write_policy(tmp_path, POLICY_TOML)


@pytest.mark.parametrize("route", ["attestation", "none"])
def test_cli_attest_host_with_kds(
    server: LoopbackServer,
    snp_set: Path,
    policy_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    route: str,
):
    """The report from ``GET /attestation`` on the attested port, or, where that route is not
    found, from the unattested port (the 0.6 flow)."""
    report = (snp_set / "report.bin").read_bytes()

    def reply(
        cert: bytes, nonce: bytes | None
    ) -> AttestationReply | tuple[int, dict[str, str], bytes]:
        if route == "none":
            return 404, {"Content-Type": "text/plain"}, b"Not Found"
        return AttestationReply(kind="sev-snp", certificate=cert, evidence=report)

    with attested_fake(reply) as port:
        host = ["attest", "127.0.0.1", "--unattested-port", str(server.port)]
        host += ["--attested-port", str(port.port)]
        common = [*host, "--policy", str(policy_file), "--at", "2025-06-01T00:00:00Z"]
        assert run_cli(monkeypatch, *common) == 1
        assert "ChainError" in capsys.readouterr().err
        assert run_cli(monkeypatch, *common, "--kds", server.url) == 1
        assert "BindingError: the evidence does not bind this TLS certificate" in (
            capsys.readouterr().err
        )
    assert _kds_asked(server) == KDS_PATHS
    assert port.requests == ["GET /attestation", "GET /attestation"]
    assert ("/quote" in server.asked) is (route == "none")


def test_cli_attest_verify_with_kds(
    server: LoopbackServer,
    snp_set: Path,
    policy_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    args = ["attest", "verify", "--kind", "sev-snp", "--evidence", str(snp_set / "report.bin")]
    args += ["--policy", str(policy_file), "--at", "2025-06-01T00:00:00Z", "--json"]
    assert run_cli(monkeypatch, *args) == 1
    assert "ChainError" in capsys.readouterr().err
    assert run_cli(monkeypatch, *args, "--kds", server.url) == 0
    assert f'"measurement": "{MEASUREMENT}"' in capsys.readouterr().out
    assert _kds_asked(server) == KDS_PATHS


def test_cli_kds_flag_defaults_to_amd(
    monkeypatch: pytest.MonkeyPatch, snp_set: Path, policy_file: Path
):
    """``--kds`` alone means AMD's KDS; --certs given: KDS is not asked."""
    from blindai.cli import _attest as cli_attest

    urls: list[str] = []

    def fake_source(url: str) -> KdsCertificateSource:
        urls.append(url)
        return KdsCertificateSource(FakeFetcher({}))

    monkeypatch.setattr(cli_attest, "_kds_source", fake_source)
    args = ["attest", "verify", "--kind", "sev-snp", "--evidence", str(snp_set / "report.bin")]
    args += ["--at", "2025-06-01T00:00:00Z", "--policy", str(policy_file)]
    assert run_cli(monkeypatch, *args, "--kds") == 1
    assert urls == ["https://kdsintf.amd.com"]
    certs = [str(snp_set / "vcek.der"), str(snp_set / "ask_ark_milan.pem")]
    assert run_cli(monkeypatch, *args, "--kds", "--certs", *certs) == 0
    assert urls == ["https://kdsintf.amd.com"]
