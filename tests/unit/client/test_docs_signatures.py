"""The calls the README's "Client API" block and docs/client.md spell out are the SDK's own.

``connect`` and ``upload_model`` are written there with every parameter, in order, with ``*``
where the keyword-only ones begin: a parameter left out shifts the positional ones a reader
counts (``hazmat_http_on_unattested_port`` sits before ``simulation_mode``). The classes named
as results (``ListedModel(model_id, ...)``) must exist with those fields.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import blindai
import blindai.client

REPO = Path(__file__).resolve().parents[3]


def _block(doc: str, heading: str, start: str) -> str:
    """The code of the first fenced block after ``heading`` that holds ``start``."""
    text = (REPO / doc).read_text()
    text = text[text.index(heading) :]
    for block in re.findall(r"```python\n(.*?)```", text, re.DOTALL):
        if start in block:
            return str(block)
    raise AssertionError(f"{doc}: no python block with {start!r} after {heading!r}")


def _parameters(code: str, call: str) -> list[str]:
    """The parameter names of ``call(...)`` as written in ``code`` (comments dropped)."""
    code = "\n".join(line.split("#", 1)[0] for line in code.splitlines())
    begin = code.index(call) + len(call)
    depth, end = 1, begin
    while depth:
        depth += {"(": 1, ")": -1}.get(code[end], 0)
        end += 1
    args = re.split(r",\s*", code[begin : end - 1])
    return [a.split("=")[0].split(":")[0].strip() for a in args if a.strip()]


def _signature(function: Callable[..., Any]) -> list[str]:
    names = []
    for p in inspect.signature(function).parameters.values():
        if p.kind is p.KEYWORD_ONLY and "*" not in names:
            names.append("*")
        if p.name != "self":
            names.append(p.name)
    return names


@pytest.mark.parametrize(
    ("doc", "heading", "call", "function"),
    [
        ("README.md", "## Client API", "blindai.connect(", blindai.connect),
        ("README.md", "## Client API", "conn.upload_model(", blindai.Connection.upload_model),
        ("docs/client.md", "## connect", "blindai.connect(", blindai.connect),
    ],
)
def test_the_documented_parameters_are_the_functions(
    doc: str, heading: str, call: str, function: Callable[..., Any]
) -> None:
    assert _parameters(_block(doc, heading, call), call) == _signature(function)


def test_the_readme_names_list_models_result_and_its_fields() -> None:
    code = _block("README.md", "## Client API", "conn.list_models()")
    found = re.search(r"conn\.list_models\(\) -> \[(\w+)\((.*?)\)\]", code)
    assert found, "README: conn.list_models() -> [Class(fields)] not found"
    cls = getattr(blindai.client, found.group(1))
    fields = [f.name for f in dataclasses.fields(cls)]
    assert re.split(r",\s*", found.group(2)) == fields
