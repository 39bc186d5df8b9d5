"""BlindAI: confidential AI inference. ONNX models served from inside a TEE, verified first.

Example::

    import blindai
    with blindai.connect("localhost", simulation_mode=True) as conn:
        model = conn.upload_model("model.onnx", model_name="clf")
        print(conn.predict("clf", {"input": x}))
"""

from __future__ import annotations

__version__ = "1.0.0a1"

from blindai.attestation.simulation import SimulationModeWarning
from blindai.client import (
    Connection,
    DatumType,
    ModelDatumType,
    PredictResponse,
    RunModelResponse,
    Tensor,
    UploadModelResponse,
    connect,
)

__all__ = [
    "Connection",
    "DatumType",
    "ModelDatumType",
    "PredictResponse",
    "RunModelResponse",
    "SimulationModeWarning",
    "Tensor",
    "UploadModelResponse",
    "__version__",
    "connect",
]
