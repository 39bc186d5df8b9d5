"""AWS Nitro Enclaves attestation documents from the Nitro Secure Module (``/dev/nsm``).

The NSM answers one CBOR request per ioctl ``NSM_IOCTL_REQUEST = _IOWR(0x0A, 0, struct
nsm_message)``, where ``struct nsm_message { struct iovec request; struct iovec response; }``;
the driver sets ``response.iov_len`` to the answer's length. The request is
``{"Attestation": {"user_data": bytes, "nonce": null, "public_key": null}}``; the answer
``{"Attestation": {"document": bytes}}`` (a COSE_Sign1 document) or ``{"Error": code}``.

``user_data`` carries the first 32 bytes of the report data, i.e. the SHA-256 of the TLS
certificate (:mod:`blindai.attestation.binding`), or all 64 for fresh evidence over a client's
nonce (the SHA-256 of the nonce follows). The ioctl is behind :class:`NsmTransport` so
that everything above it can be tested without an enclave.
"""

from __future__ import annotations

import ctypes
import fcntl
import hmac
import os
import stat
import threading
from pathlib import Path
from typing import Any, Protocol

import cbor2

from blindai.attestation.claims import EvidenceKind
from blindai.attestation.endorsements import Endorsements
from blindai.attestation.kinds import NSM
from blindai.attestation.nitro._layout import parse
from blindai.errors import ConfigurationError, EvidenceError
from blindai.server.attesters._quote import check_report_data

__all__ = [
    "DEFAULT_NSM_DEVICE",
    "NSM_IOCTL_REQUEST",
    "NSM_REQUEST_MAX_SIZE",
    "NSM_RESPONSE_MAX_SIZE",
    "IoctlTransport",
    "NsmAttester",
    "NsmTransport",
    "attestation_request",
    "is_character_device",
]

DEFAULT_NSM_DEVICE = NSM.default  # the kind table states it
NSM_REQUEST_MAX_SIZE = 0x1000
NSM_RESPONSE_MAX_SIZE = 0x3000


class _IoVec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class _NsmMessage(ctypes.Structure):
    _fields_ = (("request", _IoVec), ("response", _IoVec))


def _iowr(kind: int, number: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (kind << 8) | number


#: ``_IOWR(0x0A, 0, struct nsm_message)`` (0xC0200A00 on 64-bit Linux).
NSM_IOCTL_REQUEST = _iowr(0x0A, 0, ctypes.sizeof(_NsmMessage))


class NsmTransport(Protocol):
    """Sends one CBOR request to the NSM and returns its CBOR answer."""

    def request(self, message: bytes) -> bytes:
        """The NSM's answer to ``message``; ``OSError`` when the device fails."""
        ...


class IoctlTransport:
    """:class:`NsmTransport` over the NSM device's ioctl (fcntl + ctypes)."""

    def __init__(self, device: Path = DEFAULT_NSM_DEVICE) -> None:
        self.device = device

    def request(self, message: bytes) -> bytes:
        """One ioctl round trip on a freshly opened device."""
        if len(message) > NSM_REQUEST_MAX_SIZE:
            raise ValueError(f"NSM request of {len(message)} bytes exceeds {NSM_REQUEST_MAX_SIZE}")
        request = ctypes.create_string_buffer(message, len(message))
        response = ctypes.create_string_buffer(NSM_RESPONSE_MAX_SIZE)
        msg = _NsmMessage(
            _IoVec(ctypes.addressof(request), len(message)),
            _IoVec(ctypes.addressof(response), NSM_RESPONSE_MAX_SIZE),
        )
        fd = os.open(self.device, os.O_RDWR)
        try:
            fcntl.ioctl(fd, NSM_IOCTL_REQUEST, msg)
        finally:
            os.close(fd)
        return response.raw[: min(msg.response.iov_len, NSM_RESPONSE_MAX_SIZE)]


def is_character_device(path: Path) -> bool:
    """Whether ``path`` is a character device, as the NSM is (a link to one is followed)."""
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def attestation_request(user_data: bytes) -> bytes:
    """The CBOR ``Attestation`` request carrying ``user_data`` (no nonce, no public key)."""
    return cbor2.dumps({"Attestation": {"user_data": user_data, "nonce": None, "public_key": None}})


class NsmAttester:
    """Collects Nitro attestation documents whose ``user_data`` is ``report_data[0:32]``."""

    kind = EvidenceKind.NITRO

    def __init__(self, transport: NsmTransport) -> None:
        self.transport = transport
        self._lock = threading.Lock()

    @classmethod
    def open(cls, device: Path = DEFAULT_NSM_DEVICE) -> NsmAttester:
        """An attester on the NSM device at ``device``; ConfigurationError when there is no
        character device there (a stray file or directory is not a Nitro Secure Module)."""
        if not is_character_device(device):
            what = "nothing" if not os.path.lexists(device) else "no character device"
            raise ConfigurationError(
                f"no Nitro Secure Module at {device} ({what} there): is this running inside a "
                "Nitro enclave?"
            )
        return cls(IoctlTransport(device))

    def evidence(self, report_data: bytes) -> bytes:
        """An attestation document binding ``report_data`` (64 bytes) in ``user_data``.

        ``user_data`` is ``report_data[0:32]`` when the rest is zero (the certificate digest
        alone, as BlindAI has always sent it), else all 64 bytes (fresh evidence). A document
        that is malformed or carries other ``user_data`` is an :class:`EvidenceError`, as a
        quote without our report data is for the other attesters (nothing is verified here).
        """
        check_report_data(report_data)
        user_data = report_data if any(report_data[32:]) else report_data[:32]
        with self._lock:
            try:
                answer = self.transport.request(attestation_request(user_data))
            except OSError as exc:
                raise EvidenceError(f"the NSM device failed: {exc}") from exc
        document = _document(answer)
        carried = parse(document)[1].user_data  # the layout only: EvidenceError if malformed
        if carried is None or not hmac.compare_digest(carried, user_data):
            raise EvidenceError("the NSM's attestation document does not carry our user_data")
        return document

    def endorsements(self) -> Endorsements:
        """None: the document carries its own certificate chain (``cabundle``)."""
        return Endorsements()

    def blindai_collateral(self) -> dict[str, Any] | None:
        """Not applicable (BlindAI 0.6's ``/collateral`` is SGX only)."""
        return None


def _document(answer: bytes) -> bytes:
    try:
        decoded = cbor2.loads(answer)
    except (cbor2.CBORDecodeError, ValueError, EOFError) as exc:
        raise EvidenceError("the NSM answer is not CBOR") from exc
    if isinstance(decoded, dict) and "Error" in decoded:
        raise EvidenceError(f"the NSM refused the attestation request: {decoded['Error']}")
    body = decoded.get("Attestation") if isinstance(decoded, dict) else None
    document = body.get("document") if isinstance(body, dict) else None
    if not isinstance(document, bytes) or not document:
        raise EvidenceError("the NSM answer holds no attestation document")
    return document
