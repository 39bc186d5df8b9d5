"""Two server processes writing one store directory (the host removed ``.lock``): each write
of the manifest checks that the manifest on disk is the one its process wrote last, and the
check and the replacement now run under a lock on the manifest file itself, so that two
writes at the same instant cannot both pass it."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from blindai.server.store import SealedStore, StoredKey
from blindai.server.store._files import write_new
from blindai.server.store._manifest_file import OnDisk, held

from ._race_child import KEY

CHILD = Path(__file__).with_name("_race_child.py")
TRIALS = 40


class Writer:
    def __init__(self, root: Path, who: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(root), who],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def answer(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def ask(self, line: str) -> str:
        self.send(line)
        return self.answer()

    def stop(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(30)
        self.proc.stdout.close()


def test_two_processes_writing_at_once_never_both_pass_the_manifest_check(tmp_path: Path):
    """Before, each write read the manifest's nonce, then wrote: two writes at the same
    instant both passed, and the one renamed first was lost from the manifest although its
    caller was told it was stored (its record refused at the next start). Now at most one of
    two simultaneous writes is acknowledged, and every acknowledged record loads."""
    writers = {who: Writer(tmp_path, who) for who in ("a", "b")}
    acked: dict[int, list[str]] = {}
    try:
        for trial in range(TRIALS):
            assert writers["a"].ask(f"open {trial}") == "opened"
            assert writers["b"].ask(f"open {trial}") == "opened"  # its .lock was removed
            for w in writers.values():  # both at once: the two lines leave together
                w.send(f"write {trial}")
            answers = {who: w.answer() for who, w in writers.items()}
            assert set(answers.values()) <= {"ack", "refused"}
            acked[trial] = [f"{who}-{trial}" for who, a in answers.items() if a == "ack"]
            for w in writers.values():
                assert w.ask("close") == "closed"
    finally:
        for w in writers.values():
            w.stop()
    lost = {}
    for trial, names in acked.items():
        with SealedStore(tmp_path / str(trial), key_material=KEY) as store:
            loaded = {k.name for k in store.load_keys()}
        if not set(names) <= loaded:
            lost[trial] = sorted(set(names) - loaded)
    assert lost == {}, f"acknowledged and lost in {len(lost)} of {TRIALS} trials: {lost}"
    assert all(len(names) == 1 for names in acked.values()), acked


def test_a_first_manifest_is_made_only_where_there_is_none(tmp_path: Path):
    """With no manifest on disk, the new one is linked in only if the name is still free: two
    processes making a store's first manifest at once cannot both succeed."""
    write_new(tmp_path / "manifest", [b"first"])
    with pytest.raises(FileExistsError):
        write_new(tmp_path / "manifest", [b"second"])
    assert (tmp_path / "manifest").read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest"]  # no temporary left


def _descriptors_of(path: Path) -> list[int]:
    """This process's open flags (``/proc/self/fdinfo``) of each descriptor open on ``path``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target == str(path):
            info = Path(f"/proc/self/fdinfo/{fd}").read_text()
            found.append(int(info.split("flags:")[1].split()[0], 8))
    return found


def test_the_manifest_lock_is_taken_on_a_descriptor_open_for_writing(tmp_path: Path):
    """An NFSv4 client emulates flock() with a byte-range lock on the server, and refuses an
    exclusive one on a descriptor not open for writing (EBADF: nfs4_proc_lock, "Don't rely on
    the VFS having checked the file open mode, since it won't do this for flock() locks"). The
    manifest was opened read-only to be locked, so on an NFS store every write after the first
    manifest failed (uploads and key changes 500, a start that settles entries refused). No
    NFS here: the descriptor's mode is what is checked, and a write still goes through."""
    with SealedStore(tmp_path, key_material=KEY) as store:
        path = (tmp_path / "manifest").resolve()
        with held(path) as on_disk:
            assert on_disk.nonce is not None
            assert [flags & os.O_ACCMODE for flags in _descriptors_of(path)] == [os.O_RDWR]
        assert _descriptors_of(path) == []  # closed with the block
        record = StoredKey(
            key_id="k_0123456789abcdef", name="k", key_hash=b"\x01" * 32, created_ns=1
        )
        store.put_key(record)
        assert [k.name for k in store.load_keys()] == ["k"]


def test_a_manifest_replaced_by_a_directory_or_a_fifo_holds_no_lock_and_is_refused(
    tmp_path: Path,
):
    """Opened for writing now, a directory (EISDIR) or a FIFO at the manifest's name is still
    not locked, and a write is refused as the manifest not being this server's."""
    record = StoredKey(key_id="k_0123456789abcdef", name="k", key_hash=b"\x01" * 32, created_ns=1)
    with SealedStore(tmp_path, key_material=KEY) as store:
        path = tmp_path / "manifest"
        path.unlink()
        for make in (os.mkdir, os.mkfifo):
            make(path)
            with held(path) as on_disk:
                assert on_disk == OnDisk(True, None)
                assert _descriptors_of(path.resolve()) == []
            with pytest.raises(OSError) as info:
                store.put_key(record)
            assert info.value.errno == errno.ESTALE
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink()
