"""Every kind of TEE evidence BlindAI verifies, each described once, in :data:`KINDS`.

A :class:`KindSpec` gives a kind's policy section, the package holding its verifier, policy
and claims (``<prefix>Verifier``, ``<prefix>Policy``, ``<prefix>Claims``, imported on first
use, so that this table loads no verifier and no dcap-qvl), the text the CLI shows for the
kind's default policy, and, for kinds a BlindAI server can collect, its ``--tee`` name, the
device it reads (:class:`Device`: the server setting naming the path, and its default) and
the sealing key its sealed store can use (``sealing``; none: ``--store-key-file``). Read
by :func:`blindai.attestation.verifier_for`, :class:`~blindai.attestation.Policy`, the
server's settings and attester selection, and the CLI. Adding a kind is one entry here (with
its :class:`~blindai.attestation.EvidenceKind` member).

Example::

    >>> from blindai.attestation.kinds import spec_for_tee
    >>> spec = spec_for_tee("gramine-sgx")
    >>> spec.kind.value, spec.section, str(spec.device.default)
    ('sgx', 'sgx', '/dev/attestation')
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blindai.attestation.claims import EvidenceKind, VerifiedClaims
from blindai.errors import ConfigurationError, EvidenceError

if TYPE_CHECKING:
    from blindai.attestation import Verifier
    from blindai.attestation.policy import KindPolicy

__all__ = [
    "CONFIGFS_TSM",
    "DEVICES",
    "GRAMINE",
    "KINDS",
    "NSM",
    "SECTIONS",
    "TEE_CHOICES",
    "Device",
    "KindSpec",
    "server_kind",
    "spec_for",
    "spec_for_section",
    "spec_for_tee",
]


@dataclass(frozen=True)
class Device:
    """A TEE's device interface on the server.

    ``setting`` is the :class:`~blindai.server.ServerSettings` field (and ``serve`` flag) that
    names its path, ``default`` that path's default, and ``provider`` the server's evidence
    provider for it (``gramine``, ``configfs-tsm``, ``nsm``), looked up by the server.
    """

    setting: str
    default: Path
    provider: str


GRAMINE = Device("attestation_dir", Path("/dev/attestation"), "gramine")
CONFIGFS_TSM = Device("tsm_report_dir", Path("/sys/kernel/config/tsm/report"), "configfs-tsm")
NSM = Device("nsm_device", Path("/dev/nsm"), "nsm")


@dataclass(frozen=True)
class KindSpec:
    """One kind of evidence: how it is verified, judged and (server side) collected."""

    kind: EvidenceKind
    section: str
    """The policy file's section, ``[sgx]``."""
    package: str
    """The package (under ``blindai.attestation``) exporting ``<prefix>Verifier``,
    ``<prefix>Policy`` and ``<prefix>Claims``."""
    prefix: str
    defaults: str
    """What the kind's default policy checks, for the CLI's note (the measurement aside)."""
    tee: str | None = None
    """The server's ``--tee`` name for it; None when a BlindAI server cannot collect it."""
    device: Device | None = None
    """Where the server collects it."""
    sealing: str | None = None
    """The key the server's sealed store derives on this TEE (``gramine-mrenclave``,
    ``snp-derived-key``: :mod:`blindai.server.store.keysources`); None: it has no sealing key,
    and a store needs ``--store-key-file``."""
    beside: bool = False
    """Evidence of a device beside the server's TEE (the GPU), never of the server itself: a
    client refuses it as a server's evidence (:func:`server_kind`)."""

    @property
    def module(self) -> str:
        """The package's full name, ``blindai.attestation.<package>``."""
        return f"blindai.attestation.{self.package}"

    def _export(self, suffix: str) -> Any:
        return getattr(importlib.import_module(self.module), self.prefix + suffix)

    def verifier_class(self) -> Any:
        """The verifier class (it has ``with_embedded_roots()``)."""
        return self._export("Verifier")

    def policy_class(self) -> type[KindPolicy]:
        """The per-kind policy class."""
        cls: type[KindPolicy] = self._export("Policy")
        return cls

    def claims_class(self) -> type[VerifiedClaims]:
        """The verified claims class."""
        cls: type[VerifiedClaims] = self._export("Claims")
        return cls

    def verifier(self) -> Verifier:
        """A verifier trusting only the embedded (pinned) vendor roots."""
        verifier: Verifier = self.verifier_class().with_embedded_roots()
        return verifier


