"""What the CLI prints of a server's words: escaped, so that a hostile server (or a model
another party uploaded) cannot forge lines or send terminal escapes to the user's terminal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from blindai.cli._access import models_table
from blindai.cli._commands import _save_outputs, _show_result
from blindai.cli._terminal import shown
from blindai.pipeline.results import Classification, Label, Transcript
from blindai.protocol.replication import ListedModel

HOSTILE = "m\nERROR forged line\x1b[2J\u202e\x00"


def test_shown_escapes_what_a_terminal_would_act_on() -> None:
    assert shown(HOSTILE) == "m\\nERROR forged line\\x1b[2J\\u202e\\x00"
    assert shown("résumé 日本語 -_.") == "résumé 日本語 -_."
    assert shown("a\nb\tc\x1b", keep="\n\t") == "a\nb\tc\\x1b"
    assert shown(42) == "42"


def _one_line_each(text: str, lines: int) -> None:
    assert "\x1b" not in text and "\u202e" not in text and "\x00" not in text
    assert len(text.splitlines()) == lines


def test_models_table_escapes_ids_names_and_owners() -> None:
    model = ListedModel(HOSTILE, HOSTILE, b"\x01" * 32, 10, owner=HOSTILE, public=True)
    lines = models_table([model])
    _one_line_each("\n".join(lines), 2)
    assert lines[1].count("ERROR forged line") == 3


def test_a_classification_and_a_transcript_are_printed_escaped(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _show_result(Classification((Label(HOSTILE, 0.5, 0),)), tmp_path)
    _one_line_each(capsys.readouterr().out, 1)
    _show_result(Transcript("two\nlines\x1b[31m"), tmp_path)
    assert capsys.readouterr().out == "two\nlines\\x1b[31m\n"  # its own lines kept


def test_output_names_are_printed_escaped(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _save_outputs({HOSTILE: np.zeros(2, np.float32)}, tmp_path)
    _one_line_each(capsys.readouterr().out, 1)
    assert [p.name for p in tmp_path.iterdir()] == ["m_ERROR_forged_line__2J__.npy"]


def test_outputs_whose_file_names_collide_are_all_saved(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A model's output names ``a/b``, ``a_b`` and ``A_B`` become one file name: each output
    was written over the one before (two of three lost, without a word)."""
    outputs = {n: np.full(1, k, np.int64) for k, n in enumerate(["a/b", "a_b", "A_B", "a_b-2"])}
    _save_outputs(outputs, tmp_path)
    saved = {p.name: int(np.load(p)[0]) for p in tmp_path.iterdir()}
    assert saved == {"a_b.npy": 0, "a_b-2.npy": 1, "A_B-3.npy": 2, "a_b-2-2.npy": 3}
    printed = capsys.readouterr().out.splitlines()
    assert [line.rsplit("/", 1)[1] for line in printed] == [
        "a_b.npy",
        "a_b-2.npy",
        "A_B-3.npy",
        "a_b-2-2.npy",
    ]
