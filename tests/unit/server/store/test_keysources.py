"""Store-key sources against directories laid out like their devices; SNP's ioctl packing.

The SNP firmware is played by a function standing for ``fcntl.ioctl``: it reads the request
through the addresses the real structures carry and answers through them, as the kernel does.
The real ``fcntl.ioctl`` is exercised up to the kernel: a regular file answers ENOTTY.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import logging
import os
import stat
import struct
from pathlib import Path

import pytest

from blindai.attestation.claims import EvidenceKind
from blindai.errors import ConfigurationError
from blindai.server.store import (
    GramineSealingKey,
    KeyFile,
    KeySourcePaths,
    SealedStore,
    SimulationKeyFile,
    SnpDerivedKey,
    StoredKey,
    store_key_source,
)
from blindai.server.store._sev_guest import (
    SNP_GET_DERIVED_KEY,
    DerivedKeyRequest,
    DerivedKeyResponse,
    GuestRequest,
)
from blindai.server.store.keysources import SIMULATION_KEY_NAME

# -- Gramine


def gramine_dir(tmp_path: Path, key: bytes) -> Path:
    """``/dev/attestation`` as Gramine lays it out, with the MRENCLAVE sealing key."""
    root = tmp_path / "attestation"
    (root / "keys").mkdir(parents=True)
    (root / "attestation_type").write_text("dcap\n")
    (root / "keys" / "_sgx_mrenclave").write_bytes(key)
    (root / "keys" / "_sgx_mrsigner").write_bytes(bytes(16))
    return root


def test_gramine_sealing_key(tmp_path: Path):
    key = bytes(range(16))
    source = GramineSealingKey(gramine_dir(tmp_path, key))
    assert source.material() == key
    assert source.protects


def test_gramine_key_opens_the_store_only_in_the_same_enclave(tmp_path: Path):
    record = StoredKey(key_id="k1", name="alice", key_hash=bytes(32), created_ns=1)
    ours = GramineSealingKey(gramine_dir(tmp_path / "a", bytes(range(16)))).material()
    other = GramineSealingKey(gramine_dir(tmp_path / "b", bytes(range(1, 17)))).material()
    with SealedStore(tmp_path / "store", key_material=ours) as store:
        store.put_key(record)
    with pytest.raises(ConfigurationError, match="sealed with another key"):
        SealedStore(tmp_path / "store", key_material=other)
    with SealedStore(tmp_path / "store", key_material=ours) as store:
        assert store.load_keys() == [record]


def test_gramine_without_sealing_key(tmp_path: Path):
    with pytest.raises(ConfigurationError, match="no Gramine sealing key"):
        GramineSealingKey(tmp_path / "attestation").material()


@pytest.mark.parametrize("size", [0, 15, 32])
def test_gramine_key_of_the_wrong_size(tmp_path: Path, size: int):
    with pytest.raises(ConfigurationError, match="not a 16-byte SGX key"):
        GramineSealingKey(gramine_dir(tmp_path, bytes(size))).material()


def test_a_huge_gramine_key_file_is_refused_unread(tmp_path: Path):
    """A sparse 1 TiB file where the key belongs: read whole, it was a MemoryError (or the
    machine's memory); 17 bytes say enough."""
    root = gramine_dir(tmp_path, b"")
    os.truncate(root / "keys" / "_sgx_mrenclave", 1 << 40)
    with pytest.raises(ConfigurationError, match="holds more than 16 bytes"):
        GramineSealingKey(root).material()


# -- SEV-SNP


def test_snp_structures_match_the_uapi_layout():
    assert ctypes.sizeof(DerivedKeyRequest) == 32
    assert ctypes.sizeof(DerivedKeyResponse) == 64
    assert ctypes.sizeof(GuestRequest) == 32
    assert SNP_GET_DERIVED_KEY == 0xC0205301
    request = DerivedKeyRequest(
        root_key_select=1, guest_field_select=0x29, vmpl=2, guest_svn=3, tcb_version=4
    )
    assert bytes(request) == struct.pack("<IIQIIQ", 1, 0, 0x29, 2, 3, 4)
    guest = GuestRequest(msg_version=1, req_data=0x1122, resp_data=0x3344, exitinfo2=0x55)
    assert bytes(guest) == struct.pack("<B7xQQQ", 1, 0x1122, 0x3344, 0x55)


class FakeSevGuest:
    """The sev-guest driver and firmware: a key derived from the fields the request selects."""

    def __init__(self, measurement: bytes, policy: int, *, status: int = 0) -> None:
        self.measurement, self.policy, self.status = measurement, policy, status
        self.requests: list[tuple[int, bytes, int]] = []

    def __call__(self, fd: int, request: int, arg: GuestRequest) -> int:
        raw = bytes(arg)  # what the kernel copies from user space
        msg_version, req_data, resp_data, _ = struct.unpack("<B7xQQQ", raw)
        key_req = ctypes.string_at(req_data, ctypes.sizeof(DerivedKeyRequest))
        self.requests.append((request, key_req, msg_version))
        root, _rsvd, select, vmpl, svn, tcb = struct.unpack("<IIQIIQ", key_req)
        mixed = struct.pack("<IQI", root, select, vmpl)
        if select & (1 << 3):
            mixed += self.measurement
        if select & 1:
            mixed += struct.pack("<Q", self.policy)
        if select & (1 << 4):
            mixed += struct.pack("<I", svn)
        if select & (1 << 5):
            mixed += struct.pack("<Q", tcb)
        answer = struct.pack("<I28x", self.status) + hashlib.sha256(mixed).digest()
        ctypes.memmove(resp_data, answer, len(answer))
        return 0


def sev_guest_device(tmp_path: Path) -> Path:
    device = tmp_path / "dev" / "sev-guest"
    device.parent.mkdir(parents=True, exist_ok=True)
    device.write_bytes(b"")
    return device


def test_snp_derived_key_request_and_response(tmp_path: Path):
    firmware = FakeSevGuest(bytes(range(48)), policy=0x30000)
    source = SnpDerivedKey(sev_guest_device(tmp_path), ioctl=firmware)
    key = source.material()
    ((request, key_req, msg_version),) = firmware.requests
    assert request == SNP_GET_DERIVED_KEY and msg_version == 1
    # VCEK root key, measurement and policy mixed in, VMPL 0, no SVN, no TCB version
    assert key_req == struct.pack("<IIQIIQ", 0, 0, 0b1001, 0, 0, 0)
    expected = struct.pack("<IQI", 0, 0b1001, 0) + bytes(range(48)) + struct.pack("<Q", 0x30000)
    assert key == hashlib.sha256(expected).digest()


def test_snp_key_changes_with_the_measurement_and_the_policy(tmp_path: Path):
    device = sev_guest_device(tmp_path)

    def key(measurement: bytes, policy: int) -> bytes:
        return SnpDerivedKey(device, ioctl=FakeSevGuest(measurement, policy)).material()

    base = key(bytes(48), 0x30000)
    assert base == key(bytes(48), 0x30000)
    assert base != key(b"\x01" + bytes(47), 0x30000)
    assert base != key(bytes(48), 0x30000 | (1 << 19))  # debug allowed: another key


def test_snp_firmware_status_is_an_error(tmp_path: Path):
    firmware = FakeSevGuest(bytes(48), 0, status=0x16)
    with pytest.raises(ConfigurationError, match="status 0x16"):
        SnpDerivedKey(sev_guest_device(tmp_path), ioctl=firmware).material()


def test_snp_ioctl_failure_reports_the_firmware_error(tmp_path: Path):
    def failing(fd: int, request: int, arg: GuestRequest) -> int:
        arg.exitinfo2 = (0x2 << 32) | 0x7  # as the driver writes it back
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(ConfigurationError, match="firmware error 0x7, VMM error 0x2"):
        SnpDerivedKey(sev_guest_device(tmp_path), ioctl=failing).material()


def test_snp_real_ioctl_on_a_file_that_is_not_the_device(tmp_path: Path):
    with pytest.raises(ConfigurationError, match="not an SEV-SNP guest device"):
        SnpDerivedKey(sev_guest_device(tmp_path)).material()


def test_snp_without_the_device(tmp_path: Path):
    with pytest.raises(ConfigurationError, match="sev-guest driver"):
        SnpDerivedKey(tmp_path / "sev-guest").material()


# -- key files


def test_key_file_raw_and_hex(tmp_path: Path):
    key = bytes(range(32))
    raw, text = tmp_path / "raw.key", tmp_path / "hex.key"
    raw.write_bytes(key)
    text.write_text(key.hex() + "\n")
    for path in (raw, text):
        path.chmod(0o600)
        assert KeyFile(path).material() == key


@pytest.mark.parametrize("content", [b"", b"short", bytes(31), bytes(33), b"zz" * 32])
def test_key_file_of_the_wrong_form(tmp_path: Path, content: bytes):
    path = tmp_path / "store.key"
    path.write_bytes(content)
    with pytest.raises(ConfigurationError, match="32 raw bytes or 64 hex digits"):
        KeyFile(path).material()


def test_key_file_missing(tmp_path: Path):
    with pytest.raises(ConfigurationError, match="cannot read store key file"):
        KeyFile(tmp_path / "absent.key").material()


def test_key_file_readable_by_others_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    path = tmp_path / "store.key"
    path.write_bytes(bytes(32))
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="blindai.server.store"):
        KeyFile(path).material()
    assert "group or others" in caplog.text
    caplog.clear()
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="blindai.server.store"):
        KeyFile(path).material()
    assert caplog.text == ""


