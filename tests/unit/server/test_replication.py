"""What a replica must hold to be ready (``--require-models``), and the export options kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from blindai.errors import ConfigurationError
from blindai.server.replication import MAX_REQUIRED_FILE_BYTES, RequiredModels, UploadOptions

A, B = b"\xaa" * 32, b"\xbb" * 32


def test_parse_digests_comments_and_blindai_upload_lines():
    text = f"# models\n\n{A.hex()}\nsha256   {B.hex().upper()}  # the classifier\n"
    assert RequiredModels.parse(text) == RequiredModels(frozenset({A, B}))


@pytest.mark.parametrize("line", ["abc", "zz" * 32, A.hex() + "0", "sha256"])
def test_parse_refuses_what_is_not_a_digest(line: str):
    with pytest.raises(ConfigurationError, match="line 2: expected a SHA-256"):
        RequiredModels.parse(f"{A.hex()}\n{line}\n", source="models.txt")


def test_a_refused_line_says_what_it_holds_escaped():
    """The line was refused without showing why (an invisible character, a terminal escape)."""
    with pytest.raises(ConfigurationError, match=r"line 1: .*found '\\u200b") as info:
        RequiredModels.parse("\u200b" + A.hex(), source="models.txt")
    with pytest.raises(ConfigurationError, match="found nothing"):
        RequiredModels.parse("sha256")
    with pytest.raises(ConfigurationError, match=r"found '\\x1b\[2J'"):
        RequiredModels.parse("\x1b[2J")
    assert "\u200b" not in str(info.value)


def test_line_numbers_are_an_editors():
    """A form feed or a \\x1c inside a line is not a line break for an editor."""
    with pytest.raises(ConfigurationError, match="line 3: "):
        RequiredModels.parse(f"{A.hex()}\x0c\n\x1c\nbad\n")


def test_missing_counts_digests_and_the_count():
    required = RequiredModels(frozenset({A, B}), count=3)
    assert required.missing([]) == 3
    assert required.missing([A]) == 2
    assert required.missing([A, B]) == 1
    assert required.missing([A, B, b"\0" * 32]) == 0
    assert RequiredModels(frozenset({A})).missing([B, B, B]) == 1


def test_from_file(tmp_path: Path):
    path = tmp_path / "models.txt"
    path.write_text(A.hex() + "\n")
    assert RequiredModels.from_file(path, count=1) == RequiredModels(frozenset({A}), 1)
    with pytest.raises(ConfigurationError, match="cannot read"):
        RequiredModels.from_file(tmp_path / "absent.txt")
    path.write_bytes(b"\xef\xbb\xbf" + A.hex().encode() + b"\r\n")  # a BOM, as Notepad saves
    assert RequiredModels.from_file(path) == RequiredModels(frozenset({A}))
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigurationError, match="not UTF-8"):
        RequiredModels.from_file(path)
    path.write_bytes(b"#" * (MAX_REQUIRED_FILE_BYTES + 1))
    with pytest.raises(ConfigurationError, match="over 1 MiB"):
        RequiredModels.from_file(path)


def test_upload_options_kept_and_dropped():
    options = UploadOptions()
    options.keep("m1", optimize=False, pipeline={"spec": {}, "files": {}})
    assert options.get("m1") == (False, {"spec": {}, "files": {}})
    options.drop("m1")
    options.drop("m1")
    assert options.get("m1") is None
