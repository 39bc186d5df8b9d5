"""Fetching and caching SGX collateral: PCS v4 paths and headers, PCCS, caching, failures."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote as urlquote

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from blindai.attestation._collateral import (
    INTEL_PCS_URL,
    FetchResponse,
    PckChain,
    PcsCollateralSource,
    UrllibFetcher,
    fetch_collateral,
    pck_chain,
)
from blindai.errors import CollateralUnavailable

from .pcs_fakes import API, ROOT_CRL_URL, Clock, FakeFetcher, pcs_answers

NOW = datetime(2025, 7, 1, tzinfo=timezone.utc)
EXPIRY = datetime(2025, 7, 19, 10, 1, 18, tzinfo=timezone.utc)  # QE identity's nextUpdate
PCCS = "https://pccs.example:8081"


def test_fetches_the_pcs_v4_urls_once_until_next_update(sgx_set: Path, fake_pcs: FakeFetcher):
    quote = (sgx_set / "quote.bin").read_bytes()
    clock = Clock(NOW)
    source = PcsCollateralSource(fake_pcs, clock=clock)
    first = source.for_quote(quote)
    assert source.for_quote(quote) is first
    assert sorted(fake_pcs.asked) == sorted(
        [
            f"{API}/tcb?fmspc=00A067110000",
            f"{API}/qe/identity",
            f"{API}/pckcrl?ca=processor&encoding=der",
            ROOT_CRL_URL,
        ]
    )
    assert first.next_update() == EXPIRY
    clock.now = EXPIRY - timedelta(seconds=1)
    source.for_quote(quote)
    assert len(fake_pcs.asked) == 4
    clock.now = EXPIRY
    assert source.for_quote(quote) is not first
    assert len(fake_pcs.asked) == 8


def test_out_of_date_collateral_is_returned_and_kept_for_retry_after_only(
    sgx_set: Path, fake_pcs: FakeFetcher, caplog: pytest.LogCaptureFixture
):
    quote = (sgx_set / "quote.bin").read_bytes()
    clock = Clock(EXPIRY + timedelta(days=1))
    source = PcsCollateralSource(fake_pcs, clock=clock, retry_after=30)
    with caplog.at_level(logging.WARNING, logger="blindai.attestation"):
        first = source.for_quote(quote)
        assert source.for_quote(quote) is first
        assert len(fake_pcs.asked) == 4
        clock.now += timedelta(seconds=30)
        assert source.for_quote(quote) is not first
    assert len(fake_pcs.asked) == 8
    assert "out of date" in caplog.text


def test_a_failed_fetch_is_not_tried_again_before_retry_after(sgx_set: Path):
    """Every caller while the PCS fails (an anonymous client of the unattested port asking for
    collateral, again and again) cost a whole fetch: now one fetch per retry_after."""
    quote = (sgx_set / "quote.bin").read_bytes()
    fetcher = FakeFetcher({})  # every URL: 404
    clock = Clock(NOW)
    source = PcsCollateralSource(fetcher, clock=clock, retry_after=30)
    for _ in range(5):
        with pytest.raises(CollateralUnavailable, match="404"):
            source.for_quote(quote)
    assert len(fetcher.asked) == 1
    with pytest.raises(CollateralUnavailable, match="not fetched again until 00:00:30 UTC"):
        source.for_quote(quote)
    clock.now += timedelta(seconds=30)
    with pytest.raises(CollateralUnavailable):
        source.for_quote(quote)
    assert len(fetcher.asked) == 2


def test_a_fetch_that_succeeds_again_is_cached_again(sgx_set: Path, fake_pcs: FakeFetcher):
    quote = (sgx_set / "quote.bin").read_bytes()
    answers, fake_pcs.answers = fake_pcs.answers, {}
    clock = Clock(NOW)
    source = PcsCollateralSource(fake_pcs, clock=clock, retry_after=30)
    with pytest.raises(CollateralUnavailable):
        source.for_quote(quote)
    fake_pcs.answers = answers
    clock.now += timedelta(seconds=30)
    first = source.for_quote(quote)
    assert source.for_quote(quote) is first
    assert len(fake_pcs.asked) == 1 + 4


def test_platform_ca_quote_end_to_end(evidence_dir: Path):
    """The Automata set: Platform CA, FMSPC 00606A000000, PCS files stored as Intel serves them."""
    set_dir = evidence_dir / "sgx-dcap" / "automata-fmspc-00606a000000"
    quote = (set_dir / "quote.bin").read_bytes()
    pck_ca_and_root = "".join(
        c.public_bytes(Encoding.PEM).decode()
        for c in x509.load_pem_x509_certificates(
            (set_dir / "derived" / "pck_cert_chain.pem").read_bytes()
        )[1:]
    )
    signing = urlquote((set_dir / "tcb_signing_chain.pem").read_text())
    fetcher = FakeFetcher(
        {
            f"{API}/tcb?fmspc=00606A000000": FetchResponse(
                (set_dir / "tcb_info.json").read_bytes(), {"tcb-info-issuer-chain": signing}
            ),
            f"{API}/qe/identity": FetchResponse(
                (set_dir / "qe_identity.json").read_bytes(),
                {"Sgx-Enclave-Identity-Issuer-Chain": signing},
            ),
            f"{API}/pckcrl?ca=platform&encoding=der": FetchResponse(
                (set_dir / "pck_platform_crl.der").read_bytes(),
                {"SGX-PCK-CRL-Issuer-Chain": urlquote(pck_ca_and_root)},
            ),
            ROOT_CRL_URL: FetchResponse((set_dir / "root_ca_crl.der").read_bytes()),
        }
    )
    now = datetime(2025, 9, 1, tzinfo=timezone.utc)
    collateral = PcsCollateralSource(fetcher, clock=lambda: now).for_quote(quote)
    report = dcap_qvl.verify(
        quote,
        dcap_qvl.QuoteCollateralV3.from_json(collateral.to_json().decode()),
        int(now.timestamp()),
    )
    assert report.status == "SWHardeningNeeded"
    assert list(report.advisory_ids) == ["INTEL-SA-00615"]


def test_pccs_root_crl_endpoint_hex_and_pem_crls_and_v3_header(sgx_set: Path):
    """A PCCS: rootcacrl as hex text, the PCK CRL as PEM, API v3's TCB chain header name."""
    quote = (sgx_set / "quote.bin").read_bytes()
    base = f"{PCCS}/sgx/certification/v4"
    answers = pcs_answers(sgx_set, fmspc="00A067110000", ca="processor", base=base)
    derived = sgx_set / "derived"
    tcb_url = f"{base}/tcb?fmspc=00A067110000"
    answers[tcb_url] = FetchResponse(
        answers[tcb_url].body,
        {
            "SGX-TCB-Info-Issuer-Chain": urlquote(
                (derived / "tcb_info_issuer_chain.pem").read_text()
            )
        },
    )
    crl_url = f"{base}/pckcrl?ca=processor&encoding=der"
    pem_crl = x509.load_der_x509_crl((derived / "pck_crl.der").read_bytes()).public_bytes(
        Encoding.PEM
    )
    answers[crl_url] = FetchResponse(pem_crl, answers[crl_url].headers)
    del answers[ROOT_CRL_URL]
    answers[f"{base}/rootcacrl"] = FetchResponse(
        (derived / "root_ca_crl.der").read_bytes().hex().encode()
    )
    collateral = PcsCollateralSource(FakeFetcher(answers), base_url=PCCS + "/").for_quote(quote)
    assert json.loads(collateral.to_json()) == json.loads((sgx_set / "collateral.json").read_text())


