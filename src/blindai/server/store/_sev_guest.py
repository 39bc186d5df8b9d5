"""``SNP_GET_DERIVED_KEY`` on ``/dev/sev-guest``: the structures of Linux's uapi ``sev-guest.h``.

::

    struct snp_derived_key_req {            struct snp_guest_request_ioctl {
        __u32 root_key_select;                  __u8 msg_version;
        __u32 rsvd;                             __u64 req_data;
        __u64 guest_field_select;               __u64 resp_data;
        __u32 vmpl;                             union { __u64 exitinfo2;
        __u32 guest_svn;                                struct { __u32 fw_error;
        __u64 tcb_version;                                       __u32 vmm_error; }; };
    };                                      };
    struct snp_derived_key_resp { __u8 data[64]; };

    #define SNP_GET_DERIVED_KEY _IOWR('S', 0x1, struct snp_guest_request_ioctl)

``data`` is the firmware's MSG_KEY_RSP (SEV-SNP ABI, "Key Derivation"): ``status`` (u32, 0 on
success) at 0x00, reserved to 0x20, the 32-byte derived key at 0x20. The ioctl itself is a
function passed in (``fcntl.ioctl`` by default), so that the packing can be tested on any
machine and the real call up to the kernel (a regular file answers ENOTTY).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from blindai.errors import ConfigurationError

__all__ = [
    "FIELD_MEASUREMENT",
    "FIELD_POLICY",
    "SNP_GET_DERIVED_KEY",
    "DerivedKeyRequest",
    "DerivedKeyResponse",
    "GuestRequest",
    "Ioctl",
    "derived_key",
]

#: guest_field_select bits (SEV-SNP ABI, MSG_KEY_REQ)
FIELD_POLICY = 1 << 0
FIELD_IMAGE_ID = 1 << 1
FIELD_FAMILY_ID = 1 << 2
FIELD_MEASUREMENT = 1 << 3
FIELD_GUEST_SVN = 1 << 4
FIELD_TCB_VERSION = 1 << 5
ROOT_KEY_VCEK = 0
MSG_VERSION = 1


class DerivedKeyRequest(ctypes.Structure):
    """``struct snp_derived_key_req`` (32 bytes)."""

    _fields_ = (
        ("root_key_select", ctypes.c_uint32),
        ("rsvd", ctypes.c_uint32),
        ("guest_field_select", ctypes.c_uint64),
        ("vmpl", ctypes.c_uint32),
        ("guest_svn", ctypes.c_uint32),
        ("tcb_version", ctypes.c_uint64),
    )


class DerivedKeyResponse(ctypes.Structure):
    """``struct snp_derived_key_resp`` (64 bytes: the firmware's MSG_KEY_RSP)."""

    _fields_ = (("data", ctypes.c_uint8 * 64),)


class GuestRequest(ctypes.Structure):
    """``struct snp_guest_request_ioctl`` (32 bytes; ``exitinfo2`` = vmm_error:fw_error)."""

    _fields_ = (
        ("msg_version", ctypes.c_uint8),
        ("req_data", ctypes.c_uint64),
        ("resp_data", ctypes.c_uint64),
        ("exitinfo2", ctypes.c_uint64),
    )


def _iowr(kind: int, number: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (kind << 8) | number


#: ``_IOWR('S', 0x1, struct snp_guest_request_ioctl)`` = 0xC0205301
SNP_GET_DERIVED_KEY = _iowr(ord("S"), 1, ctypes.sizeof(GuestRequest))

#: ``ioctl(fd, request, arg)``; raises OSError like :func:`fcntl.ioctl`
Ioctl = Callable[[int, int, Any], Any]


def derived_key(
    device: Path,
    *,
    field_select: int,
    vmpl: int = 0,
    ioctl: Ioctl = fcntl.ioctl,
) -> bytes:
    """The 32-byte key the SEV-SNP firmware derives from the VCEK and the selected fields."""
    request = DerivedKeyRequest(
        root_key_select=ROOT_KEY_VCEK, guest_field_select=field_select, vmpl=vmpl
    )
    response = DerivedKeyResponse()
    guest = GuestRequest(
        msg_version=MSG_VERSION,
        req_data=ctypes.addressof(request),
        resp_data=ctypes.addressof(response),
        exitinfo2=0,
    )
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot open {device} ({exc.strerror}): is this an SEV-SNP guest with the "
            "sev-guest driver loaded?"
        ) from exc
    try:
        ioctl(fd, SNP_GET_DERIVED_KEY, guest)
    except OSError as exc:
        raise ConfigurationError(_ioctl_failure(device, exc, guest.exitinfo2)) from exc
    finally:
        os.close(fd)
    data = bytes(response.data)
    status = int.from_bytes(data[0:4], "little")
    if status != 0:
        raise ConfigurationError(f"SEV-SNP firmware refused the key request (status {status:#x})")
    return data[32:64]


def _ioctl_failure(device: Path, exc: OSError, exitinfo2: int) -> str:
    if exc.errno == errno.ENOTTY:
        return f"{device} is not an SEV-SNP guest device (SNP_GET_DERIVED_KEY: {exc.strerror})"
    fw_error, vmm_error = exitinfo2 & 0xFFFFFFFF, exitinfo2 >> 32
    return (
        f"SNP_GET_DERIVED_KEY on {device} failed ({exc.strerror}; firmware error "
        f"{fw_error:#x}, VMM error {vmm_error:#x})"
    )
