"""What a replica must hold to be ready (``--require-models``), and the export options kept."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import cbor2
import pytest

from blindai.errors import ConfigurationError
from blindai.protocol.replication import ExportedModel, encode_export
from blindai.server.model_file import ModelFile
from blindai.server.registry import ModelRegistry
from blindai.server.replication import (
    EXPORT_CHUNK,
    MAX_REQUIRED_FILE_BYTES,
    ModelExport,
    RequiredModels,
    UploadOptions,
)
from tests.models import matmul
from tests.unit.server._inprocess import in_process, post_scope

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


def post(app: Any, path: str, body: bytes) -> list[dict[str, Any]]:
    """The ASGI messages ``app`` sends for one POST (to see how a reply is sent)."""
    scope = post_scope(path, content_length=len(body))
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if not messages:  # the client stays: a reply being streamed is not cut short
            await asyncio.Event().wait()
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def test_export_sends_the_model_a_mebibyte_at_a_time():
    """The reply was one body of the whole model, read, copied and encrypted at once on the
    event loop (a 134 MB export held other clients' inferences up for 0.7 s; 3 at once took
    1.29 GB, 0.44 GB now)."""
    model = matmul(1024, 700)  # 2.9 MB
    with in_process(allow_model_export=True) as server:
        model_id = server.upload(model)["model_id"]
        sent = post(server.apps.management, "/export", cbor2.dumps({"model_id": model_id}))
    (start,) = [m for m in sent if m["type"] == "http.response.start"]
    bodies = [m["body"] for m in sent if m["type"] == "http.response.body"]
    assert start["status"] == 200
    assert max(len(b) for b in bodies) <= EXPORT_CHUNK and len(bodies) >= 4
    whole = b"".join(bodies)
    expected = ExportedModel(model_id, model, None, hashlib.sha256(model).digest(), True, None)
    assert whole == encode_export(expected)
    assert (b"content-length", str(len(whole)).encode()) in start["headers"]


def test_an_export_reads_its_own_descriptor():
    """The model deleted meanwhile (its file closed, the number maybe reused): the export still
    reads the model's bytes, never another file's."""
    data = bytes(range(256)) * 10_000
    file = ModelFile.holding(data)
    export = ModelExport("m", b"", b"", len(data), fd=file.reader())
    file.close()
    try:
        pieces = [export.piece(offset) for offset in range(0, len(data), EXPORT_CHUNK)]
    finally:
        export.close()
    assert b"".join(pieces) == data and export.fd is None
    with pytest.raises(OSError, match="closed"):
        export.piece(0)


def test_a_model_file_the_host_cut_short_ends_the_export_with_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the host can shorten an ``--upload-dir`` file (the memory file is sealed). The
    export's read failed with OSError in the middle of the reply: an ASGI traceback, and an
    exception out of the app. Now the reply stops where the bytes do (the connection closes,
    the client sees a cut body) and one line says why."""
    model = matmul(1024, 700)  # 2.9 MB: three pieces
    registry = ModelRegistry(max_models=4)
    with in_process(registry, allow_model_export=True, upload_dir=tmp_path) as server:
        model_id = server.upload(model)["model_id"]
        (entry,) = registry.entries(lambda _: True)
        source = registry.source(entry)
        assert isinstance(source, ModelFile) and not source.in_memory
        os.truncate(source.path, EXPORT_CHUNK + 10)  # the host, through the file's directory
        sent = post(server.apps.management, "/export", cbor2.dumps({"model_id": model_id}))
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert all(m.get("more_body") for m in bodies)  # never said complete
    assert sum(len(m["body"]) for m in bodies) < len(model)
    assert f"export of model {model_id} cut short: the model's file is shorter" in caplog.text
    assert "Traceback" not in caplog.text
