"""The client's streamed /upload body: from a file, one chunk in memory at a time."""

from __future__ import annotations

import hashlib
import os
import tracemalloc

import cbor2
import pytest

from blindai.client._upload import CHUNK, model_source, upload_body
from blindai.errors import ConfigurationError


def body_of(source, **fields) -> bytes:
    body = upload_body(fields, source)
    data = b"".join(bytes(c) for c in body.chunks())
    assert len(data) == body.length
    return data


def test_a_file_streams_to_the_same_message_as_its_bytes(tmp_path):
    model = os.urandom(3 * CHUNK + 12345)
    path = tmp_path / "model.onnx"
    path.write_bytes(model)
    fields = {"model_name": "m", "optimize": True}
    from_file = body_of(model_source(path), **fields)
    assert from_file == body_of(model_source(model), **fields)
    assert cbor2.loads(from_file) == {**fields, "length": len(model), "model": model}
    # every call of the factory starts over (a retried request sends it all again)
    body = upload_body(fields, model_source(str(path)))
    assert b"".join(map(bytes, body.chunks())) == b"".join(map(bytes, body.chunks()))


def test_streaming_a_file_holds_one_chunk_not_the_model(tmp_path):
    path = tmp_path / "big.onnx"
    size = 48 * CHUNK
    with path.open("wb") as f:
        f.truncate(size)
    body = upload_body({"model_name": None}, model_source(path))
    tracemalloc.start()
    try:
        sent = sum(len(chunk) for chunk in body.chunks())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sent == body.length > size
    assert peak < 2 * CHUNK + (1 << 16)


def test_bytes_are_sent_from_their_buffer_without_a_copy():
    model = bytearray(os.urandom(2 * CHUNK))
    chunks = list(model_source(model).chunks())
    assert all(isinstance(c, memoryview) and c.obj is model for c in chunks)


def test_a_file_that_changes_size_while_sent_is_refused(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"x" * (2 * CHUNK))
    source = model_source(path)
    chunks = source.chunks()
    next(chunks)
    path.write_bytes(b"x" * CHUNK)  # truncated under the upload
    with pytest.raises(ConfigurationError, match="changed size"):
        list(chunks)
    path.write_bytes(b"x" * (3 * CHUNK))  # grown
    with pytest.raises(ConfigurationError, match="changed size"):
        list(source.chunks())


def test_unreadable_models_are_configuration_errors(tmp_path):
    with pytest.raises(ConfigurationError, match="cannot read model"):
        model_source(tmp_path / "missing.onnx")
    with pytest.raises(ConfigurationError, match="not a regular file"):
        model_source(tmp_path)
    with pytest.raises(ConfigurationError, match="unsupported model type"):
        model_source(12)


def test_model_digest_refuses_a_fifo_and_a_device(tmp_path):
    # upload_to_replicas reads the model once for its digest, with model_digest (before, whole,
    # with read_model): a FIFO there waited for a writer forever, /dev/zero was read without end
    import threading

    from blindai.client._upload import model_digest

    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    for path in (fifo, "/dev/zero", tmp_path):
        caught: list[BaseException] = []

        def read(path=path, caught=caught):
            try:
                model_digest(path)
            except BaseException as exc:
                caught.append(exc)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(10)
        if reader.is_alive():
            if path == fifo:  # let the reader go
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            pytest.fail(f"model_digest({path}) did not return")
        assert isinstance(caught[0], ConfigurationError), caught
        assert "not a regular file" in str(caught[0])
    path = tmp_path / "m.onnx"
    path.write_bytes(b"model bytes")
    assert model_digest(path) == hashlib.sha256(b"model bytes").digest()
