"""Device attributes are the host's: bounded reads, no link followed, no endless wait."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from blindai.server.attesters._devfiles import (
    ATTRIBUTE_MAX_BYTES,
    read_attribute,
    write_attribute,
)


def test_file_and_write_round_trip(tmp_path: Path):
    path = tmp_path / "inblob"
    path.write_bytes(b"")
    write_attribute(path, b"\x01" * 64)
    assert read_attribute(path) == b"\x01" * 64


def test_read_stops_past_the_limit(tmp_path: Path):
    path = tmp_path / "outblob"
    with path.open("wb") as f:  # sparse: 64 MiB of zeros on no disk
        f.truncate(64 << 20)
    with pytest.raises(OSError, match=f"larger than {ATTRIBUTE_MAX_BYTES} bytes") as info:
        read_attribute(path)
    assert info.value.errno == errno.EFBIG
    path.write_bytes(b"x" * 11)
    with pytest.raises(OSError, match="larger than 10 bytes"):
        read_attribute(path, limit=10)
    assert read_attribute(path, limit=11) == b"x" * 11


def test_a_symlink_is_not_followed(tmp_path: Path):
    secret = tmp_path / "elsewhere"
    secret.write_bytes(b"not an attribute")
    (tmp_path / "quote").symlink_to(secret)
    with pytest.raises(OSError) as info:
        read_attribute(tmp_path / "quote")
    assert info.value.errno == errno.ELOOP
    with pytest.raises(OSError):
        write_attribute(tmp_path / "quote", b"data")
    assert secret.read_bytes() == b"not an attribute"


def test_directories_and_devices_are_refused(tmp_path: Path):
    (tmp_path / "outblob").mkdir()
    with pytest.raises(OSError, match="a directory, not an attribute file"):
        read_attribute(tmp_path / "outblob")
    with pytest.raises(OSError, match="a device or socket, not an attribute file"):
        read_attribute(Path("/dev/null"))
    with pytest.raises(OSError, match="a device or socket, not an attribute file"):
        write_attribute(Path("/dev/null"), b"data")


def test_a_fifo_nobody_writes_is_given_up_at_the_timeout(tmp_path: Path):
    os.mkfifo(tmp_path / "outblob")
    with pytest.raises(TimeoutError, match="no answer in time"):
        read_attribute(tmp_path / "outblob", timeout=0.05)


def test_a_fifo_nobody_reads_is_given_up_at_the_timeout(tmp_path: Path):
    os.mkfifo(tmp_path / "inblob")
    with pytest.raises(TimeoutError):
        write_attribute(tmp_path / "inblob", b"\x00" * 64, timeout=0.05)


def test_a_fifo_that_fills_and_is_never_drained_is_given_up(tmp_path: Path):
    fifo = tmp_path / "inblob"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # present, never reads
    try:
        with pytest.raises(TimeoutError):
            write_attribute(fifo, b"\x00" * (4 << 20), timeout=0.05)
    finally:
        os.close(reader)


def test_a_fifo_is_read_to_its_end_and_bounded(tmp_path: Path):
    fifo = tmp_path / "outblob"
    os.mkfifo(fifo)

    def write(data: bytes) -> None:
        fd = os.open(fifo, os.O_WRONLY)  # waits for the reader
        try:
            os.write(fd, data)
        except BrokenPipeError:  # the reader gave up first
            pass
        finally:
            os.close(fd)

    for data, limit in ((b"y" * 99, 99), (b"y" * 100, 99)):
        writer = threading.Thread(target=write, args=(data,))
        writer.start()
        try:
            if len(data) <= limit:
                assert read_attribute(fifo, limit=limit) == data
            else:
                with pytest.raises(OSError, match="larger than 99 bytes"):
                    read_attribute(fifo, limit=limit)
        finally:
            writer.join()
