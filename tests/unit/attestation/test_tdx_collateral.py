"""TDX collateral from the PCS v4 TDX API: the real Phala TDX v4 set served by a fake PCS.

The fake maps Intel's URLs to the set's derived files (TCB Info and QE Identity as Intel
serves them, the CRLs, the issuer chains URL-encoded in their headers); the collateral built
from them must equal the set's collateral.json and verify with dcap-qvl at the README's time.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from blindai.attestation import Endorsements
from blindai.attestation._collateral import (
    INTEL_PCS_URL,
    FetchResponse,
    PcsCollateralSource,
    UrllibFetcher,
    pck_chain,
)
from blindai.attestation.tdx import TdxPolicy, TdxVerifier
from blindai.errors import CollateralUnavailable, SignatureError

from .pcs_fakes import API, ROOT_CRL_URL, TDX_API, Clock, FakeFetcher, pcs_answers, tdx_answers

NOW = datetime(2025, 7, 1, tzinfo=timezone.utc)  # the README's time for phala-dcap-qvl-tdx-v4
EXPIRY = datetime(2025, 7, 19, 10, 0, 35, tzinfo=timezone.utc)  # the PCK CRL's nextUpdate
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
TDX_URLS = [
    f"{TDX_API}/tcb?fmspc=B0C06F000000",
    f"{TDX_API}/qe/identity",
    f"{API}/pckcrl?ca=platform&encoding=der",
    ROOT_CRL_URL,
]
PCCS = "https://pccs.example:8081"


def test_pck_chain_of_a_tdx_quote(tdx_set: Path):
    chain = pck_chain((tdx_set / "quote.bin").read_bytes())
    assert (chain.tee, chain.fmspc, chain.ca_type) == ("tdx", "B0C06F000000", "platform")


def test_tdx_collateral_equals_the_sets_and_verifies(tdx_set: Path, fake_tdx_pcs: FakeFetcher):
    quote = (tdx_set / "quote.bin").read_bytes()
    collateral = PcsCollateralSource(fake_tdx_pcs, clock=lambda: NOW).for_quote(quote)
    assert fake_tdx_pcs.asked == TDX_URLS
    assert json.loads(collateral.to_json()) == json.loads((tdx_set / "collateral.json").read_text())
    claims = TdxVerifier.with_embedded_roots().verify(
        quote,
        TdxPolicy.from_mapping({"mr_td": MR_TD, **BOOT}),
        now=NOW,
        endorsements=Endorsements(collateral=collateral.to_json()),
    )
    assert (claims.tcb_status, claims.advisory_ids) == ("UpToDate", ())
    assert claims.mr_td == bytes.fromhex(MR_TD)


def test_tdx_collateral_from_a_pccs(tdx_set: Path):
    base = f"{PCCS}/sgx/certification/v4"
    answers = pcs_answers(
        tdx_set,
        fmspc="B0C06F000000",
        ca="platform",
        base=base,
        tee_base=f"{PCCS}/tdx/certification/v4",
        root_crl_url=f"{base}/rootcacrl",
    )
    fetcher = FakeFetcher(answers)
    quote = (tdx_set / "quote.bin").read_bytes()
    collateral = PcsCollateralSource(fetcher, base_url=PCCS, clock=lambda: NOW).for_quote(quote)
    assert sorted(fetcher.asked) == sorted(answers)
    assert json.loads(collateral.to_json()) == json.loads((tdx_set / "collateral.json").read_text())


def test_a_pcs_serving_only_sgx_gives_a_tdx_quote_nothing(tdx_set: Path):
    """The TCB Info of a TDX platform is on the TDX API: asking the SGX one would be wrong."""
    sgx_only = {url.replace(TDX_API, API): a for url, a in tdx_answers(tdx_set).items()}
    source = PcsCollateralSource(FakeFetcher(sgx_only), clock=lambda: NOW)
    with pytest.raises(CollateralUnavailable, match="tdx/certification/v4/tcb"):
        source.for_quote((tdx_set / "quote.bin").read_bytes())


def test_sgx_and_tdx_are_cached_apart(sgx_set: Path, tdx_set: Path):
    answers = pcs_answers(sgx_set, fmspc="00A067110000", ca="processor")
    answers.update(tdx_answers(tdx_set))
    fetcher = FakeFetcher(answers)
    clock = Clock(NOW)
    source = PcsCollateralSource(fetcher, clock=clock)
    tdx = source.for_quote((tdx_set / "quote.bin").read_bytes())
    sgx = source.for_quote((sgx_set / "quote.bin").read_bytes())
    assert json.loads(tdx.tcb_info)["id"] == "TDX"
    assert json.loads(sgx.tcb_info)["id"] == "SGX"
    assert source.for_quote((tdx_set / "quote.bin").read_bytes()) is tdx
    assert len(fetcher.asked) == 8  # four URLs per platform, once each
    assert tdx.next_update() == EXPIRY
    clock.now = EXPIRY
    assert source.for_quote((tdx_set / "quote.bin").read_bytes()) is not tdx
    assert fetcher.asked[8:] == TDX_URLS


def test_tampered_tdx_tcb_info_fails_verification(tdx_set: Path, fake_tdx_pcs: FakeFetcher):
    url = TDX_URLS[0]
    answer = fake_tdx_pcs.answers[url]
    body = answer.body.replace(b'"tcbEvaluationDataNumber":17', b'"tcbEvaluationDataNumber":18')
    assert body != answer.body
    fake_tdx_pcs.answers[url] = FetchResponse(body, answer.headers)
    quote = (tdx_set / "quote.bin").read_bytes()
    collateral = PcsCollateralSource(fake_tdx_pcs, clock=lambda: NOW).for_quote(quote)
    with pytest.raises(SignatureError):
        TdxVerifier.with_embedded_roots().verify(
            quote,
            TdxPolicy.from_mapping({"mr_td": MR_TD, **BOOT}),
            now=NOW,
            endorsements=Endorsements(collateral=collateral.to_json()),
        )


def test_online_source_uses_urllib_and_touches_nothing_until_asked():
    source = PcsCollateralSource.online(timeout=3)
    assert isinstance(source.fetcher, UrllibFetcher)
    assert (source.base_url, source.fetcher.timeout) == (INTEL_PCS_URL, 3)
    assert PcsCollateralSource.online(PCCS).base_url == PCCS


def test_out_of_date_tdx_collateral_is_refetched(tdx_set: Path, fake_tdx_pcs: FakeFetcher):
    quote = (tdx_set / "quote.bin").read_bytes()
    clock = Clock(EXPIRY + timedelta(days=1))
    source = PcsCollateralSource(fake_tdx_pcs, clock=clock, retry_after=30)
    source.for_quote(quote)
    source.for_quote(quote)
    assert fake_tdx_pcs.asked == TDX_URLS
    clock.now += timedelta(seconds=30)
    source.for_quote(quote)
    assert fake_tdx_pcs.asked == TDX_URLS * 2
