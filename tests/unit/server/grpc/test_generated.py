"""The checked-in gRPC modules are what grpcio-tools makes of the vendored descriptors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests._server import REPO


def test_generated_modules_are_up_to_date() -> None:
    pytest.importorskip("grpc_tools")
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts/grpc_codegen.py"), "check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_vendored_protocol_is_tritonclients() -> None:
    """Same files, messages, field numbers and service as tritonclient's compiled copy."""
    tritonclient = pytest.importorskip("tritonclient.grpc.service_pb2")
    from google.protobuf import descriptor_pb2

    from blindai.server.protocols.grpc._generated import grpc_service_pb2

    ours, theirs = descriptor_pb2.FileDescriptorProto(), descriptor_pb2.FileDescriptorProto()
    grpc_service_pb2.DESCRIPTOR.CopyToProto(ours)
    tritonclient.DESCRIPTOR.CopyToProto(theirs)
    assert ours == theirs


def test_private_pool_coexists_with_tritonclient() -> None:
    """Both copies load in one process, and a message from one parses in the other."""
    tritonclient = pytest.importorskip("tritonclient.grpc.service_pb2")
    from blindai.server.protocols.grpc._generated import grpc_service_pb2 as ours

    sent = tritonclient.ModelInferRequest(model_name="m", raw_input_contents=[b"\x01\x02"])
    got = ours.ModelInferRequest.FromString(sent.SerializeToString())
    assert got.model_name == "m"
    assert list(got.raw_input_contents) == [b"\x01\x02"]
    assert ours.DESCRIPTOR.pool is not tritonclient.DESCRIPTOR.pool
    service = ours.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
