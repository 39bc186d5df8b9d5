"""Where the store key comes from: the TEE's sealing key where it has one, else the deployment.

=================  ==========================  ================================================
TEE kind           source                      bound to
=================  ==========================  ================================================
SGX (Gramine)      :class:`GramineSealingKey`  MRENCLAVE + CPU (``keys/_sgx_mrenclave``)
SEV-SNP            :class:`SnpDerivedKey`      launch measurement + guest policy + chip (VCEK)
TDX, Nitro         :class:`KeyFile`            whatever delivers the file (no sealing key)
simulation         :class:`SimulationKeyFile`  nothing: a 0600 file beside the store
=================  ==========================  ================================================

Which kind has which sealing key is stated once, in the TEE-kind table
(:attr:`blindai.attestation.kinds.KindSpec.sealing`); :data:`PLATFORM_SOURCES` makes each.
``--store-key-file`` (:class:`KeyFile`) overrides the platform's source on every kind (replicas
sharing one store need one key). A source gives key *material*; the store derives its AES-256
and HMAC keys from it with HKDF-SHA256 (:class:`blindai.server.store._crypto.EntryKeys`).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from blindai.attestation.claims import EvidenceKind
from blindai.attestation.kinds import spec_for
from blindai.errors import ConfigurationError
from blindai.localfiles import open_regular
from blindai.server.store._files import write_atomic
from blindai.server.store._sev_guest import (
    FIELD_MEASUREMENT,
    FIELD_POLICY,
    Ioctl,
    derived_key,
)

__all__ = [
    "DEFAULT_SEV_GUEST_DEVICE",
    "PLATFORM_SOURCES",
    "SIMULATION_KEY_NAME",
    "GramineSealingKey",
    "KeyFile",
    "KeySourcePaths",
    "SimulationKeyFile",
    "SnpDerivedKey",
    "StoreKeySource",
    "store_key_source",
]

_log = logging.getLogger("blindai.server.store")

DEFAULT_SEV_GUEST_DEVICE = Path("/dev/sev-guest")
#: the simulation key's file name inside the store directory
SIMULATION_KEY_NAME = "simulation-store.key"
_KEY_FILE_BYTES = 32


class StoreKeySource(Protocol):
    """Gives the store's key material (at least 16 bytes)."""

    @property
    def description(self) -> str:
        """One line for the start-up banner."""
        ...

    @property
    def protects(self) -> bool:
        """False when the material is readable outside the TEE (simulation)."""
        ...

    def material(self) -> bytes:
        """The key material; ConfigurationError when the source cannot give it."""
        ...


@dataclass(frozen=True)
class GramineSealingKey:
    """Gramine's MRENCLAVE sealing key, ``<attestation_dir>/keys/_sgx_mrenclave`` (16 bytes)."""

    attestation_dir: Path
    description: str = "SGX sealing key (MRENCLAVE) from Gramine"
    protects: bool = True

    def material(self) -> bytes:
        """The 16-byte sealing key of this enclave on this CPU."""
        path = self.attestation_dir / "keys" / "_sgx_mrenclave"
        try:
            with open(path, "rb") as f:
                key = f.read(17)  # one more than a key: never the whole of a huge file
        except OSError as exc:
            raise ConfigurationError(
                f"no Gramine sealing key at {path} ({exc.strerror}): Gramine 1.5 or later, "
                "inside an SGX enclave, exposes it"
            ) from exc
        if len(key) != 16:
            found = "more than 16" if len(key) > 16 else len(key)
            raise ConfigurationError(f"{path} holds {found} bytes, not a 16-byte SGX key")
        return key


@dataclass(frozen=True)
class SnpDerivedKey:
    """The SEV-SNP firmware's derived key, bound to the measurement and the guest policy."""

    device: Path = DEFAULT_SEV_GUEST_DEVICE
    vmpl: int = 0
    ioctl: Ioctl = field(default=fcntl.ioctl, compare=False, repr=False)
    description: str = "SEV-SNP derived key (VCEK, measurement and policy)"
    protects: bool = True

    def material(self) -> bytes:
        """32 bytes from ``SNP_GET_DERIVED_KEY``: the same launch digest and policy on the
        same chip get the same key."""
        select = FIELD_MEASUREMENT | FIELD_POLICY
        return derived_key(self.device, field_select=select, vmpl=self.vmpl, ioctl=self.ioctl)


