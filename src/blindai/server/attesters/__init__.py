"""Evidence *collection* on the server: one attester per platform, chosen by ``--tee``.

Each attester follows :class:`Attester`: ``evidence(report_data)`` returns the platform's
evidence binding the 64-byte report data, ``endorsements()`` what a verifier needs beside it
(SNP certificates; SGX collateral; TDX collateral with ``--pccs-url``, fetched through
:mod:`blindai.attestation._collateral`), ``blindai_collateral()`` BlindAI 0.6's
``/collateral`` map (SGX only).

================  ===========================  ==========================================
``--tee``         attester                     device interface (path: the kind table)
================  ===========================  ==========================================
``gramine-sgx``   :class:`GramineAttester`     ``attestation_dir`` (Gramine, DCAP)
``tdx``           :class:`ConfigfsTsmAttester` ``tsm_report_dir`` (configfs-tsm)
``sev-snp``       :class:`ConfigfsTsmAttester` ``tsm_report_dir`` (configfs-tsm)
``nitro``         :class:`NsmAttester`         ``nsm_device`` (Nitro Secure Module)
``simulation``    :class:`SimulationAttester`  none: protects nothing, development only
================  ===========================  ==========================================

The ``--tee`` names and the device paths' defaults come from
:data:`blindai.attestation.kinds.KINDS`.

Beside the CPU TEE, ``--device cuda`` adds :class:`NvidiaGpuAttester`: the GPU's SPDM report
through NVML (:class:`PynvmlDevice`), answering the nonce derived from the TLS certificate.

Example (without a TEE, ``auto`` refuses rather than simulate)::

    >>> from pathlib import Path
    >>> from blindai.server.attesters import AttesterPaths, select_attester
    >>> nowhere = AttesterPaths(attestation_dir=Path("/nonexistent/a"),
    ...     tsm_report_dir=Path("/nonexistent/t"), nsm_device=Path("/nonexistent/nsm"))
    >>> select_attester("auto", paths=nowhere)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    blindai.errors.ConfigurationError: --tee auto found no TEE: ...
    >>> select_attester("simulation").kind.value
    'simulation'
"""

from __future__ import annotations

from blindai.attestation._collateral import (
    INTEL_PCS_URL,
    FetchResponse,
    PcsCollateralSource,
    PcsFetcher,
    UrllibFetcher,
)
from blindai.server.attesters.base import Attester
from blindai.server.attesters.configfs_tsm import ConfigfsTsmAttester
from blindai.server.attesters.gramine import GramineAttester
from blindai.server.attesters.nitro import IoctlTransport, NsmAttester, NsmTransport
from blindai.server.attesters.nvidia_gpu import NvidiaGpuAttester, Nvml, PynvmlDevice
from blindai.server.attesters.select import TEE_CHOICES, AttesterPaths, select_attester
from blindai.server.attesters.simulation import SimulationAttester

__all__ = [
    "INTEL_PCS_URL",
    "TEE_CHOICES",
    "Attester",
    "AttesterPaths",
    "ConfigfsTsmAttester",
    "FetchResponse",
    "GramineAttester",
    "IoctlTransport",
    "NsmAttester",
    "NsmTransport",
    "NvidiaGpuAttester",
    "Nvml",
    "PcsCollateralSource",
    "PcsFetcher",
    "PynvmlDevice",
    "SimulationAttester",
    "UrllibFetcher",
    "select_attester",
]
