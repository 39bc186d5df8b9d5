"""Two server processes writing one store directory (the host removed ``.lock``): each write
of the manifest checks that the manifest on disk is the one its process wrote last, and the
check and the replacement now run under a lock on the manifest file itself, so that two
writes at the same instant cannot both pass it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from blindai.server.store import SealedStore
from blindai.server.store._files import write_new

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
