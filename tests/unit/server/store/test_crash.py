"""kill -9 at random points while a process writes to the store: nothing acknowledged is lost.

A child process (``_crash_child.py``, forked from a zygote) streams model writes, deletes,
key writes and key deletes, announcing each (``begin``) and acknowledging it once the store
returned (``ack``).
It is killed with SIGKILL at a random moment; the store is then reopened and must hold exactly
the acknowledged state, give or take the one operation in flight, with no entry refused and no
temporary file left. The next child continues from that state.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from blindai.server.store import SealedStore

from ._crash_child import KEY

REPO = Path(__file__).resolve().parents[4]
CHILD = Path(__file__).with_name("_crash_child.py")


@dataclass
class State:
    models: dict[str, str] = field(default_factory=dict)  # id -> sha256 hex
    keys: set[str] = field(default_factory=set)

    def apply(self, op: list[str]) -> State:
        after = State(dict(self.models), set(self.keys))
        kind, ident = op[0], op[1]
        if kind == "put":
            after.models[ident] = op[2]
        elif kind == "delete":
            after.models.pop(ident, None)
        elif kind == "key":
            after.keys.add(ident)
        elif kind == "revoke":
            after.keys.discard(ident)
        return after


def acknowledged(output: str, state: State) -> tuple[State, list[str] | None]:
    """The state after every acknowledged operation, and the operation in flight (if any)."""
    pending: list[str] | None = None
    for line in output.split("\n")[:-1]:  # a last line without newline is cut
        words = line.split()
        if words[0] == "begin":
            pending = words[1:]
        elif words == ["ack"]:
            assert pending is not None
            state, pending = state.apply(pending), None
    return state, pending


class Writers:
    """The zygote process that forks one writer per cycle."""

    def __init__(self, directory: Path) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]))
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )

    def kill_at_random(self, seed: int, rng: random.Random) -> str:
        """Start a writer, SIGKILL it at a random moment; its lines."""
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        stdin.write(f"{seed}\n")
        stdin.flush()
        pid = int(stdout.readline().split()[1])
        lines = [stdout.readline()]  # the writer has opened the store and begun
        time.sleep(rng.uniform(0, 0.05))  # the kill point; nothing below depends on timing
        os.kill(pid, signal.SIGKILL)
        while (line := stdout.readline()) != "end\n":
            assert line, "the zygote died"
            lines.append(line)
        return "".join(lines)

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait()
        self.proc.stdout.close()


def check_cycles(directory: Path, kills: int, seed: int) -> int:
    rng = random.Random(seed)
    state = State()
    in_flight = 0
    writers = Writers(directory)
    try:
        for cycle in range(kills):
            output = writers.kill_at_random(seed * 100_000 + cycle, rng)
            expected, pending = acknowledged(output, state)
            with SealedStore(directory, key_material=KEY) as store:
                loaded = State(
                    {m.model_id: m.hash.hex() for m in store.load_models()},
                    {k.name for k in store.load_keys()},
                )
                assert store.refused == [], f"cycle {cycle}"
            assert not [p for p in directory.iterdir() if p.name.startswith(".tmp-")]
            allowed = [expected] if pending is None else [expected, expected.apply(pending)]
            assert loaded in allowed, f"cycle {cycle}: in flight {pending}"
            in_flight += pending is not None
            state = loaded
    finally:
        writers.close()
    return in_flight


def test_kill_9_loses_nothing_acknowledged(tmp_path: Path):
    in_flight = check_cycles(tmp_path / "store", kills=30, seed=1)
    assert in_flight > 0  # some kills did land in the middle of an operation


@pytest.mark.slow
def test_kill_9_loses_nothing_acknowledged_500_times(tmp_path: Path):
    in_flight = check_cycles(tmp_path / "store", kills=500, seed=2)
    assert in_flight > 150