#: the most a key file is read: 64 hex digits with room for spaces and line ends, plus one
_KEY_FILE_READ = 4 * _KEY_FILE_BYTES + 1


def _parse_key_file(data: bytes, path: Path) -> bytes:
    if len(data) == _KEY_FILE_BYTES:
        return data
    text = data.strip()
    if len(text) == 2 * _KEY_FILE_BYTES:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    found = f"more than {_KEY_FILE_READ - 1}" if len(data) >= _KEY_FILE_READ else len(data)
    raise ConfigurationError(
        f"{path}: a store key file holds 32 raw bytes or 64 hex digits ({found} bytes found)"
    )


@dataclass(frozen=True)
class KeyFile:
    """A key the deployment provides (``--store-key-file``): 32 raw bytes or 64 hex digits.

    The store is then exactly as safe as the way this file reaches the TEE: delivered by a key
    broker after attestation into the TEE's memory, the operator cannot read it; sitting on
    the host's disk, the operator can, and can open the store.
    """

    path: Path
    description: str = "key file given by the deployment (--store-key-file)"
    protects: bool = True

    def material(self) -> bytes:
        """The file's 32-byte key; warns when group or others may read the file."""
        try:  # a FIFO or a device is refused unread (a FIFO would hang the start)
            with open_regular(self.path, "store key file") as f:
                mode = os.fstat(f.fileno()).st_mode
                data = f.read(_KEY_FILE_READ)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read store key file {self.path}: {exc.strerror}"
            ) from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            _log.warning("store key file %s is accessible to group or others", self.path)
        return _parse_key_file(data, self.path)


@dataclass(frozen=True)
class SimulationKeyFile:
    """Simulation: a random key in ``<store>/simulation-store.key`` (0600), made on first start.

    It protects nothing: anyone who can read the directory can open the store.
    """

    store_dir: Path
    description: str = "simulation key file beside the store: PROTECTS NOTHING"
    protects: bool = False

    def material(self) -> bytes:
        """The key, created (atomically, 0600) when the file does not exist yet."""
        path = self.store_dir / SIMULATION_KEY_NAME
        try:
            self.store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not path.exists():
                write_atomic(path, [os.urandom(_KEY_FILE_BYTES)])
            data = _read_beside_store(path)
        except OSError as exc:
            reason = "a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
            raise ConfigurationError(f"cannot use simulation key {path}: {reason}") from exc
        return _parse_key_file(data, path)


def _read_beside_store(path: Path) -> bytes:
    """The start of a file in the store directory: a link is not followed, and anything but a
    regular file (a FIFO would block the start) is refused unread."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigurationError(f"cannot use simulation key {path}: not a regular file")
        return f.read(_KEY_FILE_READ)


@dataclass(frozen=True, kw_only=True)
class KeySourcePaths:
    """Where the platform sources look (configurable for tests and odd systems)."""

    store_dir: Path
    attestation_dir: Path = Path("/dev/attestation")
    sev_guest_device: Path = DEFAULT_SEV_GUEST_DEVICE


#: each sealing key named in the TEE-kind table (``KindSpec.sealing``), and simulation's file
PLATFORM_SOURCES: Mapping[str, Callable[[KeySourcePaths], StoreKeySource]] = {
    "gramine-mrenclave": lambda p: GramineSealingKey(p.attestation_dir),
    "snp-derived-key": lambda p: SnpDerivedKey(p.sev_guest_device),
    "simulation-key-file": lambda p: SimulationKeyFile(p.store_dir),
}


def _sealing(kind: EvidenceKind) -> str | None:
    if kind is EvidenceKind.SIMULATION:
        return "simulation-key-file"
    return spec_for(kind).sealing


def store_key_source(
    kind: EvidenceKind, *, paths: KeySourcePaths, key_file: Path | None = None
) -> StoreKeySource:
    """The key source for a store on ``kind``; ``key_file`` (the deployment's key) wins."""
    if key_file is not None:
        return KeyFile(key_file)
    sealing = _sealing(kind)
    if sealing is None:
        raise ConfigurationError(
            f"--store on {kind.value} needs --store-key-file: {kind.value} has no sealing key, "
            "so the deployment must provide the store key (e.g. from a key broker after "
            "attestation)"
        )
    return PLATFORM_SOURCES[sealing](paths)
