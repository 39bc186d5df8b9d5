"""Vendor the Open Inference Protocol's gRPC descriptors and generate the Python modules.

The protocol is Triton's ``grpc_service.proto`` (KServe v2's ``GRPCInferenceService`` and
Triton's extensions: repository, statistics) with the ``model_config.proto`` it imports, both
BSD-3-Clause (NVIDIA). No sdist of tritonclient is published, so the proto files reach this
machine only inside tritonclient's wheel, compiled: ``vendor`` copies those compiled
descriptors (``FileDescriptorProto``, the exact content of the .proto files: names, field
numbers, options) into ``_generated/grpc_service.binpb``; ``generate`` runs grpcio-tools'
protoc on that descriptor set (``--descriptor_set_in``) and writes the modules checked in
beside it; ``check`` exits 1 when the checked-in modules differ from what ``generate`` writes
(``tests/unit/server/grpc/test_generated.py`` runs it).

The generated modules are made package-relative and register their descriptors in a private
descriptor pool (``_generated/_pool.py``), so that they coexist in one process with
tritonclient's copies of the same protocol (same file names, same message names).

Usage: python scripts/grpc_codegen.py {vendor,generate,check}
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GENERATED = REPO / "src/blindai/server/protocols/grpc/_generated"
DESCRIPTORS = GENERATED / "grpc_service.binpb"
PROTOS = ("model_config.proto", "grpc_service.proto")
OUTPUTS = (
    "model_config_pb2.py",
    "model_config_pb2.pyi",
    "grpc_service_pb2.py",
    "grpc_service_pb2.pyi",
    "grpc_service_pb2_grpc.py",
)
_REWRITES = (
    # package-relative imports of the sibling modules
    (re.compile(r"^import (\w+_pb2) as (\w+)$", re.M), r"from . import \1 as \2"),
    # a private descriptor pool, not the process-wide default one
    (
        re.compile(r"^from google\.protobuf import descriptor_pool as _descriptor_pool$", re.M),
        "from . import _pool",
    ),
    (re.compile(r"_descriptor_pool\.Default\(\)"), "_pool.POOL"),
)


def vendor() -> None:
    """Copy the compiled descriptors out of the installed tritonclient."""
    from google.protobuf import descriptor_pb2
    from tritonclient.grpc import model_config_pb2, service_pb2

    found = descriptor_pb2.FileDescriptorSet()
    for module in (model_config_pb2, service_pb2):
        module.DESCRIPTOR.CopyToProto(found.file.add())
    assert tuple(f.name for f in found.file) == PROTOS
    DESCRIPTORS.write_bytes(found.SerializeToString(deterministic=True))


def _rewrite(text: str) -> str:
    for pattern, replacement in _REWRITES:
        text = pattern.sub(replacement, text)
    return text


def render() -> dict[str, str]:
    """The generated modules, by file name, as ``generate`` writes them."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"--descriptor_set_in={DESCRIPTORS}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *PROTOS,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        return {name: _rewrite((Path(tmp) / name).read_text()) for name in OUTPUTS}


def generate() -> None:
    """Write the generated modules beside the descriptors."""
    for name, text in render().items():
        (GENERATED / name).write_text(text)


def check() -> int:
    """0 when the checked-in modules are what ``generate`` writes, else 1 (names listed)."""
    stale = [n for n, t in render().items() if (GENERATED / n).read_text() != t]
    for name in stale:
        print(f"{GENERATED / name} is out of date: run python scripts/grpc_codegen.py generate")
    return 1 if stale else 0


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) == 2 else ""
    if command == "vendor":
        vendor()
    elif command == "generate":
        generate()
    elif command == "check":
        sys.exit(check())
    else:
        sys.exit(__doc__)
