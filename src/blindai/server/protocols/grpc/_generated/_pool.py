"""The descriptor pool of the generated modules: their own, not protobuf's default one.

tritonclient registers the same files (``grpc_service.proto``, ``model_config.proto``) in the
default pool; a private pool lets both load in one process whatever their versions.
"""

from google.protobuf import descriptor_pool

__all__ = ["POOL"]

POOL = descriptor_pool.DescriptorPool()
