"""docs/pipelines.md names the spec's keys as spec.py has them, and no setting the server lacks.

Read from the page: the key tables of the three input steps (first cells), the output table
(one row per kind, each naming its keys), and every backticked ``max_*`` name, which must be a
spec key (``max_length``) or a server setting (``max_text_bytes``): the labels row said
"at most `max_top_k`", a bound no ``blindai serve`` flag sets.
"""

from __future__ import annotations

import re

import pytest
from pydantic import BaseModel

from blindai.pipeline import spec
from blindai.pipeline.limits import PipelineLimits
from blindai.server.settings import ServerSettings
from tests._server import REPO

PAGE = (REPO / "docs" / "pipelines.md").read_text()
INPUTS = {"text": spec.TextInput, "image": spec.ImageInput, "audio": spec.AudioInput}
OUTPUTS = {
    "labels": spec.LabelsOutput,
    "next_token": spec.NextTokenOutput,
    "embedding": spec.EmbeddingOutput,
    "ctc": spec.CtcOutput,
}


def _section(heading: str) -> str:
    start = PAGE.index(heading)
    end = PAGE.find("\n#", start + len(heading))
    return PAGE[start:end]


def _keys(model: type[BaseModel]) -> set[str]:
    return set(model.model_fields) - {"kind"}


@pytest.mark.parametrize("kind", INPUTS)
def test_each_input_table_lists_the_steps_keys(kind: str) -> None:
    first_cells = re.findall(r"^\| (`.*?) \|", _section(f'[input] kind = "{kind}"'), re.M)
    names = [n for cell in first_cells for n in re.findall(r"`\[?([a-z_.]+)\]?`", cell)]
    documented = {name.removeprefix("input.") for name in names}
    assert documented == _keys(INPUTS[kind])


@pytest.mark.parametrize("kind", OUTPUTS)
def test_each_output_row_names_the_steps_keys(kind: str) -> None:
    rows = re.findall(rf"^\| `{kind}` \| (.*?) \|", _section("### `[output]`"), re.M)
    assert len(rows) == 1, f"no row for output kind {kind}"
    named = set(re.findall(r"`([a-z_]+)`", rows[0]))
    assert _keys(OUTPUTS[kind]) <= named


def test_no_max_name_but_spec_keys_and_server_settings() -> None:
    spec_keys = set().union(*(_keys(m) for m in (*INPUTS.values(), *OUTPUTS.values())))
    known = spec_keys | set(ServerSettings.model_fields)
    unknown = sorted(set(re.findall(r"`(max_[a-z_]+)`", PAGE)) - known)
    assert not unknown, f"docs/pipelines.md names {unknown}: neither spec keys nor settings"


def test_fixed_bounds_are_the_limits() -> None:
    """The bounds no setting changes: top_k and the files of one pipeline."""
    limits = PipelineLimits()
    top_ks = {int(n) for n in re.findall(r"`top_k` \(5, at most (\d+)\)", PAGE)}
    assert top_ks == {limits.max_top_k}
    assert f"A pipeline holds at most {limits.max_files} files" in PAGE
    assert f"`top_k` is at most {limits.max_top_k}" in PAGE
