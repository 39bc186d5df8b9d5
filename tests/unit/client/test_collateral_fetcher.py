"""The client fetches SGX/TDX collateral itself when the server sends none, and only if asked.

A loopback HTTP server plays a TDX BlindAI server started without ``--pccs-url``: ``/``,
``/info``, ``/quote`` (the real Phala TDX v4 quote) and ``/endorsements`` without collateral;
the same server also answers like a PCCS from that set's real collateral files. The quote's
report data is not the SHA-256 of our certificate, so a client that verified the quote ends in
:class:`BindingError`; without collateral it ends in :class:`CollateralUnavailable`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote as urlquote

import cbor2
import pytest

import blindai
from blindai.attestation import Endorsements, EvidenceKind, PcsCollateralSource, Policy
from blindai.attestation.claims import VerifiedClaims
from blindai.attestation.tdx import TdxClaims, TdxPolicy, TdxVerifier
from blindai.client._attest import _endorsements, attest_server
from blindai.errors import BindingError, CollateralError, CollateralUnavailable
from blindai.protocol.attestation import AttestationReply
from tests.unit.attestation.pcs_fakes import FakeFetcher, tdx_answers
from tests.unit.client._attested import attested_fake
from tests.unit.client._loopback import (
    LoopbackServer,
    Route,
    certificate,
    run_cli,
    serve,
    write_policy,
)

NOW = dt.datetime(2025, 7, 1, tzinfo=dt.timezone.utc)  # the README's time for the TDX v4 set
MR_TD = (
    "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a"
    "3520c942a604a407de03ae6dc5f87f27428b2538873118b7"
)
#: the set's RTMR1 and RTMR2 (kernel, command line, initrd), required beside mr_td
BOOT = {
    "rtmr1": "0084452c01668329d4bc06acdf58a7205c26743304509973"
    "949e5619bf81a6a7aea8c323c173019b3093d54e579e9378",
    "rtmr2": "d833feef2cd945148aa38ead2c53e9b7f138190aaaebfc55"
    "1dccd829fc207aa3ba80b70870d7330733642e01d48c3132",
}
POLICY_TOML = f'[tdx]\nmr_td = "{MR_TD}"\n' + "".join(f'{k} = "{v}"\n' for k, v in BOOT.items())


def _pccs_routes(set_dir: Path) -> dict[str, tuple[bytes, dict[str, str]]]:
    """What a PCCS answers for the set, by path (root CA CRL from the PCCS endpoint)."""
    derived = set_dir / "derived"

    def chain(name: str) -> str:
        return urlquote((derived / name).read_text())

    return {
        "/tdx/certification/v4/tcb?fmspc=B0C06F000000": (
            (derived / "tcb_info.json").read_bytes(),
            {"TCB-Info-Issuer-Chain": chain("tcb_info_issuer_chain.pem")},
        ),
        "/tdx/certification/v4/qe/identity": (
            (derived / "qe_identity.json").read_bytes(),
            {"SGX-Enclave-Identity-Issuer-Chain": chain("qe_identity_issuer_chain.pem")},
        ),
        "/sgx/certification/v4/pckcrl?ca=platform&encoding=der": (
            (derived / "pck_crl.der").read_bytes(),
            {"SGX-PCK-CRL-Issuer-Chain": chain("pck_crl_issuer_chain.pem")},
        ),
        "/sgx/certification/v4/rootcacrl": ((derived / "root_ca_crl.der").read_bytes(), {}),
    }


@pytest.fixture
def server(tdx_set: Path) -> Iterator[LoopbackServer]:
    routes: dict[str, Route] = {
        "/": (cbor2.dumps(certificate()), {}),
        "/info": (cbor2.dumps({"tee": "tdx"}), {}),
        "/quote": (cbor2.dumps((tdx_set / "quote.bin").read_bytes()), {}),
        "/endorsements": (cbor2.dumps({"collateral": None, "certificates": []}), {}),
        **_pccs_routes(tdx_set),
    }
    with serve(routes) as state:
        yield state


class RecordingVerifier:
    """TdxVerifier trusting the embedded Intel root; keeps the claims it returned."""

    kind = EvidenceKind.TDX

    def __init__(self) -> None:
        self.inner = TdxVerifier.with_embedded_roots()
        self.claims: list[TdxClaims] = []
        self.endorsements: list[Endorsements | None] = []

    def verify(
        self,
        evidence: bytes,
        policy: Any,
        *,
        now: dt.datetime,
        endorsements: Endorsements | None = None,
    ) -> VerifiedClaims:
        self.endorsements.append(endorsements)
        claims = self.inner.verify(evidence, policy, now=now, endorsements=endorsements)
        self.claims.append(claims)
        return claims


def _policy() -> Policy:
    return Policy(tdx=TdxPolicy.from_mapping({"mr_td": MR_TD, **BOOT}))


def _attest(server: LoopbackServer, **kw: Any) -> RecordingVerifier:
    verifier = RecordingVerifier()
    plain = server.plain()
    try:
        attest_server(plain, simulation_mode=False, policy=_policy(), verifier=verifier, **kw)
    finally:
        plain.close()
    return verifier


def test_without_a_fetcher_tdx_collateral_is_unavailable(server: LoopbackServer):
    with pytest.raises(CollateralUnavailable):
        _attest(server, now=NOW)
    assert not any("certification" in path for path in server.asked)


def test_with_a_fetcher_the_quote_verifies_then_the_binding_fails(
    server: LoopbackServer, tdx_set: Path
):
    fetcher = FakeFetcher(tdx_answers(tdx_set))
    source = PcsCollateralSource(fetcher, clock=lambda: NOW)
    verifier = RecordingVerifier()
    plain = server.plain()
    with pytest.raises(BindingError):
        attest_server(
            plain,
            simulation_mode=False,
            policy=_policy(),
            verifier=verifier,
            now=NOW,
            collateral_fetcher=source,
        )
    plain.close()
    assert len(fetcher.asked) == 4
    (claims,) = verifier.claims  # verification succeeded: binding is checked after it
    assert (claims.tcb_status, claims.mr_td) == ("UpToDate", bytes.fromhex(MR_TD))
    assert server.asked[:4] == ["/", "/info", "/quote", "/endorsements"]
    assert "/collateral" in server.asked  # BlindAI 0.6's map is tried before the fetcher


def test_online_source_against_a_loopback_pccs(server: LoopbackServer):
    with pytest.raises(BindingError):
        _attest(server, now=NOW, collateral_fetcher=PcsCollateralSource.online(server.url))
    assert [p for p in server.asked if "certification" in p] == list(_pccs_routes_keys())


def _pccs_routes_keys() -> list[str]:
    return [
        "/tdx/certification/v4/tcb?fmspc=B0C06F000000",
        "/tdx/certification/v4/qe/identity",
        "/sgx/certification/v4/pckcrl?ca=platform&encoding=der",
        "/sgx/certification/v4/rootcacrl",
    ]


def test_fetched_collateral_is_checked_at_the_verification_time(server: LoopbackServer):
    later = dt.datetime(2025, 8, 1, tzinfo=dt.timezone.utc)  # after every nextUpdate
    with pytest.raises(CollateralError):
        _attest(server, now=later, collateral_fetcher=PcsCollateralSource.online(server.url))


def test_collateral_from_the_server_wins_over_the_fetcher(server: LoopbackServer, tdx_set: Path):
    collateral = (tdx_set / "collateral.json").read_bytes()
    server.routes["/endorsements"] = (
        cbor2.dumps({"collateral": collateral, "certificates": []}),
        {},
    )
    unused = FakeFetcher({})
    plain = server.plain()
    try:
        found = _endorsements(plain, EvidenceKind.TDX, b"quote", PcsCollateralSource(unused))
    finally:
        plain.close()
    assert found.collateral == collateral
    assert unused.asked == []


def test_no_fetch_for_kinds_without_dcap_collateral(server: LoopbackServer):
    unused = FakeFetcher({})
    plain = server.plain()
    try:
        found = _endorsements(plain, EvidenceKind.SEV_SNP, b"report", PcsCollateralSource(unused))
    finally:
        plain.close()
    assert found == Endorsements()
    assert unused.asked == []


def test_connect_passes_the_fetcher_on(server: LoopbackServer, tdx_set: Path):
    """connect() verifies at the current time: this 2025 collateral has expired by then.

    The attested port answers ``/attestation`` with the TDX quote and no collateral."""
    quote = (tdx_set / "quote.bin").read_bytes()

    def reply(cert: bytes, nonce: bytes | None) -> AttestationReply:
        return AttestationReply(kind="tdx", certificate=cert, evidence=quote)

    with attested_fake(reply) as port:
        with pytest.raises(CollateralUnavailable):
            blindai.connect("127.0.0.1", attested_server_port=port.port, policy=_policy())
        with pytest.raises(CollateralError, match="expired at 2025-07-"):
            blindai.connect(
                "127.0.0.1",
                attested_server_port=port.port,
                policy=_policy(),
                timeout=10,
                collateral_fetcher=PcsCollateralSource.online(server.url),
            )
    assert port.requests == ["GET /attestation", "GET /attestation"]


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    return write_policy(tmp_path, POLICY_TOML)


@pytest.mark.parametrize("route", ["attestation", "none"])
def test_cli_attest_host_with_pccs_url(
    server: LoopbackServer,
    tdx_set: Path,
    policy_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    route: str,
):
    """The quote from ``GET /attestation`` on the attested port, or, where that route is not
    found, from the unattested port (the 0.6 flow)."""
    quote = (tdx_set / "quote.bin").read_bytes()

    def reply(
        cert: bytes, nonce: bytes | None
    ) -> AttestationReply | tuple[int, dict[str, str], bytes]:
        if route == "none":
            return 404, {"Content-Type": "text/plain"}, b"Not Found"
        return AttestationReply(kind="tdx", certificate=cert, evidence=quote)

    with attested_fake(reply) as port:
        host = ["attest", "127.0.0.1", "--unattested-port", str(server.port)]
        host += ["--attested-port", str(port.port)]
        common = [*host, "--policy", str(policy_file), "--at", "2025-07-01T00:00:00Z"]
        assert run_cli(monkeypatch, *common) == 1
        assert "CollateralUnavailable" in capsys.readouterr().err
        assert run_cli(monkeypatch, *common, "--pccs-url", server.url) == 1
        assert "BindingError: the evidence does not bind this TLS certificate" in (
            capsys.readouterr().err
        )
    assert [p for p in server.asked if "certification" in p] == _pccs_routes_keys()
    assert port.requests == ["GET /attestation", "GET /attestation"]
    assert ("/quote" in server.asked) is (route == "none")


def test_cli_attest_verify_with_pccs_url(
    server: LoopbackServer,
    tdx_set: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    args = ["attest", "verify", "--kind", "tdx", "--evidence", str(tdx_set / "quote.bin")]
    args += ["--at", "2025-07-01T00:00:00Z", "--json"]
    assert run_cli(monkeypatch, *args, "--pccs-url", server.url) == 0
    assert '"tcb_status": "UpToDate"' in capsys.readouterr().out
