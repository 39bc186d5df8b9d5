"""Fakes for the attesters' devices: a configfs-tsm kernel, an SNP certificate table.

The fake Intel PCS is in tests/unit/attestation/pcs_fakes.py."""

from __future__ import annotations

import errno
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blindai.attestation.snp._certs import build_cert_table

if TYPE_CHECKING:  # typing.Self is Python 3.11's
    from typing_extensions import Self

__all__ = ["FakeTsmKernel", "HostileTsmEntries", "certificate_table"]


class _EntryWatcher(threading.Thread):
    """A thread that hands each new entry of ``report_dir`` to ``_serve``, until the block
    using it ends."""

    def __init__(self, report_dir: Path) -> None:
        super().__init__(daemon=True)
        self.report_dir = report_dir
        self._halt = threading.Event()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt.set()
        self.join(timeout=5)

    def run(self) -> None:
        known: set[str] = set()
        while not self._halt.is_set():
            for name in sorted(set(os.listdir(self.report_dir)) - known):
                known.add(name)
                self._serve(self.report_dir / name)
            time.sleep(0.001)

    def _serve(self, entry: Path) -> None:
        raise NotImplementedError


class FakeTsmKernel(_EntryWatcher):
    """Plays the kernel's side of configfs-tsm in a plain directory, with FIFOs for ordering.

    For each new entry directory it creates the attributes (``inblob`` last); once ``inblob``
    has been written and closed it writes ``generation`` and ``auxblob`` and serves ``outblob``
    through a FIFO; when ``provider`` is opened for reading (the attester's last read) it removes
    every attribute before answering, so that the attester's ``rmdir`` finds the entry empty as
    it would on configfs.

    ``outblob`` may be a function of the entry's ``inblob`` (a report carrying the report data
    written), ``auxblob`` one of the entry's index (a certificate table that changes).
    """

    def __init__(
        self,
        report_dir: Path,
        *,
        provider: str,
        outblob: bytes | Callable[[bytes], bytes],
        auxblob: bytes | Callable[[int], bytes | None] | None = None,
        extra_writes: Callable[[int], int] = lambda index: 0,
        generation_text: str | None = None,
        outblob_is_a_directory: bool = False,
    ) -> None:
        super().__init__(report_dir)
        self.provider = provider
        self.outblob = outblob
        self.auxblob = auxblob
        self.extra_writes = extra_writes
        self.generation_text = generation_text
        self.outblob_is_a_directory = outblob_is_a_directory
        self.entries: list[dict[str, Any]] = []
        self.most_entries_at_once = 0

    def _serve(self, entry: Path) -> None:
        record: dict[str, Any] = {"name": entry.name, "inblob": None, "privlevel": None}
        at_once = len(os.listdir(self.report_dir))
        self.most_entries_at_once = max(self.most_entries_at_once, at_once)
        self.entries.append(record)
        (entry / "generation").write_text("0\n")
        if self.provider == "sev_guest":
            (entry / "privlevel").write_bytes(b"")
            (entry / "privlevel_floor").write_text("0\n")
        if self.outblob_is_a_directory:
            (entry / "outblob").mkdir()
        else:
            os.mkfifo(entry / "outblob")
        for fifo in ("provider", "inblob"):
            os.mkfifo(entry / fifo)
        inblob = os.open(entry / "inblob", os.O_RDONLY | os.O_NONBLOCK)
        received = b""
        try:
            while not self._halt.is_set():
                try:
                    chunk = os.read(inblob, 4096)
                except BlockingIOError:
                    chunk = None
                if chunk:
                    received += chunk
                elif chunk == b"" and received and record["inblob"] is None:
                    record["inblob"] = received
                    self._report(entry, record)
                if self._answer_provider(entry):
                    return
                time.sleep(0.001)
        finally:
            os.close(inblob)

    def _report(self, entry: Path, record: dict[str, Any]) -> None:
        writes = 1
        if (entry / "privlevel").exists() and (level := (entry / "privlevel").read_bytes()):
            record["privlevel"] = level
            writes += 1
        writes += self.extra_writes(len(self.entries) - 1)
        (entry / "generation").write_text(self.generation_text or f"{writes}\n")
        index = len(self.entries) - 1
        auxblob = self.auxblob(index) if callable(self.auxblob) else self.auxblob
        if auxblob is not None:
            (entry / "auxblob").write_bytes(auxblob)
        if not self.outblob_is_a_directory:
            outblob = self.outblob
            self._write_fifo(
                entry / "outblob", outblob(record["inblob"]) if callable(outblob) else outblob
            )

    def _answer_provider(self, entry: Path) -> bool:
        try:
            fd = os.open(entry / "provider", os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no reader yet
                return False
            raise
        for path in entry.iterdir():
            path.rmdir() if path.is_dir() else path.unlink()
        os.set_blocking(fd, True)
        os.write(fd, f"{self.provider}\n".encode())
        os.close(fd)
        return True

    def _write_fifo(self, path: Path, data: bytes) -> None:
        while not self._halt.is_set():
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
                time.sleep(0.001)
        else:
            return
        os.set_blocking(fd, True)
        try:
            os.write(fd, data)
        except BrokenPipeError:  # the attester stopped reading (an outblob over its limit)
            pass
        finally:
            os.close(fd)


class HostileTsmEntries(_EntryWatcher):
    """A host that lays out each new report entry with ``make(entry)`` and then does nothing."""

    def __init__(self, report_dir: Path, make: Callable[[Path], None]) -> None:
        super().__init__(report_dir)
        self.make = make

    def _serve(self, entry: Path) -> None:
        self.make(entry)


def certificate_table(entries: list[tuple[str, bytes]]) -> bytes:
    """A GHCB certificate table: (GUID, offset, length) entries, a zero entry, then the blobs."""
    return build_cert_table((uuid.UUID(guid), blob) for guid, blob in entries)
