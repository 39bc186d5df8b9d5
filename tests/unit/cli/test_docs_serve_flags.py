"""docs/cli.md documents every ``blindai serve`` flag (and names every flag of the client
commands), and the defaults the docs' flag tables state are the settings' own.

The flags are read from ``blindai serve --help`` run in a child process (what a user sees);
the defaults from :class:`ServerSettings`' fields, where each is stated once. The tables read
are the ``| `--flag` | default | ... |`` rows of docs/cli.md's serve section and of
docs/limits.md, and the ``| `setting` | default |`` rows of docs/pipelines.md's limits. A
default cell is compared where it reads as a value (``1 GiB``, ``30 s``, ``on``, ``none``,
```auto```, ``100 000``); prose (``one less than --inference-threads``) is left to the reader.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from blindai.server.settings import ServerSettings

REPO = Path(__file__).resolve().parents[3]
_UNITS = {"KiB": 1 << 10, "KiB/s": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "s": 1}
_NUMBER = re.compile(r"^(\d[\d ,]*(?:\.\d+)?)\s*(KiB/s|KiB|MiB|GiB|s)?(?:\s|$|\()")
_NOT_A_VALUE = object()


def _serve_help_flags() -> set[str]:
    out = subprocess.run(
        [sys.executable, "-m", "blindai", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    return set(re.findall(r"^  (--[a-z0-9-]+)", out, re.MULTILINE)) - {"--help"}


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end != -1 else len(text)]


def _rows(text: str, first_cell: str) -> list[tuple[list[str], str]]:
    """(field names, default cell) of each table row whose first cell names flags or settings."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| `") or len(cells) < 2:
            continue
        names = re.findall(first_cell, cells[0])
        fields = list(dict.fromkeys(n.removeprefix("no-").replace("-", "_") for n in names))
        if fields:
            rows.append((fields, cells[1]))
    return rows


def _value(cell: str, default: object) -> object:
    """The value a default cell states, in the type of the field's ``default``."""
    cell = cell.strip()
    if cell.startswith("none"):
        return None
    if isinstance(default, bool):
        return {"on": True, "off": False}.get(cell, _NOT_A_VALUE)
    quoted = re.match(r"^`([^`]+)`", cell)
    if quoted and isinstance(default, str | Path):
        return quoted.group(1)
    number = _NUMBER.match(cell)
    if number and isinstance(default, int | float):
        figure = float(number.group(1).replace(" ", "").replace(",", ""))
        return figure * _UNITS.get(number.group(2) or "", 1)
    return _NOT_A_VALUE


def _checked_defaults(rows: list[tuple[list[str], str]]) -> list[tuple[str, object, object]]:
    """(field, stated, actual) for every default cell that reads as a value."""
    fields = ServerSettings.model_fields
    checked = []
    for names, cell in rows:
        if len(names) == 1:
            parts = [cell]
        elif cell.startswith("none"):
            parts = [cell] * len(names)
        else:
            parts = cell.split(", ")
        if len(parts) != len(names):
            continue
        for name, part in zip(names, parts, strict=True):
            assert name in fields, f"{name!r} is no field of ServerSettings"
            actual = fields[name].default
            stated = _value(part, actual)
            if stated is _NOT_A_VALUE:
                continue
            if isinstance(actual, Path):
                actual = str(actual)
            checked.append((name, stated, actual))
    return checked


def test_every_serve_flag_is_in_the_serve_table_of_docs_cli_md() -> None:
    """A flag of ``blindai serve --help`` missing from docs/cli.md's table is a flag no user can
    find there; a flag in the table that ``serve`` lacks is an error waiting for them."""
    table = _section((REPO / "docs/cli.md").read_text(), "## serve")
    documented = {
        "--" + n
        for fields, _ in _rows(table, r"`--(?:\[no-\])?([a-z0-9-]+)")
        for n in (f.replace("_", "-") for f in fields)
    }
    help_flags = {re.sub(r"^--no-", "--", f) for f in _serve_help_flags()}
    missing, unknown = sorted(help_flags - documented), sorted(documented - help_flags)
    assert not missing, f"flags missing from docs/cli.md's serve table: {missing}"
    assert not unknown, f"docs/cli.md's serve table names flags serve lacks: {unknown}"


@pytest.mark.parametrize(
    ("doc", "heading", "first_cell", "least"),
    [
        ("docs/cli.md", "## serve", r"`--(?:\[no-\])?([a-z0-9-]+)", 50),
        ("docs/limits.md", "## Every limit", r"`--([a-z0-9-]+)", 25),
        ("docs/pipelines.md", "## Limits", r"`(max_[a-z_]+)`", 7),
        ("docs/performance.md", "## Scheduling", r"^`([a-z_]+)`$", 4),
    ],
)
def test_the_defaults_the_docs_state_are_the_settings_defaults(
    doc: str, heading: str, first_cell: str, least: int
) -> None:
    rows = _rows(_section((REPO / doc).read_text(), heading), first_cell)
    checked = _checked_defaults(rows)
    wrong = [(name, stated, actual) for name, stated, actual in checked if stated != actual]
    assert wrong == [], f"{doc}: (setting, stated default, actual default)"
    assert len(checked) >= least, f"{doc}: {len(checked)} defaults read; did the tables change?"


@pytest.mark.parametrize(
    "command",
    ["upload", "run", "delete", "sync", "models", "attest", "keys create", "keys list",
     "keys revoke", "keys generate-admin"],
)  # fmt: skip
def test_every_flag_of_the_client_commands_is_in_docs_cli_md(command: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "blindai", *command.split(), "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    flags = set(re.findall(r"^  (--[a-z0-9-]+)", out, re.MULTILINE)) - {"--help"}
    doc = (REPO / "docs/cli.md").read_text()
    missing = sorted(f for f in flags if not re.search(re.escape(f) + r"(?![a-z0-9-])", doc))
    assert not missing, f"blindai {command}: flags docs/cli.md never names: {missing}"
