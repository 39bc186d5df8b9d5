"""The SEV-SNP certificate table (GHCB specification): what configfs-tsm returns in ``auxblob``.

A table of 24-byte entries ``(GUID, offset u32 LE, length u32 LE)`` ended by an all-zero entry;
offsets count from the start of the table; GUIDs in RFC 4122 byte order.
"""

from __future__ import annotations

import struct
import uuid

from blindai.errors import EvidenceError

__all__ = ["CERTIFICATE_GUIDS", "parse_certificate_table"]

#: GUIDs of the certificates a verifier uses, in the order they are returned.
CERTIFICATE_GUIDS: dict[uuid.UUID, str] = {
    uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"): "VCEK",
    uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"): "VLEK",
    uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"): "ASK",
    uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"): "ARK",
}
_ENTRY = struct.Struct("<16sII")


def parse_certificate_table(table: bytes) -> tuple[bytes, ...]:
    """The VCEK/VLEK, ASK and ARK of a certificate table, in that order; empty for no table.

    Entries with other GUIDs are skipped. A table without its terminator, or an entry pointing
    outside the blob, raises :class:`EvidenceError`.
    """
    if not table:
        return ()
    found: dict[uuid.UUID, bytes] = {}
    at = 0
    while True:
        if at + _ENTRY.size > len(table):
            raise EvidenceError("SEV-SNP certificate table has no terminating entry")
        raw_guid, offset, length = _ENTRY.unpack_from(table, at)
        at += _ENTRY.size
        if raw_guid == bytes(16) and offset == 0 and length == 0:
            break
        if length == 0 or offset + length > len(table):
            raise EvidenceError("SEV-SNP certificate table entry points outside the table")
        found[uuid.UUID(bytes=raw_guid)] = table[offset : offset + length]
    return tuple(found[g] for g in CERTIFICATE_GUIDS if g in found)
