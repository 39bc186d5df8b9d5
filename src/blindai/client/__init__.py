"""The BlindAI client: verify the server by remote attestation, then send data over TLS.

Example::

    import blindai
    with blindai.connect("localhost", simulation_mode=True) as conn:
        model = conn.upload_model("model.onnx", model_name="clf")
        response = conn.predict("clf", {"input": x})
        response.output[0].argmax(), response["probabilities"]
"""

from __future__ import annotations

from blindai.client._access import ApiKeyInfo, NewApiKey
from blindai.client._attest import Attested, attest
from blindai.client._connect import connect
from blindai.client._peers import AttestationCache, AttestationStats, PeerAttestation
from blindai.client._tensors import PredictResponse, Tensor
from blindai.client.connection import Connection, RunModelResponse, UploadModelResponse
from blindai.client.legacy import BlindAiClient, ModelDatumType
from blindai.protocol.messages import DatumType
from blindai.protocol.replication import ListedModel

__all__ = [
    "ApiKeyInfo",
    "AttestationCache",
    "AttestationStats",
    "Attested",
    "BlindAiClient",
    "Connection",
    "DatumType",
    "ListedModel",
    "ModelDatumType",
    "NewApiKey",
    "PeerAttestation",
    "PredictResponse",
    "RunModelResponse",
    "Tensor",
    "UploadModelResponse",
    "attest",
    "connect",
]
