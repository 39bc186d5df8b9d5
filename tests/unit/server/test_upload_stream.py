"""The streamed /upload reader and ModelFile: the model's bytes are hashed and written as they
arrive, one batch at a time; everything else keeps the whole-body path."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blindai.errors import InvalidInput, PayloadTooLarge
from blindai.server import cbor_body
from blindai.server.cbor_body import STREAM_BATCH as BATCH
from blindai.server.cbor_body import CborLimits, ModelSink, read_upload
from blindai.server.model_file import ModelFile

REPO = Path(__file__).resolve().parents[3]


async def _chunks(body: bytes, sizes: list[int]):
    i = 0
    for n in sizes:
        if i >= len(body):
            break
        yield body[i : i + n]
        i += n
    if i < len(body):
        yield body[i:]
    yield b""  # as starlette ends a stream


async def _write(model: ModelFile, pieces: list[bytes]) -> None:
    await asyncio.get_running_loop().run_in_executor(None, model.write, pieces)


class Got:
    """What read_upload gave: the fields, and the model (a ModelFile when streamed)."""

    def __init__(self, doc):
        self.model = doc.pop("model", None)
        self.fields = doc
        self.body = None if isinstance(self.model, ModelFile) else self.model


def receive(body: bytes, sizes=(65536,), *, field_bytes: int = 1 << 20, chunks=None):
    async def go():
        return await read_upload(
            chunks if chunks is not None else _chunks(body, list(sizes) * (len(body) + 1)),
            limits=CborLimits(max_bytes=1 << 30, setting="max_model_bytes"),
            max_body=1 << 31,
            field_bytes={"pipeline": field_bytes},
            into=ModelSink(ModelFile, _write),
        )

    return Got(asyncio.run(go()))


@settings(max_examples=40, deadline=None)
@given(
    model=st.binary(max_size=3000),
    position=st.integers(0, 3),
    chunk=st.integers(1, 700),
)
def test_the_model_is_streamed_to_its_file_wherever_it_is_in_the_map(model, position, chunk):
    fields = [("model_name", "m"), ("optimize", False), ("pipeline", {"files": {"a": b"xy"}})]
    fields.insert(position, ("model", model))
    got = receive(cbor2.dumps(dict(fields)), [chunk])
    assert isinstance(got.model, ModelFile)
    assert got.fields == {k: v for k, v in fields if k != "model"}
    assert got.model.complete and got.model.read() == model
    assert got.model.digest == hashlib.sha256(model).digest()
    got.model.close()


def test_an_array_of_ints_is_decoded_to_bytes_not_streamed():
    body = cbor2.dumps({"model": list(b"onnx") * 40, "length": 160})
    got = receive(body, [3])
    assert got.model == b"onnx" * 40 and got.fields == {"length": 160}


def test_a_model_over_the_limit_is_refused_from_its_head_before_its_bytes():
    prefix = b"\xa1" + cbor2.dumps("model") + b"\x5b" + (2**40).to_bytes(8, "big")

    async def chunks():
        yield prefix
        raise AssertionError("the model's bytes were read")

    with pytest.raises(PayloadTooLarge, match=str(2**40)):  # refused from the head
        receive(b"", chunks=chunks())


@pytest.mark.parametrize(
    ("body", "error", "fragment"),
    [
        (cbor2.dumps({"model": b"abc"})[:-1], InvalidInput, "ends inside the model"),
        (cbor2.dumps({"model": b"abc"}) + b"\x00", InvalidInput, "bytes after the message"),
        (
            b"\xa2" + cbor2.dumps("a") + b"\x01" + cbor2.dumps("a") + b"\x02",
            InvalidInput,
            "appears twice",
        ),
        (b"\xa1\xff", InvalidInput, "CBOR"),
        (b"\xa2" + (cbor2.dumps("model") + cbor2.dumps(b"ab")) * 2, InvalidInput, "twice"),
        (cbor2.dumps({"model": b"x", "pipeline": "p" * 5000}), PayloadTooLarge, "limit"),
    ],
)
def test_malformed_or_oversized_bodies(body, error, fragment):
    with pytest.raises(error, match=fragment):
        receive(body, [100], field_bytes=1000)


def test_a_field_in_many_chunks_is_parsed_a_few_times_not_once_a_chunk(monkeypatch):
    """A field was parsed again from its start at every chunk: a 32 MiB pipeline of 4000 files
    in 16 KiB TLS records took 11 s of the event loop. It is parsed again only once the buffer
    has doubled."""
    parses = []
    real = cbor_body._parse_front

    def counted(*args):
        parses.append(1)
        return real(*args)

    monkeypatch.setattr(cbor_body, "_parse_front", counted)
    files = {f"f{i}": bytes([i % 251]) * 1000 for i in range(2000)}
    body = cbor2.dumps({"model": b"m", "pipeline": {"spec": "s", "files": files}})
    got = receive(body, [1024], field_bytes=4 << 20)  # about 2000 chunks
    assert got.fields["pipeline"]["files"] == files
    assert len(parses) < 40, len(parses)


def _peak_of_a_large_upload() -> int:
    """Stream a model of 12 batches through read_upload; the peak of traced memory (in a
    process of its own: tracemalloc counts every thread's allocations, and a suite's leftover
    threads allocated beside it)."""
    size = 12 * BATCH + 5
    model = os.urandom(1 << 20) * (size >> 20) + b"tail!"
    body_head = b"\xa2" + cbor2.dumps("model_name") + cbor2.dumps("big")
    body_head += cbor2.dumps("model") + b"\x5a" + len(model).to_bytes(4, "big")

    async def chunks():
        yield body_head
        for i in range(0, len(model), 1 << 16):
            yield model[i : i + (1 << 16)]  # slices: new objects, as a socket gives

    tracemalloc.start()
    try:
        got = receive(b"", chunks=chunks())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got.model is not None and got.model.digest == hashlib.sha256(model).digest()
    return peak


def test_a_large_model_holds_a_few_batches_not_the_model():
    code = f"from {__name__} import _peak_of_a_large_upload as p; print(p())"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True
    )
    peak = int(out.stdout.split()[-1])
    assert peak < 4 * BATCH, f"more than three batches were held: {peak}"


def test_model_files_are_memory_files_or_unlinked_private_files(tmp_path):
    in_memory = ModelFile(3)
    assert in_memory.in_memory and in_memory.path.startswith("/proc/self/fd/")
    in_memory.write([b"ab", memoryview(b"c")])
    assert in_memory.complete and in_memory.read() == b"abc"
    with pytest.raises(ValueError, match="declared size"):
        in_memory.write([b"d"])
    in_memory.close()
    on_disk = ModelFile(2, directory=tmp_path)
    assert not on_disk.in_memory and list(tmp_path.iterdir()) == []  # unlinked at once
    on_disk.write([b"hi"])
    with open(on_disk.path, "rb") as f:
        assert f.read() == b"hi"
    on_disk.close()


def test_a_complete_memory_file_is_sealed_and_its_reader_only_reads():
    """The compile guard's child gets a read-only descriptor; once complete, no descriptor of
    a memory file (even one opened for writing through /proc) can change the hashed bytes."""
    file = ModelFile(3)
    file.write([b"ab"])
    assert not file.sealed
    file.write([b"c"])
    assert file.sealed
    given = file.reader()
    writer = os.open(file.path, os.O_RDWR)
    try:
        assert os.pread(given, 3, 0) == b"abc"
        with pytest.raises(OSError):
            os.write(given, b"x")  # opened read-only
        with pytest.raises(PermissionError):
            os.pwrite(writer, b"x", 0)  # sealed
        with pytest.raises(PermissionError):
            os.ftruncate(writer, 1)
    finally:
        os.close(given)
        os.close(writer)
    assert file.read() == b"abc"
    file.close()


def test_a_model_held_as_bytes_becomes_a_sealed_memory_file():
    with ModelFile.holding(b"model") as file:
        assert file.complete and file.sealed and file.read() == b"model"
        with pytest.raises(ValueError, match="not hashed"):
            file.digest  # noqa: B018 (the caller has the bytes: no hash is taken)
