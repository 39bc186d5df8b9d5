"""``scripts/demo.py`` (``make demo``) runs end to end in a subprocess and reports its accuracy."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run_demo() -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=REPO,
    )


def test_demo_runs_and_agrees_with_onnxruntime() -> None:
    result = _run_demo()
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Traceback" not in out + result.stderr
    assert "SIMULATION MODE: THIS PROTECTS NOTHING" in out
    match = re.search(r"Accuracy on the held-out rows: (\d\.\d{4}) \((\d+)/(\d+)\)", out)
    assert match, out
    accuracy, correct, total = float(match[1]), int(match[2]), int(match[3])
    assert total == 143 and correct == round(accuracy * total)
    assert accuracy > 0.9  # logistic regression on this data set scores about 0.95-0.98
    assert f"gives the same labels: yes ({total}/{total}" in out
    assert re.search(r"connect [\d.]+ ms, of which fetching and checking evidence [\d.]+ ms", out)
    assert "deleted model" in out and "server stopped" in out


@pytest.mark.slow
def test_bench_quick_runs() -> None:
    """``scripts/bench.py --quick`` (``make bench`` with fewer requests) prints its table."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), PYTHONUNBUFFERED="1")
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench.py"), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    for name in ("dense 16->4", "mlp 1024-1024-768-10"):
        assert re.search(rf"^{re.escape(name)} .* [\d.]+x$", result.stdout, re.M), result.stdout
        assert re.search(rf"^  {re.escape(name)} +adds ", result.stdout, re.M)
    assert re.search(r"\d+ CPUs visible", result.stdout)


@pytest.mark.slow
def test_bench_attestation_quick_runs() -> None:
    """``scripts/bench_attestation.py --quick`` prints its three sections, every connection
    after the first admitted from the cache."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), PYTHONUNBUFFERED="1")
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_attestation.py"), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(r"^   on +[\d.]+ .* [+-]\d+ us at p50$", result.stdout, re.M), result.stdout
    assert re.search(r"^   off +[\d.]+ .* [+-]\d+ us at p50$", result.stdout, re.M)
    assert re.search(r"\(gate: 1 verified, \d+ admitted from the cache, 0 refused\)", result.stdout)
    assert "fresh, over a nonce" in result.stdout
    for platform in ("sgx", "tdx", "sev-snp", "nitro"):
        assert re.search(rf"^   {platform} +\S+ +[\d.]+ +[\d.]+$", result.stdout, re.M)
