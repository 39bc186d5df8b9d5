"""scripts/compat_env.sh where the original clients cannot be installed, and the compat skip.

The script runs for real from a copy in a temporary directory (it builds in ``<copy>/..``), with
interpreters that cannot host blindai 0.6.3: a path that does not exist and, where this machine
has one, a real Python that is not 3.11. No pip runs in these cases.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
NEEDS_311 = "needs Python 3.11 (sgx-dcap-quote-verify-python 0.0.3 ships cp311 wheels only)"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A directory holding scripts/compat_env.sh and scripts/compat/, as in the repository."""
    shutil.copytree(REPO / "scripts" / "compat", tmp_path / "scripts" / "compat")
    shutil.copy2(REPO / "scripts" / "compat_env.sh", tmp_path / "scripts" / "compat_env.sh")
    return tmp_path


def _run(checkout: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPAT_", "BLINDAI_"))}
    full_env.update(env)
    return subprocess.run(
        ["bash", str(checkout / "scripts" / "compat_env.sh")],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        check=False,
    )


def _lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_no_python_311_skips_the_tier_in_one_line(checkout: Path) -> None:
    result = _run(checkout, COMPAT_PYTHON="/nonexistent/python3.11")
    assert result.returncode == 0, result.stderr
    assert _lines(result.stderr) == [
        "compat_env: original clients (preview v063) skipped: "
        f"{NEEDS_311}; /nonexistent/python3.11 is not runnable"
    ]
    for name in ("preview", "v063"):
        recorded = (checkout / ".venv-compat" / f"{name}.unavailable").read_text()
        assert recorded.startswith(NEEDS_311)
        assert not (checkout / ".venv-compat" / name).exists()


def test_ci_can_require_the_tier(checkout: Path) -> None:
    result = _run(checkout, COMPAT_PYTHON="/nonexistent/python3", BLINDAI_REQUIRE_COMPAT="1")
    assert result.returncode == 1
    assert "ERROR (BLINDAI_REQUIRE_COMPAT=1)" in result.stderr
    assert NEEDS_311 in result.stderr


def _other_python() -> str | None:
    """A real interpreter on this machine that is not 3.11 (the running one, or pyenv's)."""
    if sys.version_info[:2] != (3, 11):
        return sys.executable
    for name in ("python3.10", "python3.12", "python3.13"):
        for path in (shutil.which(name), *Path("/root/.pyenv/versions").glob(f"*/bin/{name}")):
            if path and subprocess.run([str(path), "-V"], capture_output=True).returncode == 0:
                return str(path)
    return None


def test_a_real_python_that_is_not_311_is_named_with_its_version(checkout: Path) -> None:
    python = _other_python()
    if python is None:
        pytest.skip("no Python other than 3.11 on this machine")
    version = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    result = _run(checkout, COMPAT_PYTHON=python)
    assert result.returncode == 0, result.stderr
    assert _lines(result.stderr) == [
        f"compat_env: original clients (preview v063) skipped: {NEEDS_311}; {python} is {version}"
    ]


def test_a_venv_already_built_stays_usable_without_python_311(checkout: Path) -> None:
    req = checkout / "scripts" / "compat"
    digest = hashlib.sha256(
        (req / "requirements-common.txt").read_bytes()
        + (req / "requirements-preview.txt").read_bytes()
    ).hexdigest()
    venv = checkout / ".venv-compat" / "preview"
    venv.mkdir(parents=True)
    (venv / ".compat-stamp").write_text(digest + "\n")
    result = _run(checkout, COMPAT_PYTHON="/nonexistent/python")
    assert result.returncode == 0, result.stderr
    lines = _lines(result.stderr)
    assert lines[0].startswith("compat_env: original clients (v063) skipped: " + NEEDS_311)
    assert lines[1] == f"compat_env: preview: up to date ({venv})"
    assert len(lines) == 2
    assert venv.is_dir() and not (checkout / ".venv-compat" / "preview.unavailable").exists()


# -- the compat tests' own skip (tests/compat/conftest.py) ---------------------------------------


@pytest.fixture(scope="module")
def compat_conftest() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "compat_conftest_under_test", REPO / "tests" / "compat" / "conftest.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_tier_skips_with_the_recorded_reason_once(
    compat_conftest: ModuleType, tmp_path: Path
) -> None:
    for name in ("preview", "v063"):
        (tmp_path / f"{name}.unavailable").write_text(f"{NEEDS_311}; python3 is 3.12\n")
    assert compat_conftest.tier_skip_reason(tmp_path) == (
        f"original-clients tier unavailable here: {NEEDS_311}; python3 is 3.12"
    )


def test_the_tier_says_how_to_build_venvs_never_built(
    compat_conftest: ModuleType, tmp_path: Path
) -> None:
    reason = compat_conftest.tier_skip_reason(tmp_path)
    assert reason.count("build it with `make test-compat`") == 2


def test_the_tier_runs_when_one_client_is_usable(
    compat_conftest: ModuleType, tmp_path: Path
) -> None:
    (tmp_path / "preview" / "bin").mkdir(parents=True)
    (tmp_path / "preview" / "bin" / "python").touch()
    (tmp_path / "preview" / ".compat-stamp").write_text("x\n")
    (tmp_path / "v063.unavailable").write_text("some reason\n")
    assert compat_conftest.tier_skip_reason(tmp_path) is None
    assert compat_conftest._why_absent("v063", tmp_path) == (
        "original client v063 unavailable here: some reason"
    )


def test_pytest_reports_the_unavailable_tier_in_one_line(tmp_path: Path) -> None:
    """The compat tests for real, with venvs that compat_env.sh could not build."""
    for name in ("preview", "v063"):
        (tmp_path / f"{name}.unavailable").write_text(f"{NEEDS_311}; python3 is 3.12\n")
    env = {**os.environ, "BLINDAI_COMPAT_VENVS": str(tmp_path), "PYTHONPATH": str(REPO / "src")}
    args = ["-p", "no:cacheprovider", "-q", "-rs", "-m", "compat", "tests/compat"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    skipped = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) == 1, result.stdout
    assert skipped[0].endswith(
        f"original-clients tier unavailable here: {NEEDS_311}; python3 is 3.12"
    )
    assert re.search(r"^\d+ skipped", result.stdout.splitlines()[-1])
