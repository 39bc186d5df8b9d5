"""The Open Inference Protocol v2 over gRPC (KServe v2 ``GRPCInferenceService``).

The protocol's descriptors are vendored in ``_generated/`` (Triton's ``grpc_service.proto``,
BSD-3-Clause, see ``_generated/LICENSE``) with the modules grpcio-tools generates from them
(``scripts/grpc_codegen.py``). :mod:`.tensors` converts ``ModelInfer`` tensors.
"""

from __future__ import annotations

__all__: list[str] = []
