"""ConfigfsTsmAttester against a fake kernel serving real TDX quotes and SEV-SNP reports."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from blindai.attestation.claims import EvidenceKind
from blindai.errors import ConfigurationError, EvidenceError
from blindai.server.attesters import ConfigfsTsmAttester
from blindai.server.attesters._devfiles import ATTRIBUTE_MAX_BYTES
from blindai.server.attesters._quote import carried_report_data

from .attester_fakes import FakeTsmKernel, HostileTsmEntries, certificate_table

VCEK, ASK, ARK = (
    "63da758d-e664-4564-adc5-f4b93be8accd",
    "4ab7b379-bbac-4fe4-a02f-05aef327c782",
    "c0b406a4-a803-4952-9743-3fb6014cd0ae",
)
TDX_SETS = ["phala-dcap-qvl-tdx-v4", "phala-dcap-qvl-tdx-v5-outdated", "go-tdx-guest-spr-e4"]
SNP_SETS = ["virtee-sev-milan", "go-sev-guest-milan"]


@pytest.fixture
def report_dir(tmp_path: Path) -> Path:
    path = tmp_path / "tsm" / "report"
    path.mkdir(parents=True)
    return path


def snp_files(evidence_dir: Path, name: str) -> tuple[bytes, bytes, bytes, bytes]:
    """Report, VCEK DER, ASK DER, ARK DER of a SEV-SNP set."""
    set_dir = evidence_dir / "sev-snp" / name
    ask, ark = x509.load_pem_x509_certificates((set_dir / "ask_ark_milan.pem").read_bytes())
    return (
        (set_dir / "report.bin").read_bytes(),
        (set_dir / "vcek.der").read_bytes(),
        ask.public_bytes(Encoding.DER),
        ark.public_bytes(Encoding.DER),
    )


@pytest.mark.parametrize("name", TDX_SETS)
def test_tdx_quote_collected_from_a_fresh_entry(evidence_dir: Path, report_dir: Path, name: str):
    quote = (evidence_dir / "tdx" / name / "quote.bin").read_bytes()
    report_data = carried_report_data(EvidenceKind.TDX, quote)
    with FakeTsmKernel(report_dir, provider="tdx_guest", outblob=quote) as kernel:
        attester = ConfigfsTsmAttester.probe(report_dir)
        assert attester.kind is EvidenceKind.TDX
        assert attester.evidence(report_data) == quote
    assert [e["inblob"] for e in kernel.entries] == [None, report_data]  # probe, then report
    assert list(report_dir.iterdir()) == []  # both entries removed
    assert attester.endorsements().certificates == ()
    assert attester.blindai_collateral() is None


@pytest.mark.parametrize("name", SNP_SETS)
def test_snp_report_and_certificate_table(evidence_dir: Path, report_dir: Path, name: str):
    report, vcek, ask, ark = snp_files(evidence_dir, name)
    table = certificate_table([(ARK, ark), (VCEK, vcek), (ASK, ask)])
    with FakeTsmKernel(report_dir, provider="sev_guest", outblob=report, auxblob=table) as kernel:
        attester = ConfigfsTsmAttester.probe(report_dir)
        assert attester.kind is EvidenceKind.SEV_SNP
        assert attester.evidence(carried_report_data(EvidenceKind.SEV_SNP, report)) == report
    assert kernel.entries[-1]["inblob"] == carried_report_data(EvidenceKind.SEV_SNP, report)
    assert kernel.entries[-1]["privlevel"] is None
    assert attester.endorsements().certificates == (vcek, ask, ark)
    assert list(report_dir.iterdir()) == []


def test_snp_privlevel_written_and_counted(evidence_dir: Path, report_dir: Path):
    report, *_ = snp_files(evidence_dir, "virtee-sev-milan")
    with FakeTsmKernel(report_dir, provider="sev_guest", outblob=report) as kernel:
        attester = ConfigfsTsmAttester(report_dir, provider="sev_guest", privlevel=2)
        assert attester.evidence(carried_report_data(EvidenceKind.SEV_SNP, report)) == report
    assert kernel.entries[0]["privlevel"] == b"2\n"
    assert attester.endorsements().certificates == ()  # no auxblob: no certificates


def test_generation_race_is_retried_on_a_new_entry(evidence_dir: Path, report_dir: Path):
    quote = (evidence_dir / "tdx" / "phala-dcap-qvl-tdx-v4" / "quote.bin").read_bytes()
    raced_first = lambda index: 1 if index == 0 else 0  # noqa: E731
    with FakeTsmKernel(
        report_dir, provider="tdx_guest", outblob=quote, extra_writes=raced_first
    ) as kernel:
        attester = ConfigfsTsmAttester(report_dir, provider="tdx_guest")
        assert attester.evidence(carried_report_data(EvidenceKind.TDX, quote)) == quote
    assert len(kernel.entries) == 2
    assert kernel.entries[0]["name"] != kernel.entries[1]["name"]


def test_generation_race_every_time_is_an_evidence_error(evidence_dir: Path, report_dir: Path):
    quote = (evidence_dir / "tdx" / "phala-dcap-qvl-tdx-v4" / "quote.bin").read_bytes()
    with FakeTsmKernel(
        report_dir, provider="tdx_guest", outblob=quote, extra_writes=lambda index: 1
    ) as kernel:
        attester = ConfigfsTsmAttester(report_dir, provider="tdx_guest", attempts=3)
        with pytest.raises(EvidenceError, match="raced"):
            attester.evidence(carried_report_data(EvidenceKind.TDX, quote))
    assert len(kernel.entries) == 3
    assert list(report_dir.iterdir()) == []


def _bad_outblob_cases(evidence_dir: Path) -> list[tuple[str, bytes, bytes]]:
    tdx = (evidence_dir / "tdx" / "phala-dcap-qvl-tdx-v4" / "quote.bin").read_bytes()
    snp = (evidence_dir / "sev-snp" / "virtee-sev-milan" / "report.bin").read_bytes()
    rd_tdx, rd_snp = (
        carried_report_data(EvidenceKind.TDX, tdx),
        carried_report_data(EvidenceKind.SEV_SNP, snp),
    )
    flipped = bytes([rd_tdx[0] ^ 1]) + rd_tdx[1:]
    return [
        ("tdx_guest", b"", rd_tdx),  # empty
        ("tdx_guest", tdx[:600], rd_tdx),  # truncated before REPORTDATA ends
        ("tdx_guest", b"\x03\x00" + tdx[2:], rd_tdx),  # version 3: not a TDX quote
        ("tdx_guest", tdx, flipped),  # another report data than ours
        ("sev_guest", snp[:-1], rd_snp),  # 1183 bytes
        ("sev_guest", snp + b"\0", rd_snp),  # 1185 bytes
    ]


@pytest.mark.parametrize("case", range(6))
def test_odd_outblob_is_an_evidence_error(evidence_dir: Path, report_dir: Path, case: int):
    provider, outblob, report_data = _bad_outblob_cases(evidence_dir)[case]
    with FakeTsmKernel(report_dir, provider=provider, outblob=outblob):
        attester = ConfigfsTsmAttester(report_dir, provider=provider)
        with pytest.raises(EvidenceError):
            attester.evidence(report_data)
    assert list(report_dir.iterdir()) == []


def test_malformed_certificate_table_is_an_evidence_error(evidence_dir: Path, report_dir: Path):
    report, vcek, *_ = snp_files(evidence_dir, "virtee-sev-milan")
    table = certificate_table([(VCEK, vcek)])[:-10]  # entry now points past the end
    with FakeTsmKernel(report_dir, provider="sev_guest", outblob=report, auxblob=table):
        attester = ConfigfsTsmAttester(report_dir, provider="sev_guest")
        with pytest.raises(EvidenceError, match="outside"):
            attester.evidence(carried_report_data(EvidenceKind.SEV_SNP, report))


def test_concurrent_calls_use_one_entry_at_a_time(evidence_dir: Path, report_dir: Path):
    quote = (evidence_dir / "tdx" / "go-tdx-guest-spr-e4" / "quote.bin").read_bytes()
    results: list[bytes] = []
    with FakeTsmKernel(report_dir, provider="tdx_guest", outblob=quote) as kernel:
        attester = ConfigfsTsmAttester(report_dir, provider="tdx_guest")
        threads = [
            threading.Thread(
                target=lambda: results.append(
                    attester.evidence(carried_report_data(EvidenceKind.TDX, quote))
                )
            )
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
    assert results == [quote] * 4
    assert kernel.most_entries_at_once == 1


def test_missing_report_dir_is_a_configuration_error(tmp_path: Path):
    with pytest.raises(ConfigurationError, match="configfs-tsm"):
        ConfigfsTsmAttester.probe(tmp_path / "absent")


def test_plain_directory_without_kernel_is_a_configuration_error(report_dir: Path):
    with pytest.raises(ConfigurationError, match="not a configfs-tsm report directory"):
        ConfigfsTsmAttester.probe(report_dir, settle_timeout=0.05)
    assert list(report_dir.iterdir()) == []


def test_unknown_provider_is_a_configuration_error(report_dir: Path):
    with FakeTsmKernel(report_dir, provider="arm_cca_guest", outblob=b"x"):
        with pytest.raises(ConfigurationError, match="arm_cca_guest"):
            ConfigfsTsmAttester.probe(report_dir)


@pytest.mark.parametrize("provider,privlevel", [("tdx_guest", 0), ("sev_guest", 4)])
def test_privlevel_only_for_snp_vmpl_0_to_3(report_dir: Path, provider: str, privlevel: int):
    with pytest.raises(ConfigurationError, match="privlevel"):
        ConfigfsTsmAttester(report_dir, provider=provider, privlevel=privlevel)


def test_report_data_must_be_64_bytes(report_dir: Path):
    with pytest.raises(ValueError, match="64 bytes"):
        ConfigfsTsmAttester(report_dir, provider="tdx_guest").evidence(b"\0" * 32)


def test_unreadable_generation_is_an_evidence_error(evidence_dir: Path, report_dir: Path):
    quote = (evidence_dir / "tdx" / "phala-dcap-qvl-tdx-v4" / "quote.bin").read_bytes()
    with FakeTsmKernel(report_dir, provider="tdx_guest", outblob=quote, generation_text="x\n"):
        attester = ConfigfsTsmAttester(report_dir, provider="tdx_guest")
        with pytest.raises(EvidenceError, match="generation"):
            attester.evidence(carried_report_data(EvidenceKind.TDX, quote))


def test_provider_change_is_an_evidence_error(evidence_dir: Path, report_dir: Path):
    quote = (evidence_dir / "tdx" / "phala-dcap-qvl-tdx-v4" / "quote.bin").read_bytes()
    with FakeTsmKernel(report_dir, provider="sev_guest", outblob=quote):
        attester = ConfigfsTsmAttester(report_dir, provider="tdx_guest")
        with pytest.raises(EvidenceError, match="provider changed"):
            attester.evidence(carried_report_data(EvidenceKind.TDX, quote))


def test_read_failure_is_an_evidence_error_and_a_stuck_entry_a_warning(
    evidence_dir: Path, report_dir: Path, caplog: pytest.LogCaptureFixture
):
    quote = (evidence_dir / "tdx" / "phala-dcap-qvl-tdx-v4" / "quote.bin").read_bytes()
    with FakeTsmKernel(
        report_dir, provider="tdx_guest", outblob=quote, outblob_is_a_directory=True
    ):
        attester = ConfigfsTsmAttester(report_dir, provider="tdx_guest")
        with caplog.at_level(logging.WARNING, logger="blindai.server"):
            with pytest.raises(EvidenceError, match="did not produce a report"):
                attester.evidence(carried_report_data(EvidenceKind.TDX, quote))
    assert "could not remove configfs-tsm entry" in caplog.text


def test_missing_privlevel_attribute_is_a_configuration_error(evidence_dir: Path, report_dir: Path):
    quote = (evidence_dir / "tdx" / "phala-dcap-qvl-tdx-v4" / "quote.bin").read_bytes()
    with FakeTsmKernel(report_dir, provider="tdx_guest", outblob=quote):  # no privlevel file
        attester = ConfigfsTsmAttester(
            report_dir, provider="sev_guest", privlevel=1, settle_timeout=0.05
        )
        with pytest.raises(ConfigurationError, match="privlevel"):
            attester.evidence(bytes(64))


def test_entry_that_cannot_be_created_is_a_configuration_error(tmp_path: Path):
    attester = ConfigfsTsmAttester(tmp_path / "gone", provider="tdx_guest")
    with pytest.raises(ConfigurationError, match="cannot create"):
        attester.evidence(bytes(64))


def test_snp_without_certificate_table_warns_once(
    evidence_dir: Path, report_dir: Path, caplog: pytest.LogCaptureFixture
):
    report, *_ = snp_files(evidence_dir, "virtee-sev-milan")
    data = carried_report_data(EvidenceKind.SEV_SNP, report)
    with FakeTsmKernel(report_dir, provider="sev_guest", outblob=report):
        attester = ConfigfsTsmAttester(report_dir, provider="sev_guest")
        with caplog.at_level(logging.WARNING, logger="blindai"):
            attester.evidence(data)
            attester.evidence(data)
    warnings = [r for r in caplog.records if "no SEV-SNP certificate table" in r.getMessage()]
    assert len(warnings) == 1
    assert "KdsCertificateSource" in warnings[0].getMessage()


def test_outblob_over_the_limit_is_refused_unread(report_dir: Path):
    huge = b"\0" * (ATTRIBUTE_MAX_BYTES + 1)
    with FakeTsmKernel(report_dir, provider="tdx_guest", outblob=huge):
        attester = ConfigfsTsmAttester(report_dir, provider="tdx_guest")
        with pytest.raises(EvidenceError, match=f"larger than {ATTRIBUTE_MAX_BYTES} bytes"):
            attester.evidence(bytes(64))


def _provider_fifo(entry: Path) -> None:
    os.mkfifo(entry / "provider")  # nobody ever writes it


def _provider_directory(entry: Path) -> None:
    (entry / "provider").mkdir()


def _provider_symlink(entry: Path) -> None:
    (entry / "provider").symlink_to("/etc/hostname")


@pytest.mark.parametrize(
    "make,match",
    [
        (_provider_fifo, "no answer in time"),
        (_provider_directory, "a directory, not an attribute file"),
        (_provider_symlink, "Too many levels of symbolic links"),
    ],
)
def test_probe_refuses_a_provider_that_is_no_attribute(
    report_dir: Path, make: Callable[[Path], None], match: str
):
    with HostileTsmEntries(report_dir, make):
        with pytest.raises(
            ConfigurationError, match=f"cannot read the configfs-tsm provider.*{match}"
        ):
            ConfigfsTsmAttester.probe(report_dir, io_timeout=0.05)


def test_a_long_provider_line_is_not_read_whole(report_dir: Path):
    def long_provider(entry: Path) -> None:
        (entry / "provider").write_text("tdx_guest" + " " * 10_000 + "\n")

    with HostileTsmEntries(report_dir, long_provider):
        with pytest.raises(ConfigurationError, match="larger than 64 bytes"):
            ConfigfsTsmAttester.probe(report_dir)


def test_an_inblob_nobody_takes_is_an_evidence_error_in_bounded_time(report_dir: Path):
    def stuck(entry: Path) -> None:
        for name in ("generation", "outblob", "provider"):
            (entry / name).write_bytes(b"")
        os.mkfifo(entry / "inblob")  # the "kernel" never reads it

    with HostileTsmEntries(report_dir, stuck):
        attester = ConfigfsTsmAttester(report_dir, provider="tdx_guest", io_timeout=0.05)
        with pytest.raises(EvidenceError, match="no answer in time"):
            attester.evidence(bytes(64))


def test_an_entry_removed_under_us_is_an_evidence_error(report_dir: Path):
    """It was a ConfigurationError (500) saying the directory was no configfs-tsm, after the
    settle timeout, about a directory probed at start-up."""
    with HostileTsmEntries(report_dir, os.rmdir):
        attester = ConfigfsTsmAttester(report_dir, provider="tdx_guest", settle_timeout=30)
        with pytest.raises(EvidenceError, match="was removed while its report was collected"):
            attester.evidence(bytes(64))
