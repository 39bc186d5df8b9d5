"""What each make target installs (pyproject extras + Makefile), checked without installing.

``make demo`` must not pull test, lint or torch packages; nothing pins a local version such as
``+cpu`` (PyPI has none); nothing requires Python 3.11 when the project supports 3.10.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]
MAKEFILE = (REPO / "Makefile").read_text()


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower()


def _expand(extras: list[str]) -> set[str]:
    """Distribution names pulled in by ``.[extras]`` (self-references followed)."""
    names: set[str] = set()
    for extra in extras:
        for req in EXTRAS[extra]:
            match = re.fullmatch(r"blindai\[([\w,-]+)\]", req.replace(" ", ""))
            names |= _expand(match[1].split(",")) if match else {_name(req)}
    return names


def _make_extras(stamp: str) -> list[str]:
    """The extras the Makefile rule for ``stamp`` installs with ``pip install -e '.[...]'``."""
    rule = re.search(rf"^\$\({stamp}\):.*\n((?:\t.*\n)+)", MAKEFILE, re.M)
    assert rule, f"no rule for $({stamp}) in the Makefile"
    installs = re.findall(r"-e '\.\[([\w,-]+)\]'", rule[1])
    assert len(installs) == 1, rule[1]
    return installs[0].split(",")


HEAVY_OR_DEV = {"pytest", "pytest-cov", "mypy", "ruff", "tritonclient", "torch", "trustme"}


def test_make_demo_installs_only_server_cli_and_demo() -> None:
    extras = _make_extras("STAMP_DEMO")
    assert sorted(extras) == ["cli", "demo", "server"]
    installed = _expand(extras)
    assert not installed & HEAVY_OR_DEV, installed & HEAVY_OR_DEV
    assert {"onnxruntime", "scikit-learn", "skl2onnx"} <= installed
    assert re.search(r"^demo: \$\(STAMP_DEMO\)$", MAKEFILE, re.M)


def test_make_test_adds_test_tools_but_not_torch() -> None:
    installed = _expand(_make_extras("STAMP_TEST"))
    assert {"pytest", "trustme", "tritonclient", "kubernetes-validate"} <= installed
    assert "torch" not in installed and "ruff" not in installed
    assert "torch" in _expand(_make_extras("STAMP_TORCH"))


def test_dev_extra_is_every_other_extra_but_gpu_examples_and_bench() -> None:
    """gpu's onnxruntime-gpu replaces onnxruntime (the same module); examples and bench pin
    exporters (transformers, onnxscript) for `make examples` and `make bench` alone. None is in
    dev."""
    others = [name for name in EXTRAS if name not in ("dev", "gpu", "examples", "bench")]
    assert _expand(["dev"]) == _expand(others)
    assert not {"onnxruntime-gpu", "transformers"} & _expand(["dev"])


def test_torch_is_pinned_exactly_and_never_a_default() -> None:
    torch_reqs = {req for extra, reqs in EXTRAS.items() for req in reqs if _name(req) == "torch"}
    assert torch_reqs == {"torch==2.13.0"}
    holders = {extra for extra, reqs in EXTRAS.items() if "torch" in {_name(r) for r in reqs}}
    assert holders == {"torch", "examples", "bench"}
    assert "torch" not in {_name(req) for req in PYPROJECT["project"]["dependencies"]}


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        *sorted(str(p.relative_to(REPO)) for p in REPO.glob("scripts/compat/*.txt")),
    ],
)
def test_no_local_version_pins(path: str) -> None:
    """``torch==2.13.0+cpu`` cannot be satisfied from PyPI; ``==2.13.0`` takes a +cpu wheel."""
    text = (REPO / path).read_text()
    pins = re.findall(r"^\s*\"?([A-Za-z0-9_.\-\[\]]+==[^\s\";#]*\+[^\s\";#]*)", text, re.M)
    assert pins == []


def test_no_hard_python_311_requirement() -> None:
    assert PYPROJECT["project"]["requires-python"] == ">=3.10"
    # mypy checks for the Python that runs it (make lint passes on 3.11 and 3.12; see README)
    assert "python_version" not in PYPROJECT["tool"]["mypy"]
    assert PYPROJECT["tool"]["ruff"]["target-version"] == "py310"
    # tomllib is 3.11+: on 3.10 the package reads TOML policies with tomli
    assert any(
        _name(req) == "tomli" and "python_version < '3.11'" in req
        for req in PYPROJECT["project"]["dependencies"]
    )