@pytest.mark.parametrize(
    "url,mangle",
    [
        (f"{API}/qe/identity", lambda r: FetchResponse(r.body)),  # no issuer chain header
        (f"{API}/tcb?fmspc=00A067110000", lambda r: FetchResponse(b"\xff\xfe", r.headers)),
        (f"{API}/tcb?fmspc=00A067110000", lambda r: FetchResponse(b'{"tcbInfo":{}}', r.headers)),
        (f"{API}/tcb?fmspc=00A067110000", lambda r: FetchResponse(b"[" * 100_000, r.headers)),
        (f"{API}/pckcrl?ca=processor&encoding=der", lambda r: FetchResponse(b"abc", r.headers)),
        (f"{API}/pckcrl?ca=processor&encoding=der", lambda r: FetchResponse(b"junk!", r.headers)),
        (
            ROOT_CRL_URL,
            lambda r: FetchResponse(b"-----BEGIN X509 CRL-----\nAA\n-----END X509 CRL-----"),
        ),
    ],
)
def test_unusable_pcs_answers_are_collateral_unavailable(
    sgx_set: Path, fake_pcs: FakeFetcher, url, mangle
):
    fake_pcs.answers[url] = mangle(fake_pcs.answers[url])
    source = PcsCollateralSource(fake_pcs, clock=lambda: NOW)
    with pytest.raises(CollateralUnavailable):
        source.for_quote((sgx_set / "quote.bin").read_bytes()).next_update()


