"""blindai/_malloc.py: glibc keeps freed request buffers for reuse (checked in a child process,
whose allocator settings the test may change)."""

from __future__ import annotations

import subprocess
import sys

CHILD = r"""
import sys, time
from blindai._malloc import keep_freed_memory

def faults():
    with open("/proc/self/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])  # minflt

if sys.argv[1] == "tuned":
    assert keep_freed_memory(64 << 20)
before = faults()
for _ in range(200):  # a request: its body, then a decoded copy, both freed at the end
    a = bytearray(600_000)
    b = bytearray(600_000)
    del a, b
print(faults() - before)
"""


def minor_faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout)


def test_freed_buffers_are_reused_instead_of_faulted_in_again():
    # 200 times two buffers of 600 kB: glibc's defaults fault most in anew (147 pages each)
    assert minor_faults("default") > 200 * 147
    assert minor_faults("tuned") < 4 * 147 + 100


def test_zero_keeps_glibcs_defaults():
    from blindai._malloc import keep_freed_memory

    assert keep_freed_memory(0) is False


def test_a_client_process_opts_in_through_the_package():
    import blindai
    from blindai._malloc import keep_freed_memory

    assert blindai.keep_freed_memory is keep_freed_memory
    assert "keep_freed_memory" in blindai.__all__
