"""BlindAI: confidential AI inference. ONNX models served from inside a TEE, verified first.

Example::

    import blindai
    with blindai.connect("localhost", simulation_mode=True) as conn:
        model = conn.upload_model("model.onnx", model_name="clf")
        print(conn.predict("clf", {"input": x}))

The names below are imported on first use: ``blindai.__version__`` loads no client code,
and ``import blindai.attestation`` (a verifier alone) or the server loads no client module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from blindai._version import __version__

if TYPE_CHECKING:
    from blindai._malloc import keep_freed_memory
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
    "keep_freed_memory",
]

_SIMULATION = "blindai.attestation.simulation"
#: where each public name is imported from on first use (everything else: the client)
_LAZY = {name: "blindai.client" for name in __all__ if name != "__version__"} | {
    "SimulationModeWarning": _SIMULATION,
    "keep_freed_memory": "blindai._malloc",
}


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'blindai' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
