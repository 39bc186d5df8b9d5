"""What importing a part of blindai loads: each checked in a fresh interpreter's sys.modules."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

import blindai
from tests._server import REPO


def loaded_after(code: str) -> set[str]:
    """The modules loaded by running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(REPO / "src")},
        timeout=60,
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_reading_the_version_loads_no_client_code() -> None:
    modules = loaded_after("import blindai; assert blindai.__version__")
    assert not {m for m in modules if m.startswith("blindai.client")}
    assert "numpy" not in modules and "cryptography" not in modules


@pytest.mark.parametrize("package", ["blindai.attestation", "blindai.errors", "blindai.protocol"])
def test_verifier_side_packages_load_no_client_or_server_code(package: str) -> None:
    modules = loaded_after(f"import {package}")
    assert not {m for m in modules if m.startswith(("blindai.client", "blindai.server"))}


def test_the_package_root_exports_lazily() -> None:
    modules = loaded_after("import blindai; blindai.connect")
    assert "blindai.client" in modules
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        blindai.nope  # noqa: B018
    assert set(blindai.__all__) <= set(dir(blindai))


def test_one_response_type_wherever_users_look() -> None:
    import blindai.client
    import blindai.core

    for name in ("RunModelResponse", "UploadModelResponse"):
        assert getattr(blindai, name) is getattr(blindai.client, name)
        assert getattr(blindai.core, name) is getattr(blindai.client, name)


@pytest.mark.parametrize("first", ["blindai.client.connection", "blindai.client._connect"])
def test_connect_is_still_where_the_connection_module_had_it(first: str) -> None:
    """``blindai.client.connection`` listed ``connect`` in its ``__all__`` until it moved to
    ``_connect`` (the client split): ``from blindai.client.connection import connect`` raised
    ImportError. It is the one function wherever users look, whichever module loads first."""
    code = (
        f"import {first}\n"
        "import blindai, blindai.client, blindai.core\n"
        "from blindai.client.connection import connect\n"
        "import blindai.client.connection as module\n"
        "assert 'connect' in module.__all__\n"
        "assert connect is blindai.client.connect is blindai.core.connect is blindai.connect"
    )
    assert "blindai.client._connect" in loaded_after(code)


TESTS = REPO / "tests"


def _test_layout_faults(path) -> list[str]:
    faults = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("conftest"):
            faults.append(f"{path.relative_to(TESTS)}:{node.lineno} imports from a conftest")
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "path"
            and isinstance(node.value, ast.Name)
            and node.value.id == "sys"
        ):
            faults.append(f"{path.relative_to(TESTS)}:{node.lineno} uses sys.path")
    return faults


def test_helpers_come_from_helper_modules_not_conftest() -> None:
    """A conftest.py holds fixtures; what tests import lives in a helper module. No test edits
    sys.path."""
    faults = [f for path in sorted(TESTS.rglob("*.py")) for f in _test_layout_faults(path)]
    assert faults == []
