"""The torch tier: deselected by ``make test`` and named at the end of the run; where it is
selected without torch installed, skipped with the way to install it (never a bare
``could not import 'torch'``). Each case runs pytest for real on the repository's own tests.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TORCH_TESTS = [
    "tests/integration/test_inference.py::test_torch_tensors_are_accepted",
    "tests/integration/test_tutorial_api.py::test_distilbert_tutorial_flow_with_a_torch_stand_in",
]


def _pytest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        timeout=300,
        check=False,
    )


def test_every_test_that_imports_torch_is_in_the_torch_tier() -> None:
    """A test touching torch outside the tier would fail (or skip) where torch is absent."""
    marked = re.compile(r"@pytest\.mark\.torch\s*\n(?:@.*\n)*def (\w+)")
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        text = path.read_text()
        if path.name == Path(__file__).name or "torch" not in text:
            continue
        users = set(
            re.findall(r"def (\w+)\([^)]*\)[^:]*:\n(?:(?!\ndef ).)*?import torch(?!\w)", text, re.S)
        )
        assert users <= set(marked.findall(text)), f"{path}: {users - set(marked.findall(text))}"


def test_make_test_deselects_the_torch_tier_and_says_so() -> None:
    result = _pytest("-m", "not slow and not torch", *TORCH_TESTS)
    assert result.returncode == 5, result.stdout + result.stderr  # nothing selected
    assert "2 deselected" in result.stdout
    assert "tiers not run here (deselected): torch (2 tests: make test-torch)" in (result.stdout)


def test_a_selected_torch_test_without_torch_skips_with_the_make_target() -> None:
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed here, so the torch tier runs instead of skipping")
    result = _pytest("-m", "torch", TORCH_TESTS[0])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout
    assert "needs torch, an optional tier: `make test-torch` installs it and runs it" in (
        result.stdout
    )
