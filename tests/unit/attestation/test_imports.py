"""Who imports what: the verifiers stand alone, TDX shares with SGX only through ``dcap``, and
the CLI is a thin layer over public names."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import blindai

SRC = Path(blindai.__file__).resolve().parent


def _imports(package: str) -> Iterator[tuple[Path, str, str]]:
    """(file, module, name) for each import in ``package``; name is "" for ``import module``."""
    for path in sorted((SRC / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name, ""
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path}: relative import"
                for alias in node.names:
                    yield path, node.module or "", alias.name


def test_importing_the_verifiers_loads_no_client_server_or_cli_module() -> None:
    code = (
        "import json, sys, blindai.attestation, blindai.attestation.kinds\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(done.stdout)
    # leaves that import nothing of ours but the errors: the version, the guarded JSON/TOML
    # parsers, escaping for display, reading a file the user named
    leaves = ("blindai._version", "blindai._documents", "blindai.escape", "blindai.localfiles")
    ours = [m for m in loaded if m.startswith("blindai.") and m not in leaves]
    assert ours and all(m.startswith(("blindai.attestation", "blindai.errors")) for m in ours), ours
    # nor anything heavy: the table names the verifiers without importing them
    for heavy in ("numpy", "dcap_qvl", "cbor2", "onnxruntime", "starlette", "pydantic"):
        assert heavy not in loaded, heavy


def test_tdx_imports_nothing_of_sgx() -> None:
    for path, module, _ in _imports("attestation/tdx"):
        assert not module.startswith("blindai.attestation.sgx"), (path.name, module)


def test_the_cli_imports_only_public_names() -> None:
    for path, module, name in _imports("cli"):
        if module == "__future__" or module.startswith("blindai.cli"):
            continue  # the CLI's own modules
        parts = [*module.split("."), name] if name else module.split(".")
        private = [p for p in parts if p.startswith("_") and not p.endswith("__")]  # __version__
        assert not private, f"{path.name} imports {module}.{name or ''}"