def test_simulation_key_is_made_once_0600(tmp_path: Path):
    store_dir = tmp_path / "store"
    source = SimulationKeyFile(store_dir)
    first = source.material()
    path = store_dir / SIMULATION_KEY_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == 32 and source.material() == first
    assert not source.protects and "PROTECTS NOTHING" in source.description
    path.unlink()
    assert SimulationKeyFile(store_dir).material() != first


def test_a_huge_key_file_is_read_no_further_than_a_key(tmp_path: Path):
    path = tmp_path / "store.key"
    path.write_bytes(b"x" * 10_000)
    with pytest.raises(ConfigurationError, match=r"\(more than 128 bytes found\)"):
        KeyFile(path).material()


def test_a_simulation_key_that_is_a_link_is_not_followed(tmp_path: Path):
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    elsewhere = tmp_path / "elsewhere.key"
    elsewhere.write_bytes(bytes(32))
    (store_dir / SIMULATION_KEY_NAME).symlink_to(elsewhere)
    with pytest.raises(ConfigurationError, match="a symbolic link"):
        SimulationKeyFile(store_dir).material()


@pytest.mark.parametrize("kind", ["fifo", "huge"])
def test_a_simulation_key_that_is_not_a_small_file_is_refused_unread(tmp_path: Path, kind: str):
    """A FIFO blocked the start for ever; a sparse 1 TiB file was read whole."""
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    path = store_dir / SIMULATION_KEY_NAME
    if kind == "fifo":
        os.mkfifo(path)
        match = "not a regular file"
    else:
        path.write_bytes(b"")
        os.truncate(path, 1 << 40)
        match = "more than 128 bytes"
    with pytest.raises(ConfigurationError, match=match):
        SimulationKeyFile(store_dir).material()


