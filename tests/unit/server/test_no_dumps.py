"""forbid_dumps: no core file and a non-dumpable process, in the server and its compile child.

Each check runs in a fresh interpreter (the settings cannot be undone), started with core files
allowed where the hard limit lets it, so that a process which forgot them would show it.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import pytest

_REPORT = """
import ctypes, ctypes.util, json, resource
prctl = ctypes.CDLL(ctypes.util.find_library("c") or None).prctl
def report():
    core = list(resource.getrlimit(resource.RLIMIT_CORE))
    return {"core": core, "dumpable": prctl(3, 0, 0, 0, 0)}
"""

_SERVER = (
    _REPORT
    + """
from blindai.server.no_dumps import forbid_dumps
before = report()
guard = forbid_dumps()
print(json.dumps({"before": before, "after": report(), "problems": guard.problems}))
"""
)

_COMPILE_CHILD = (
    _REPORT
    + """
import os
import blindai.server._compile_worker as worker
def warm_up():  # the child's first work: what holds by then holds for the model
    print(json.dumps(report()), flush=True)
    os._exit(0)
worker._warm_up = warm_up
worker.main()
"""
)


def _allow_core_files() -> None:
    """In the child, before it runs: core files up to the hard limit."""
    hard = resource.getrlimit(resource.RLIMIT_CORE)[1]
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))


def _run(code: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", code],
        preexec_fn=_allow_core_files,
        capture_output=True,
        check=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    answer: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return answer


def test_forbid_dumps_turns_core_files_off_and_the_process_non_dumpable():
    if resource.getrlimit(resource.RLIMIT_CORE)[1] == 0:
        pytest.skip("core files are off for this whole session (hard RLIMIT_CORE 0)")
    got = _run(_SERVER)
    assert got["before"] != {"core": [0, 0], "dumpable": 0}  # so the check below can fail
    assert got["after"] == {"core": [0, 0], "dumpable": 0}
    assert got["problems"] == []


def test_the_compile_child_is_non_dumpable_before_it_does_anything():
    """execve makes a process dumpable again: the child must say so itself."""
    if resource.getrlimit(resource.RLIMIT_CORE)[1] == 0:
        pytest.skip("core files are off for this whole session (hard RLIMIT_CORE 0)")
    assert _run(_COMPILE_CHILD) == {"core": [0, 0], "dumpable": 0}


def test_what_could_not_be_set_is_named():
    from blindai.server.no_dumps import DumpGuard

    assert DumpGuard(no_core_file=True, not_dumpable=True).problems == []
    both = DumpGuard(no_core_file=False, not_dumpable=False).problems
    assert len(both) == 2 and "core-file" in both[0] and "PR_SET_DUMPABLE" in both[1]


_OWN_PROC_FILES = """
import json, os
import encodings.utf_8  # loaded here: an ordinary user may not read this interpreter's files
from blindai.server.no_dumps import forbid_dumps
fd = os.memfd_create("model")
os.write(fd, b"model bytes")
if os.geteuid() == 0:  # as an ordinary user: root reads /proc whatever its owner
    os.setgid(65534)
    os.setuid(65534)
guard = forbid_dumps()
with open(f"/proc/self/fd/{fd}", "rb") as f:  # how onnxruntime reads a model file
    data = f.read().decode("utf-8")
with open("/proc/self/status", "rb") as f:  # the compile child's measurements
    status = f.read().startswith(b"Name:")
print(json.dumps({"not_dumpable": guard.not_dumpable, "data": data, "status": status}))
"""


def test_a_non_dumpable_process_still_reads_its_own_proc_files():
    """Non-dumpable, /proc/PID belongs to root; the server and its child open their own
    /proc/self/fd/N (models, the TLS key) and read /proc/self/status."""
    import os
    from pathlib import Path

    src = str(Path(__file__).resolve().parents[3] / "src")
    done = subprocess.run(
        [sys.executable, "-c", _OWN_PROC_FILES],
        capture_output=True,
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": src},
        cwd="/",
    )
    got = json.loads(done.stdout)
    assert got == {"not_dumpable": True, "data": "model bytes", "status": True}


def test_swap_in_use_is_named_at_start(tmp_path):
    """The server's memory is not locked: swap on a disk is where it may reach the host."""
    from blindai.server.no_dumps import SWAPS, swap_warning

    swaps = tmp_path / "swaps"
    head = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
    swaps.write_text(head)
    assert swap_warning(swaps) is None  # none in use
    swaps.write_text(head + "/dev/zram0  partition\t4194300\t0\t100\n")
    assert swap_warning(swaps) is None  # compressed in memory, not a disk
    swaps.write_text(
        head + "/dev/sda2  partition\t8388604\t0\t-2\n/swap.img  file\t2097148\t0\t-3\n"
    )
    warning = swap_warning(swaps)
    assert warning is not None and "'/dev/sda2', '/swap.img'" in warning
    assert "no swap or encrypted swap" in warning
    assert swap_warning(tmp_path / "missing") is None  # not Linux: nothing to say
    assert SWAPS.name == "swaps"