def test_fetcher_os_error_is_collateral_unavailable(sgx_set: Path):
    class Broken:
        def get(self, url: str) -> FetchResponse:
            raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(CollateralUnavailable, match="refused"):
        PcsCollateralSource(Broken()).for_quote((sgx_set / "quote.bin").read_bytes())


def test_quote_without_a_pck_chain_has_no_collateral(sgx_set: Path):
    quote = bytearray((sgx_set / "quote.bin").read_bytes())
    auth_len = int.from_bytes(quote[1012:1014], "little")
    quote[1014 + auth_len] = 3  # certification data type 3 instead of 5
    with pytest.raises(CollateralUnavailable, match="type 3"):
        pck_chain(bytes(quote))
    with pytest.raises(CollateralUnavailable, match="no PCK chain"):
        pck_chain(bytes(quote[:100]))


@pytest.fixture
def local_pcs(sgx_set: Path) -> Iterator[str]:
    """A loopback HTTP server answering like a PCCS, from the set's files."""
    base = "/sgx/certification/v4"
    answers = pcs_answers(sgx_set, fmspc="00A067110000", ca="processor", base=base)
    answers[f"{base}/rootcacrl"] = FetchResponse(
        (sgx_set / "derived" / "root_ca_crl.der").read_bytes().hex().encode()
    )

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answer = answers.get(self.path)
            self.send_response(200 if answer else 404)
            for name, value in (answer.headers if answer else {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(answer.body if answer else b"not found")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_urllib_fetcher_against_a_loopback_pccs(sgx_set: Path, local_pcs: str):
    source = PcsCollateralSource(UrllibFetcher(timeout=5), base_url=local_pcs, clock=lambda: NOW)
    collateral = source.for_quote((sgx_set / "quote.bin").read_bytes())
    assert json.loads(collateral.to_json()) == json.loads((sgx_set / "collateral.json").read_text())


def test_urllib_fetcher_http_error_is_collateral_unavailable(local_pcs: str):
    with pytest.raises(CollateralUnavailable, match="404"):
        UrllibFetcher(timeout=5).get(f"{local_pcs}/nothing")


def test_urllib_fetcher_unreachable_is_collateral_unavailable():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CollateralUnavailable, match="failed"):
        UrllibFetcher(timeout=5).get(f"http://127.0.0.1:{port}/")


def test_public_name_is_imported_on_first_use():
    import blindai.attestation
    from blindai.attestation import _collateral

    assert "PcsCollateralSource" in blindai.attestation.__all__
    assert "PcsCollateralSource" in dir(blindai.attestation)
    assert blindai.attestation.PcsCollateralSource is _collateral.PcsCollateralSource
    with pytest.raises(AttributeError, match="NoSuchName"):
        _ = blindai.attestation.NoSuchName  # type: ignore[attr-defined]


def _one_connection(answer: Callable[[socket.socket], None]) -> Iterator[str]:
    """A loopback server that reads one connection's request, lets ``answer`` write to it,
    then closes it; a client hanging up meanwhile ends ``answer`` (OSError)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        sock, _ = listener.accept()
        with sock:
            sock.recv(65536)
            try:
                answer(sock)
            except OSError:
                pass  # the client gave up (an oversized answer, its deadline)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/x"
    finally:
        thread.join(30)
        listener.close()


def _answering(answer: bytes) -> Iterator[str]:
    """A loopback server that answers one connection with ``answer``, then closes it."""
    return _one_connection(lambda sock: sock.sendall(answer))


@pytest.mark.parametrize(
    ("answer", "text"),
    [
        (b"garbage\r\n\r\n", "malformed HTTP answer"),  # BadStatusLine
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n", "malformed HTTP answer"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: a\r\n" * 200 + b"\r\n", "malformed HTTP answer"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed HTTP answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", "malformed HTTP answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"a" * 5000, "over 4096 bytes"),
        (b"HTTP/1.1 200 OK\r\n\r\n" + b"a" * 5000, "over 4096 bytes"),
    ],
    ids=[
        "status-line",
        "header-too-long",
        "too-many-headers",
        "bad-chunk",
        "cut-short",
        "over-the-cap",
        "read-to-close-over-the-cap",
    ],
)
def test_urllib_fetcher_malformed_or_oversized_answer_is_collateral_unavailable(
    answer: bytes, text: str
) -> None:
    """http.client's own exceptions are not OSError: they leaked untyped (and a body was read
    whole, however large, and accepted when cut short)."""
    for url in _answering(answer):
        with pytest.raises(CollateralUnavailable, match=text):
            UrllibFetcher(timeout=5, max_bytes=4096).get(url)


def _dripping(head: bytes) -> Iterator[str]:
    """A loopback server that sends ``head`` then one more byte every 50 ms, until the client
    hangs up (or 20 s pass: the test is bounded either way)."""

    def drip(sock: socket.socket) -> None:
        sock.sendall(head)
        for _ in range(400):
            sock.sendall(b"a")
            time.sleep(0.05)

    return _one_connection(drip)


@pytest.mark.parametrize(
    "head",
    [b"HTTP/1.1 200 OK\r\nX-Slow: ", b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"],
    ids=["headers", "body"],
)
def test_urllib_fetcher_gives_a_dripping_answer_up_at_its_deadline(head: bytes) -> None:
    """Each read had its own timeout and nothing bounded the whole answer: a server sending a
    byte every 50 ms held the fetch for as long as it liked (here 20 s, then the test server
    gives up)."""
    for url in _dripping(head):
        started = time.monotonic()
        with pytest.raises(CollateralUnavailable, match=r"no whole answer within 0\.5 s"):
            UrllibFetcher(timeout=5, deadline=0.5).get(url)
        assert time.monotonic() - started < 10


def test_urllib_fetcher_deadline_does_not_cut_a_prompt_answer() -> None:
    """A read-to-close body ends the same way a deadline's shutdown ends it: an answer read in
    time is kept, and the deadline's timer does not outlive the fetch."""
    for url in _answering(b"HTTP/1.1 200 OK\r\n\r\n" + b"b" * 1000):
        assert UrllibFetcher(timeout=5, deadline=30).get(url).body == b"b" * 1000
    timers = [t for t in threading.enumerate() if isinstance(t, threading.Timer)]
    for timer in timers:
        timer.join(5)  # cancelled: ends at once, not after 30 s
    assert not [t for t in timers if t.is_alive()]


