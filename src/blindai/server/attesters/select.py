"""Choosing the attester for ``--tee auto|simulation|gramine-sgx|tdx|sev-snp|nitro``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from blindai.attestation._collateral import (
    INTEL_PCS_URL,
    PcsCollateralSource,
    PcsFetcher,
    UrllibFetcher,
)
from blindai.attestation.claims import EvidenceKind
from blindai.errors import ConfigurationError
from blindai.server.attesters.base import Attester
from blindai.server.attesters.configfs_tsm import DEFAULT_TSM_REPORT_DIR, ConfigfsTsmAttester
from blindai.server.attesters.gramine import DEFAULT_ATTESTATION_DIR, GramineAttester
from blindai.server.attesters.nitro import DEFAULT_NSM_DEVICE, NsmAttester
from blindai.server.attesters.simulation import SimulationAttester

__all__ = ["TEE_CHOICES", "AttesterPaths", "select_attester"]

#: The values of ``--tee``.
TEE_CHOICES = ("auto", "simulation", "gramine-sgx", "tdx", "sev-snp", "nitro")


@dataclass(frozen=True, kw_only=True)
class AttesterPaths:
    """Where each platform's device interface lives (configurable for tests and odd systems)."""

    attestation_dir: Path = DEFAULT_ATTESTATION_DIR
    tsm_report_dir: Path = DEFAULT_TSM_REPORT_DIR
    nsm_device: Path = DEFAULT_NSM_DEVICE


def select_attester(
    tee: str,
    *,
    paths: AttesterPaths | None = None,
    fetcher: PcsFetcher | None = None,
    pccs_url: str | None = None,
) -> Attester:
    """The attester for ``tee``; raises :class:`ConfigurationError` when it cannot work here.

    ``auto`` probes Gramine (``attestation_dir``), then configfs-tsm (``tsm_report_dir``), then
    the NSM (``nsm_device``), and never falls back to simulation. ``fetcher`` and ``pccs_url``
    serve collateral: SGX always (default: Intel's PCS), TDX only when ``pccs_url`` is given
    (without it the server serves no TDX collateral); the default fetcher uses ``urllib``.
    """
    paths = paths or AttesterPaths()
    if tee == "simulation":
        return SimulationAttester()
    if tee == "gramine-sgx":
        return _gramine(paths, fetcher, pccs_url)
    if tee in ("tdx", "sev-snp"):
        return _tsm(paths, EvidenceKind(tee), fetcher, pccs_url)
    if tee == "nitro":
        return NsmAttester.open(paths.nsm_device)
    if tee == "auto":
        return _auto(paths, fetcher, pccs_url)
    raise ConfigurationError(f"unknown TEE {tee!r}: choose one of {', '.join(TEE_CHOICES)}")


def _auto(paths: AttesterPaths, fetcher: PcsFetcher | None, pccs_url: str | None) -> Attester:
    if paths.attestation_dir.is_dir():
        return _gramine(paths, fetcher, pccs_url)
    if paths.tsm_report_dir.is_dir():
        return _tsm(paths, None, fetcher, pccs_url)
    if paths.nsm_device.exists():
        return NsmAttester.open(paths.nsm_device)
    raise ConfigurationError(
        "--tee auto found no TEE: no Gramine attestation interface at "
        f"{paths.attestation_dir}, no configfs-tsm at {paths.tsm_report_dir}, no Nitro Secure "
        f"Module at {paths.nsm_device}. Name the TEE with --tee, or use --tee simulation for "
        "development only (simulation protects nothing)"
    )


def _gramine(
    paths: AttesterPaths, fetcher: PcsFetcher | None, pccs_url: str | None
) -> GramineAttester:
    source = PcsCollateralSource(fetcher or UrllibFetcher(), base_url=pccs_url or INTEL_PCS_URL)
    return GramineAttester(paths.attestation_dir, collateral=source)


def _tsm(
    paths: AttesterPaths,
    kind: EvidenceKind | None,
    fetcher: PcsFetcher | None,
    pccs_url: str | None,
) -> ConfigfsTsmAttester:
    source = None
    if pccs_url is not None:
        source = PcsCollateralSource(fetcher or UrllibFetcher(), base_url=pccs_url)
    attester = ConfigfsTsmAttester.probe(paths.tsm_report_dir, collateral=source)
    if kind is not None and attester.kind is not kind:
        raise ConfigurationError(
            f"--tee {kind.value} asked, but configfs-tsm's provider is {attester.provider!r} "
            f"({attester.kind.value})"
        )
    return attester