_DCAP = "TCB status UpToDate only, debug refused"
_SNP = (
    "debug refused (guest policy bit 19), a migration agent refused (bit 18), CXL refused "
    "(bit 21), the most privileged VMPL only; any firmware TCB (no min_tcb)"
)
_NITRO = "debug refused (PCR0 all zero), the document fresh (max_age_seconds)"
_GPU = "no check beyond authenticity: no minimum driver or VBIOS version"
KINDS: tuple[KindSpec, ...] = (
    # kind, policy section, package, class prefix, defaults note, --tee name, device, sealing
    KindSpec(
        EvidenceKind.SGX, "sgx", "sgx", "Sgx", _DCAP, "gramine-sgx", GRAMINE, "gramine-mrenclave"
    ),
    KindSpec(EvidenceKind.TDX, "tdx", "tdx", "Tdx", _DCAP, "tdx", CONFIGFS_TSM),
    KindSpec(
        EvidenceKind.SEV_SNP,
        "sev_snp",
        "snp",
        "Snp",
        _SNP,
        "sev-snp",
        CONFIGFS_TSM,
        "snp-derived-key",
    ),
    KindSpec(EvidenceKind.NITRO, "nitro", "nitro", "Nitro", _NITRO, "nitro", NSM),
    # the GPU beside the CPU TEE: its evidence comes with the CPU's (serve --device cuda)
    KindSpec(EvidenceKind.NVIDIA_GPU, "nvidia_gpu", "nvidia_gpu", "NvidiaGpu", _GPU, beside=True),
)

SECTIONS: tuple[str, ...] = tuple(spec.section for spec in KINDS)
"""The policy file's sections, in table order."""
TEE_CHOICES: tuple[str, ...] = ("auto", "simulation", *(s.tee for s in KINDS if s.tee))
"""The values of ``blindai serve --tee``: ``auto`` probes the devices, ``simulation`` has none."""
DEVICES: tuple[Device, ...] = tuple(dict.fromkeys(s.device for s in KINDS if s.device))
"""The server's device interfaces, once each, in the order ``--tee auto`` probes them."""


def spec_for(kind: EvidenceKind) -> KindSpec:
    """The table entry for ``kind``; ConfigurationError for simulated evidence."""
    for spec in KINDS:
        if spec.kind is kind:
            return spec
    raise ConfigurationError(
        "simulated evidence is verified only by UnsafeSimulationVerifier, by explicit opt-in"
    )


def spec_for_section(section: str) -> KindSpec | None:
    """The entry whose policy section is ``section``, if any."""
    return next((spec for spec in KINDS if spec.section == section), None)


def spec_for_tee(tee: str) -> KindSpec:
    """The entry the server's ``--tee`` name ``tee`` collects; ConfigurationError if none."""
    for spec in KINDS:
        if spec.tee == tee:
            return spec
    raise ConfigurationError(f"unknown TEE {tee!r}: choose one of {', '.join(TEE_CHOICES)}")


def server_kind(kind: EvidenceKind) -> EvidenceKind:
    """``kind`` when its evidence can attest a server; EvidenceError for a device beside it.

    A server names the kind of its own evidence: a GPU report named so would be verified by the
    GPU verifier against the policy's ``[nvidia_gpu]`` section, and its requester nonce (any 32
    bytes the host chose, e.g. SHA-256 of its certificate) would pass for the report data of a
    TEE that was never there.
    """
    if any(spec.kind is kind and spec.beside for spec in KINDS):
        raise EvidenceError(
            f"{kind.value} evidence attests a device beside the server's TEE, not the server: "
            "the server must send the evidence of its own TEE"
        )
    return kind
