"""Every file the installed package needs besides its modules is in the wheel.

setuptools ships only modules (``.py``, ``.pyi``) unless ``[tool.setuptools.package-data]``
names others: the notice that must accompany the gRPC modules generated from NVIDIA's
descriptors was left out of the wheel (and so of the Docker image). Checked against
pyproject.toml's patterns, without building.
"""

from __future__ import annotations

import fnmatch
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "blindai"
PATTERNS: list[str] = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
    "package-data"
]["blindai"]
BUILD_ONLY = {"server/protocols/grpc/_generated/grpc_service.binpb"}
"""Read by ``scripts/grpc_codegen.py`` only, never at run time."""


def _shipped(relative: str) -> bool:
    return any(fnmatch.fnmatchcase(relative, pattern) for pattern in PATTERNS)


def test_every_file_that_is_not_a_module_ships_or_is_build_only() -> None:
    others = sorted(
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyi", ".pyc") and "__pycache__" not in p.parts
    )
    assert "server/protocols/grpc/_generated/LICENSE" in others
    missing = [f for f in others if f not in BUILD_ONLY and not _shipped(f)]
    assert not missing, f"add to [tool.setuptools.package-data] in pyproject.toml: {missing}"


def test_build_only_files_exist() -> None:
    for relative in BUILD_ONLY:
        assert (PACKAGE / relative).is_file(), relative
