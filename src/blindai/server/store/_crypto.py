"""The store's cryptography: sub-keys by HKDF, AES-256-GCM entries bound to their file names.

An entry file is ``header || ciphertext || tag``:

==========  =====  ==========================================================
field       bytes  value
==========  =====  ==========================================================
magic       4      ``BAIS``
version     1      2 (1: written before the store kept a manifest)
kind        1      ``m`` (model), ``k`` (API key record) or ``n`` (the manifest)
nonce       12     random, fresh for every write
ciphertext  n      AES-256-GCM of the plaintext (streamed, one GCM message)
tag         16     GCM tag over header, file name and ciphertext
==========  =====  ==========================================================

The associated data is the header followed by the file name, so an entry moved or copied
to another name, or given another kind, fails authentication. The plaintext is a 4-byte
big-endian length, a CBOR map of metadata, then the payload (the model bytes, then its
pipeline's CBOR when it has one, ``pipeline_size`` in the metadata; nothing for a key record).
File names are ``<kind>-<HMAC-SHA256(names key, kind:id)[:16] hex>.sealed``: they reveal
neither ids nor names. The nonce names one write of an entry: the store's manifest
(``_manifest``) lists, for each entry, the nonce of the write it last made.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "HEADER_SIZE",
    "NONCE_SIZE",
    "OVERHEAD",
    "TAG_SIZE",
    "EntryKeys",
    "Header",
    "Unsealer",
    "new_nonce",
    "parse_header",
    "seal",
    "split_plaintext",
]

MAGIC = b"BAIS"
VERSION = 2
"""Written now: the entry is listed in the store's manifest (1: written before it had one)."""
_VERSIONS = (1, 2)
_KINDS = (b"m", b"k", b"n")
NONCE_SIZE = 12
TAG_SIZE = 16
HEADER_SIZE = len(MAGIC) + 2 + NONCE_SIZE
#: bytes an entry adds to its plaintext
OVERHEAD = HEADER_SIZE + TAG_SIZE
CHUNK = 1 << 20
_SALT = b"blindai sealed store v1"


def _hkdf(material: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=info).derive(material)


@dataclass(frozen=True, repr=False)
class EntryKeys:
    """The sub-keys derived from the store key material (never printed)."""

    aead: bytes
    names: bytes
    api_keys: bytes

    @classmethod
    def derive(cls, material: bytes) -> EntryKeys:
        """HKDF-SHA256 of the platform's key material into independent 256-bit keys."""
        if len(material) < 16:
            raise ValueError("store key material must be at least 16 bytes")
        return cls(
            aead=_hkdf(material, b"aes-256-gcm entries"),
            names=_hkdf(material, b"hmac-sha256 file names"),
            api_keys=_hkdf(material, b"hmac-sha256 api keys"),
        )

    def file_name(self, kind: bytes, ident: str) -> str:
        """The entry's file name: kind and a keyed hash of its id (never the id itself)."""
        digest = hmac.new(self.names, kind + b":" + ident.encode(), hashlib.sha256).digest()
        return f"{kind.decode()}-{digest[:16].hex()}.sealed"


def _header(kind: bytes, nonce: bytes) -> bytes:
    return MAGIC + bytes([VERSION]) + kind + nonce


def new_nonce() -> bytes:
    """A fresh nonce: one per write."""
    return os.urandom(NONCE_SIZE)


def seal(
    keys: EntryKeys,
    kind: bytes,
    file_name: str,
    meta: bytes,
    payload: Sequence[bytes],
    nonce: bytes | None = None,
) -> Iterator[bytes]:
    """The entry's bytes, in chunks (the payload's parts, one after the other, are encrypted
    piece by piece: nothing is copied whole). ``nonce``: this write's (:func:`new_nonce`),
    fresh by default; never one used before."""
    nonce = new_nonce() if nonce is None else nonce
    if len(nonce) != NONCE_SIZE:
        raise ValueError("a nonce is 12 bytes")
    header = _header(kind, nonce)
    enc = Cipher(algorithms.AES(keys.aead), modes.GCM(nonce)).encryptor()
    enc.authenticate_additional_data(header + file_name.encode())
    yield header
    yield enc.update(struct.pack(">I", len(meta)) + meta)
    for part in payload:
        view = memoryview(part)
        for i in range(0, len(view), CHUNK):
            yield enc.update(view[i : i + CHUNK])
    yield enc.finalize() + enc.tag


@dataclass(frozen=True)
class Header:
    """An entry's header (not authenticated until its entry's tag is checked)."""

    version: int
    kind: bytes
    nonce: bytes


def parse_header(header: bytes) -> Header:
    """An entry's header; ValueError when it is not one of ours."""
    if len(header) != HEADER_SIZE or header[:4] != MAGIC:
        raise ValueError("not a store entry")
    if header[4] not in _VERSIONS:
        raise ValueError(f"store entry version {header[4]} is not supported")
    kind = header[5:6]
    if kind not in _KINDS:
        raise ValueError("unknown entry kind")
    return Header(header[4], kind, header[6:])


class Unsealer:
    """Decrypts one entry incrementally; nothing it returns is trusted before :meth:`finish`."""

    def __init__(self, keys: EntryKeys, header: bytes, file_name: str, tag: bytes) -> None:
        self.header = parse_header(header)
        self.kind = self.header.kind
        self._dec = Cipher(algorithms.AES(keys.aead), modes.GCM(self.header.nonce, tag)).decryptor()
        self._dec.authenticate_additional_data(header + file_name.encode())

    def update(self, chunk: bytes) -> bytes:
        """Decrypt the next piece of ciphertext (unauthenticated until finish())."""
        return self._dec.update(chunk)

    def finish(self) -> None:
        """Check the tag; raises :class:`InvalidTag` when the entry was altered or misplaced."""
        self._dec.finalize()


def split_plaintext(plain: bytes | bytearray) -> tuple[bytes, memoryview]:
    """(metadata CBOR, payload) of an authenticated plaintext."""
    if len(plain) < 4:
        raise ValueError("entry too short")
    (size,) = struct.unpack(">I", plain[:4])
    if size > len(plain) - 4:
        raise ValueError("entry metadata length out of range")
    view = memoryview(plain)
    return bytes(view[4 : 4 + size]), view[4 + size :]