def _forged_root(crl_url: str) -> x509.Certificate:
    """A self-signed root naming ``crl_url`` as its CRL distribution point."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Intel SGX Root CA")])
    point = x509.DistributionPoint([x509.UniformResourceIdentifier(crl_url)], None, None, None)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.CRLDistributionPoints([point]), critical=False)
        .sign(key, hashes.SHA256())
    )


@pytest.mark.parametrize("url", ["file:///etc/shadow", "http://169.254.169.254/latest/meta-data/"])
def test_a_forged_root_names_no_url_for_us_to_fetch(sgx_set: Path, fake_pcs: FakeFetcher, url: str):
    """The root CA CRL was fetched from the CRL distribution point of the quote's root before
    anything was verified: a server's (or a host's) forged chain named what the client (or
    the server, for anyone asking /collateral) fetched: a local file, an internal address."""
    genuine = pck_chain((sgx_set / "quote.bin").read_bytes())
    forged = PckChain([genuine.leaf, genuine.ca, _forged_root(url)])
    with pytest.raises(CollateralUnavailable, match="does not end at Intel's SGX root CA"):
        fetch_collateral(fake_pcs, INTEL_PCS_URL, forged)
    assert url not in fake_pcs.asked
    assert ROOT_CRL_URL not in fake_pcs.asked


@pytest.mark.parametrize("scheme", ["file", "data", "ftp"])
def test_urllib_fetcher_fetches_over_http_and_https_only(tmp_path: Path, scheme: str):
    """urllib's default opener read file: and data: URLs (and ftp: with no deadline)."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"not for the network")
    url = {"file": secret.as_uri(), "data": "data:,not%20for", "ftp": "ftp://127.0.0.1:1/x"}
    with pytest.raises(CollateralUnavailable, match=f"unknown url type: {scheme}"):
        UrllibFetcher(timeout=2).get(url[scheme])
