"""TDX collateral served by the configfs-tsm attester: with a PCCS/PCS URL, and without one.

A fake kernel serves the real Phala TDX v4 quote; a fake PCS serves that set's real collateral
files under Intel's PCS v4 URLs.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import pytest

from blindai.attestation import Endorsements
from blindai.attestation._collateral import INTEL_PCS_URL, PcsCollateralSource
from blindai.attestation.claims import EvidenceKind
from blindai.attestation.tdx import TdxPolicy, TdxVerifier
from blindai.errors import CollateralUnavailable
from blindai.server.attesters import AttesterPaths, ConfigfsTsmAttester, select_attester
from blindai.server.attesters._quote import carried_report_data
from tests.unit.attestation.pcs_fakes import FakeFetcher, tdx_answers

from .attester_fakes import FakeTsmKernel

NOW = datetime(2025, 7, 1, tzinfo=timezone.utc)  # the README's time for phala-dcap-qvl-tdx-v4
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


@pytest.fixture
def paths(tmp_path: Path) -> AttesterPaths:
    report_dir = tmp_path / "tsm" / "report"
    report_dir.mkdir(parents=True)
    return AttesterPaths(
        attestation_dir=tmp_path / "none", tsm_report_dir=report_dir, nsm_device=tmp_path / "nsm"
    )


@pytest.mark.parametrize("tee", ["tdx", "auto"])
def test_tdx_collateral_for_the_last_quote(tdx_set: Path, paths: AttesterPaths, tee: str):
    quote = (tdx_set / "quote.bin").read_bytes()
    fetcher = FakeFetcher(tdx_answers(tdx_set))
    with FakeTsmKernel(paths.tsm_report_dir, provider="tdx_guest", outblob=quote):
        attester = select_attester(tee, paths=paths, fetcher=fetcher, pccs_url=INTEL_PCS_URL)
        assert isinstance(attester, ConfigfsTsmAttester)
        with pytest.raises(CollateralUnavailable, match="no quote collected yet"):
            attester.endorsements()
        assert fetcher.asked == []
        attester.evidence(carried_report_data(EvidenceKind.TDX, quote))
    endorsements = attester.endorsements()
    assert endorsements.certificates == ()
    assert endorsements.collateral is not None
    expected = json.loads((tdx_set / "collateral.json").read_text())
    assert json.loads(endorsements.collateral) == expected
    assert attester.blindai_collateral() is None  # BlindAI 0.6's /collateral is SGX only
    claims = TdxVerifier.with_embedded_roots().verify(
        quote, TdxPolicy.from_mapping({"mr_td": MR_TD, **BOOT}), now=NOW, endorsements=endorsements
    )
    assert claims.tcb_status == "UpToDate"


def test_collateral_is_cached_by_the_source(tdx_set: Path, paths: AttesterPaths):
    quote = (tdx_set / "quote.bin").read_bytes()
    fetcher = FakeFetcher(tdx_answers(tdx_set))
    source = PcsCollateralSource(fetcher, clock=lambda: NOW)
    with FakeTsmKernel(paths.tsm_report_dir, provider="tdx_guest", outblob=quote):
        attester = ConfigfsTsmAttester(
            paths.tsm_report_dir, provider="tdx_guest", collateral=source
        )
        attester.evidence(carried_report_data(EvidenceKind.TDX, quote))
    first = attester.endorsements()
    assert attester.endorsements() == first
    assert len(fetcher.asked) == 4


def test_unreachable_pcs_is_collateral_unavailable(tdx_set: Path, paths: AttesterPaths):
    quote = (tdx_set / "quote.bin").read_bytes()
    with FakeTsmKernel(paths.tsm_report_dir, provider="tdx_guest", outblob=quote):
        attester = select_attester(
            "tdx", paths=paths, fetcher=FakeFetcher({}), pccs_url="https://pccs:8081"
        )
        attester.evidence(carried_report_data(EvidenceKind.TDX, quote))
    with pytest.raises(CollateralUnavailable, match="pccs:8081/tdx/certification/v4/tcb"):
        attester.endorsements()


def test_without_a_url_no_collateral_and_one_warning_at_start_up(
    tdx_set: Path, paths: AttesterPaths, caplog: pytest.LogCaptureFixture
):
    quote = (tdx_set / "quote.bin").read_bytes()
    fetcher = FakeFetcher(tdx_answers(tdx_set))
    with (
        caplog.at_level(logging.WARNING, logger="blindai.server"),
        FakeTsmKernel(paths.tsm_report_dir, provider="tdx_guest", outblob=quote),
    ):
        attester = select_attester("tdx", paths=paths, fetcher=fetcher)
        for _ in range(2):
            attester.evidence(carried_report_data(EvidenceKind.TDX, quote))
            assert attester.endorsements() == Endorsements()
    warnings = [r for r in caplog.records if "collateral" in r.getMessage()]
    assert len(warnings) == 1
    assert "clients need their own collateral source" in warnings[0].getMessage()
    assert fetcher.asked == []


def test_snp_ignores_the_pccs_url(
    evidence_dir: Path, paths: AttesterPaths, caplog: pytest.LogCaptureFixture
):
    report = (evidence_dir / "sev-snp" / "virtee-sev-milan" / "report.bin").read_bytes()
    fetcher = FakeFetcher({})
    with (
        caplog.at_level(logging.WARNING, logger="blindai.server"),
        FakeTsmKernel(paths.tsm_report_dir, provider="sev_guest", outblob=report),
    ):
        attester = select_attester("sev-snp", paths=paths, fetcher=fetcher, pccs_url="https://x")
        attester.evidence(carried_report_data(EvidenceKind.SEV_SNP, report))
    assert attester.endorsements() == Endorsements()
    assert fetcher.asked == []
    assert "collateral" not in caplog.text
