"""select_attester: --tee names, auto probing order, never a silent fallback to simulation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

import blindai.server.attesters as attesters
from blindai.attestation.claims import EvidenceKind
from blindai.errors import ConfigurationError
from blindai.server.attesters import (
    TEE_CHOICES,
    AttesterPaths,
    ConfigfsTsmAttester,
    GramineAttester,
    NsmAttester,
    SimulationAttester,
    select_attester,
)
from tests.unit.attestation.pcs_fakes import FakeFetcher

from .attester_fakes import FakeTsmKernel


@pytest.fixture
def paths(tmp_path: Path) -> AttesterPaths:
    """Every device absent until a test creates it."""
    return AttesterPaths(
        attestation_dir=tmp_path / "attestation",
        tsm_report_dir=tmp_path / "tsm" / "report",
        nsm_device=tmp_path / "nsm",
    )


def make_gramine(paths: AttesterPaths, attestation_type: str = "dcap") -> None:
    paths.attestation_dir.mkdir()
    (paths.attestation_dir / "attestation_type").write_text(attestation_type)


def test_choices():
    assert TEE_CHOICES == ("auto", "simulation", "gramine-sgx", "tdx", "sev-snp", "nitro")


def test_simulation_only_when_named(paths: AttesterPaths):
    assert isinstance(select_attester("simulation", paths=paths), SimulationAttester)


def test_auto_without_any_tee_refuses_and_names_each_place(paths: AttesterPaths):
    with pytest.raises(ConfigurationError) as info:
        select_attester("auto", paths=paths)
    for place in (paths.attestation_dir, paths.tsm_report_dir, paths.nsm_device):
        assert str(place) in str(info.value)
    assert "--tee simulation" in str(info.value)


@pytest.mark.parametrize("tee", ["sgx", "SIMULATION", "", "gramine"])
def test_unknown_names_are_refused(paths: AttesterPaths, tee: str):
    with pytest.raises(ConfigurationError, match="unknown TEE"):
        select_attester(tee, paths=paths)


@pytest.mark.parametrize("tee", ["gramine-sgx", "tdx", "sev-snp", "nitro"])
def test_named_tee_without_its_device_is_refused(paths: AttesterPaths, tee: str):
    with pytest.raises(ConfigurationError):
        select_attester(tee, paths=paths)


def test_auto_prefers_gramine_and_wires_the_collateral_source(paths: AttesterPaths):
    make_gramine(paths)
    paths.nsm_device.write_bytes(b"")
    fetcher = FakeFetcher({})
    attester = select_attester("auto", paths=paths, fetcher=fetcher, pccs_url="https://pccs:8081")
    assert isinstance(attester, GramineAttester)
    assert attester.collateral is not None
    assert attester.collateral.fetcher is fetcher
    assert attester.collateral.base_url == "https://pccs:8081"


def test_auto_with_gramine_not_in_dcap_mode_refuses(paths: AttesterPaths):
    make_gramine(paths, "none")
    paths.nsm_device.write_bytes(b"")
    with pytest.raises(ConfigurationError, match="dcap"):
        select_attester("auto", paths=paths)


def test_auto_finds_configfs_tsm_before_nsm(paths: AttesterPaths):
    paths.tsm_report_dir.mkdir(parents=True)
    paths.nsm_device.write_bytes(b"")
    with FakeTsmKernel(paths.tsm_report_dir, provider="sev_guest", outblob=b""):
        attester = select_attester("auto", paths=paths)
    assert isinstance(attester, ConfigfsTsmAttester)
    assert attester.kind is EvidenceKind.SEV_SNP


def test_auto_finds_nsm(paths: AttesterPaths):
    with_nsm = replace(paths, nsm_device=Path("/dev/null"))  # a character device, as /dev/nsm
    assert isinstance(select_attester("auto", paths=with_nsm), NsmAttester)


def test_auto_passes_over_stray_files_and_empty_directories(paths: AttesterPaths):
    """A stray empty attestation_dir or a regular file at nsm_device is no TEE: auto goes on
    to the TEE that is there, or refuses naming every place, never Gramine's or the NSM's error."""
    paths.attestation_dir.mkdir()
    paths.nsm_device.write_bytes(b"")
    with pytest.raises(ConfigurationError, match="--tee auto found no TEE"):
        select_attester("auto", paths=paths)
    paths.tsm_report_dir.mkdir(parents=True)
    with FakeTsmKernel(paths.tsm_report_dir, provider="tdx_guest", outblob=b""):
        attester = select_attester("auto", paths=paths)
    assert isinstance(attester, ConfigfsTsmAttester)
    assert attester.kind is EvidenceKind.TDX


def test_named_nitro_on_a_stray_file_is_a_configuration_error(paths: AttesterPaths):
    paths.nsm_device.write_bytes(b"")
    with pytest.raises(ConfigurationError, match="no character device there"):
        select_attester("nitro", paths=paths)


@pytest.mark.parametrize("tee,provider", [("tdx", "tdx_guest"), ("sev-snp", "sev_guest")])
def test_named_tsm_kind_must_match_the_provider(paths: AttesterPaths, tee: str, provider: str):
    paths.tsm_report_dir.mkdir(parents=True)
    with FakeTsmKernel(paths.tsm_report_dir, provider=provider, outblob=b""):
        assert select_attester(tee, paths=paths).kind is EvidenceKind(tee)
        other = "sev-snp" if tee == "tdx" else "tdx"
        with pytest.raises(ConfigurationError, match=provider):
            select_attester(other, paths=paths)


def test_default_paths_are_the_real_devices():
    default = AttesterPaths()
    assert default.attestation_dir == Path("/dev/attestation")
    assert default.tsm_report_dir == Path("/sys/kernel/config/tsm/report")
    assert default.nsm_device == Path("/dev/nsm")


def test_exported_names():
    public = {n for n in dir(attesters) if not n.startswith("_")} - {
        "annotations",
        "base",
        "configfs_tsm",
        "gramine",
        "nitro",
        "nvidia_gpu",
        "select",
        "simulation",
    }
    assert set(attesters.__all__) == public
