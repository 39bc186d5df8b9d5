"""Shared fixtures, and the test tiers.

Evidence: the real evidence sets are committed test vectors (tests/data/evidence, with their
provenance); the SGX and TDX sets come with a fake Intel PCS serving their collateral.

Tiers (markers, declared in pyproject.toml): ``make test`` runs everything but ``slow`` and
``torch`` (``-m "not slow and not torch"``); ``make test-slow`` and ``make test-torch`` run those.
A deselected tier is named, with its make target, at the end of the run. A ``torch`` test that is
selected where torch is not installed is skipped with the way to install it, never silently.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import pytest

from tests.models import BackendCase, backend_case
from tests.unit.attestation.pcs_fakes import FakeFetcher, pcs_answers, tdx_answers

EVIDENCE = Path(__file__).resolve().parent / "data" / "evidence"


#: marker -> the make target that runs that tier
TIERS = {
    "torch": "make test-torch",
    "slow": "make test-slow",
    "compat": "make test-compat",
}
_DESELECTED = pytest.StashKey[Counter[str]]()


@pytest.fixture(scope="session")
def evidence_dir() -> Path:
    """The real evidence sets, committed with their provenance (see its README.md)."""
    return EVIDENCE


@pytest.fixture
def sgx_set(evidence_dir: Path) -> Path:
    """The SGX set with a quote and its complete collateral (Phala dcap-qvl sample)."""
    return evidence_dir / "sgx-dcap" / "phala-dcap-qvl-sgx"


@pytest.fixture
def fake_pcs(sgx_set: Path) -> FakeFetcher:
    """A fake Intel PCS serving ``sgx_set``'s collateral (FMSPC 00A067110000, Processor CA)."""
    return FakeFetcher(pcs_answers(sgx_set, fmspc="00A067110000", ca="processor"))


@pytest.fixture
def tdx_set(evidence_dir: Path) -> Path:
    """The TDX v4 set with its complete collateral (Phala dcap-qvl sample)."""
    return evidence_dir / "tdx" / "phala-dcap-qvl-tdx-v4"


@pytest.fixture
def fake_tdx_pcs(tdx_set: Path) -> FakeFetcher:
    """A fake Intel PCS serving ``tdx_set``'s collateral (FMSPC B0C06F000000, Platform CA)."""
    return FakeFetcher(tdx_answers(tdx_set))


@pytest.fixture(scope="session")
def scalar_case() -> BackendCase:
    """onnx's backend test ``test_bitcast_scalar_float32_to_int32``: float32 [] in, int32 [] out.

    Skipped, with the reason, where the installed onnxruntime cannot run it: BitCast (opset 26)
    needs a recent onnxruntime, and Python 3.10 gets at most onnxruntime 1.23.
    """
    import onnxruntime as ort

    case = backend_case("BitCast", "test_bitcast_scalar_float32_to_int32")
    try:
        ort.InferenceSession(case.model, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors here
        pytest.skip(
            f"onnxruntime {ort.__version__} cannot run {case.name} "
            f"({type(exc).__name__}; Python 3.10 gets at most onnxruntime 1.23)"
        )
    return case


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a selected ``torch`` test, with one reason, where torch is not installed."""
    if item.get_closest_marker("torch") and importlib.util.find_spec("torch") is None:
        pytest.skip("needs torch, an optional tier: `make test-torch` installs it and runs it")


def pytest_deselected(items: list[pytest.Item]) -> None:
    """Count the deselected tests of each tier, for the closing summary."""
    if not items:
        return
    counts = items[0].config.stash.setdefault(_DESELECTED, Counter())
    for item in items:
        for marker in TIERS:
            if item.get_closest_marker(marker):
                counts[marker] += 1
                break


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name each tier that ``-m`` left out, and how to run it."""
    counts = terminalreporter.config.stash.get(_DESELECTED, Counter())
    if counts:
        parts = [
            f"{marker} ({n} test{'s' if n != 1 else ''}: {TIERS[marker]})"
            for marker, n in sorted(counts.items())
        ]
        terminalreporter.write_line("tiers not run here (deselected): " + ", ".join(parts))