# -- the choice per TEE kind


def test_each_kind_gets_its_platform_source(tmp_path: Path):
    paths = KeySourcePaths(
        store_dir=tmp_path / "store",
        attestation_dir=tmp_path / "attestation",
        sev_guest_device=tmp_path / "sev-guest",
    )
    assert store_key_source(EvidenceKind.SGX, paths=paths) == GramineSealingKey(
        tmp_path / "attestation"
    )
    assert store_key_source(EvidenceKind.SEV_SNP, paths=paths) == SnpDerivedKey(
        tmp_path / "sev-guest"
    )
    assert store_key_source(EvidenceKind.SIMULATION, paths=paths) == SimulationKeyFile(
        tmp_path / "store"
    )


@pytest.mark.parametrize("kind", [EvidenceKind.TDX, EvidenceKind.NITRO])
def test_tdx_and_nitro_need_a_key_file(tmp_path: Path, kind: EvidenceKind):
    paths = KeySourcePaths(store_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="needs --store-key-file"):
        store_key_source(kind, paths=paths)
    key_file = tmp_path / "k"
    assert store_key_source(kind, paths=paths, key_file=key_file) == KeyFile(key_file)


def test_a_key_file_overrides_the_platform(tmp_path: Path):
    paths = KeySourcePaths(store_dir=tmp_path)
    key_file = tmp_path / "k"
    for kind in EvidenceKind:
        assert store_key_source(kind, paths=paths, key_file=key_file) == KeyFile(key_file)
