"""A store on a file system without hard links (exFAT here, through exfat-fuse on a loop device;
FAT and SMB shares without Unix extensions are alike): ``link`` fails with EPERM there.

ae0e972 made a store's first manifest with ``link`` (a compare-and-swap on the name being free),
so such a store could not even be opened (ConfigurationError "Operation not permitted"), where
it had worked with ``rename``. Skipped where exFAT cannot be mounted (needs root, a loop device,
``mkfs.exfat`` and ``mount.exfat-fuse``: Debian's exfatprogs and exfat-fuse).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from blindai.server.store import SealedStore, StoredKey
from blindai.server.store._files import write_new

KEY = b"k" * 32


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def exfat(tmp_path: Path) -> Iterator[Path]:
    """A freshly made exFAT file system, mounted; skipped where it cannot be."""
    tools = ("mkfs.exfat", "mount.exfat-fuse", "losetup", "umount")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing or os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip(f"no exFAT mount here (needs root, /dev/fuse, {', '.join(tools)})")
    image, mount = tmp_path / "exfat.img", tmp_path / "mnt"
    mount.mkdir()
    with image.open("wb") as f:
        f.truncate(16 << 20)
    if _run("mkfs.exfat", str(image)).returncode != 0:
        pytest.skip("mkfs.exfat failed")
    attached = _run("losetup", "-f", "--show", str(image))
    if attached.returncode != 0:
        pytest.skip(f"no loop device: {attached.stderr.strip()}")
    loop = attached.stdout.strip()
    try:
        mounted = _run("mount.exfat-fuse", loop, str(mount))
        if mounted.returncode != 0:
            pytest.skip(f"exfat-fuse did not mount: {mounted.stderr.strip()}")
        try:
            yield mount
        finally:
            _run("umount", str(mount))
    finally:
        _run("losetup", "-d", loop)


def test_a_store_opens_and_keeps_its_writes_where_there_are_no_hard_links(exfat: Path):
    probe = exfat / "probe"
    probe.write_bytes(b"")
    with pytest.raises(PermissionError):
        os.link(probe, exfat / "probe-link")  # the file system this test is about
    record = StoredKey(key_id="k_0123456789abcdef", name="k", key_hash=b"\x01" * 32, created_ns=1)
    with SealedStore(exfat / "store", key_material=KEY) as store:
        store.put_key(record)
    with SealedStore(exfat / "store", key_material=KEY) as store:
        assert store.load_keys() == [record]
        assert store.refused == []


def test_a_first_manifest_is_still_made_only_where_there_is_none(exfat: Path):
    write_new(exfat / "manifest", [b"first"])
    with pytest.raises(FileExistsError):
        write_new(exfat / "manifest", [b"second"])
    assert (exfat / "manifest").read_bytes() == b"first"
    assert sorted(p.name for p in exfat.iterdir()) == ["manifest"]  # no temporary left
