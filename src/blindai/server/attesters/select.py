"""Choosing the attester for ``--tee``: the names and devices come from the kind table.

:data:`~blindai.attestation.kinds.KINDS` says which ``--tee`` name collects which kind, from
which device (:class:`~blindai.attestation.kinds.Device`); this module maps each device's
provider to the attester that reads it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blindai.attestation._collateral import (
    INTEL_PCS_URL,
    PcsCollateralSource,
    PcsFetcher,
    UrllibFetcher,
)
from blindai.attestation.claims import EvidenceKind
from blindai.attestation.kinds import (
    CONFIGFS_TSM,
    DEVICES,
    GRAMINE,
    NSM,
    TEE_CHOICES,
    Device,
    spec_for_tee,
)
from blindai.errors import ConfigurationError
from blindai.server.attesters.base import Attester
from blindai.server.attesters.configfs_tsm import ConfigfsTsmAttester
from blindai.server.attesters.gramine import GramineAttester
from blindai.server.attesters.nitro import NsmAttester, is_character_device
from blindai.server.attesters.simulation import SimulationAttester

__all__ = ["TEE_CHOICES", "AttesterPaths", "select_attester"]


@dataclass(frozen=True, kw_only=True)
class AttesterPaths:
    """Where each device interface lives: one field per :data:`~blindai.attestation.kinds.DEVICES`
    entry, named by its ``setting`` (configurable for tests and odd systems)."""

    attestation_dir: Path = GRAMINE.default
    tsm_report_dir: Path = CONFIGFS_TSM.default
    nsm_device: Path = NSM.default

    @classmethod
    def from_settings(cls, settings: Any) -> AttesterPaths:
        """The paths a :class:`~blindai.server.ServerSettings` names."""
        return cls(**{device.setting: getattr(settings, device.setting) for device in DEVICES})

    def path(self, device: Device) -> Path:
        """Where ``device`` lives."""
        path: Path = getattr(self, device.setting)
        return path


@dataclass(frozen=True)
class _Sources:
    fetcher: PcsFetcher | None
    pccs_url: str | None


def select_attester(
    tee: str,
    *,
    paths: AttesterPaths | None = None,
    fetcher: PcsFetcher | None = None,
    pccs_url: str | None = None,
) -> Attester:
    """The attester for ``tee``; raises :class:`ConfigurationError` when it cannot work here.

    ``auto`` takes the first device of the table whose interface is there (Gramine's
    ``attestation_dir`` holding ``attestation_type``, configfs-tsm's ``tsm_report_dir``
    directory, the NSM's ``nsm_device`` character device; a stray file or empty directory is
    passed over) and never falls back to simulation.
    ``fetcher`` and ``pccs_url`` serve collateral: SGX always (default: Intel's PCS), TDX only
    when ``pccs_url`` is given (without it the server serves no TDX collateral); the default
    fetcher uses ``urllib``.
    """
    paths = paths or AttesterPaths()
    sources = _Sources(fetcher, pccs_url)
    if tee == "simulation":
        return SimulationAttester()
    if tee == "auto":
        return _auto(paths, sources)
    spec = spec_for_tee(tee)
    if spec.device is None:  # pragma: no cover - every kind with a --tee name has a device
        raise ConfigurationError(f"--tee {tee} names no device")
    return _PROVIDERS[spec.device.provider](paths.path(spec.device), spec.kind, sources)


def _auto(paths: AttesterPaths, sources: _Sources) -> Attester:
    for device in DEVICES:
        if _PRESENT[device.provider](paths.path(device)):
            return _PROVIDERS[device.provider](paths.path(device), None, sources)
    raise ConfigurationError(
        "--tee auto found no TEE: no Gramine attestation interface at "
        f"{paths.attestation_dir}, no configfs-tsm at {paths.tsm_report_dir}, no Nitro Secure "
        f"Module at {paths.nsm_device}. Name the TEE with --tee, or use --tee simulation for "
        "development only (simulation protects nothing)"
    )


def _gramine(path: Path, kind: EvidenceKind | None, sources: _Sources) -> Attester:
    fetcher = sources.fetcher or UrllibFetcher()
    source = PcsCollateralSource(fetcher, base_url=sources.pccs_url or INTEL_PCS_URL)
    return GramineAttester(path, collateral=source)


def _tsm(path: Path, kind: EvidenceKind | None, sources: _Sources) -> Attester:
    source = None
    if sources.pccs_url is not None:
        source = PcsCollateralSource(sources.fetcher or UrllibFetcher(), base_url=sources.pccs_url)
    attester = ConfigfsTsmAttester.probe(path, collateral=source)
    if kind is not None and attester.kind is not kind:
        raise ConfigurationError(
            f"--tee {kind.value} asked, but configfs-tsm's provider is {attester.provider!r} "
            f"({attester.kind.value})"
        )
    return attester


def _nsm(path: Path, kind: EvidenceKind | None, sources: _Sources) -> Attester:
    return NsmAttester.open(path)


#: whether each device provider's interface is there, for ``auto``: what the platform itself
#: lays out, so that a stray file or empty directory at one place does not hide the TEE at the
#: next (a named ``--tee`` opens its device whatever is there, and says what is wrong)
_PRESENT: dict[str, Callable[[Path], bool]] = {
    GRAMINE.provider: lambda path: os.path.lexists(path / "attestation_type"),
    CONFIGFS_TSM.provider: lambda path: path.is_dir(),
    NSM.provider: is_character_device,
}

#: the attester reading each device provider of the kind table
_PROVIDERS: dict[str, Callable[[Path, EvidenceKind | None, _Sources], Attester]] = {
    GRAMINE.provider: _gramine,
    CONFIGFS_TSM.provider: _tsm,
    NSM.provider: _nsm,
}
