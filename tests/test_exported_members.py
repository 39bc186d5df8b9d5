"""Every public module's ``__all__`` lists exactly its public names (httpx's test, per module).

A public module is one whose dotted path has no ``_``-prefixed part. Its public names are those
it defines at top level without a leading underscore, plus those it deliberately re-exports
(listed in ``__all__``); every name in ``__all__`` must resolve.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import blindai

ROOT = Path(blindai.__file__).resolve().parent


def _public_modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts[-1] == "__main__" or any(p.startswith("_") for p in parts):
            continue
        found.append((".".join(parts), path))
    return found


def _defined(body: list[ast.stmt]) -> set[str]:
    """Names bound at top level by def, class or assignment (inside top-level if/try too)."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.If | ast.Try):
            names |= _defined(node.body)
    return names


MODULES = _public_modules()


def test_the_walk_finds_the_public_modules() -> None:
    names = {name for name, _ in MODULES}
    assert {"blindai", "blindai.errors", "blindai.server.dataplane"} <= names
    assert not any(part.startswith("_") for name in names for part in name.split("."))


@pytest.mark.parametrize(("name", "path"), MODULES, ids=[name for name, _ in MODULES])
def test_all_lists_exactly_the_public_names(name: str, path: Path) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert len(set(exported)) == len(exported), f"{name}.__all__ repeats a name"
    defined = {n for n in _defined(ast.parse(path.read_text()).body) if not n.startswith("_")}
    assert defined - set(exported) == set(), f"public in {name} but not in __all__"
    for member in exported:
        assert hasattr(module, member), f"{name}.__all__ names {member}, which is absent"
