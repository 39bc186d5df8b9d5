"""OnnxModel: load / predict / unload around one onnxruntime session."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from blindai.errors import InferenceFailed

__all__ = ["OnnxModel", "TensorSpec"]

# onnxruntime type strings -> numpy dtypes
_ORT_TYPES: dict[str, np.dtype[np.generic]] = {
    f"tensor({k})": np.dtype(v)
    for k, v in {
        "float": "float32",
        "double": "float64",
        "float16": "float16",
        "int8": "int8",
        "int16": "int16",
        "int32": "int32",
        "int64": "int64",
        "uint8": "uint8",
        "uint16": "uint16",
        "uint32": "uint32",
        "uint64": "uint64",
        "bool": "bool",
        "string": "object",
    }.items()
}


@dataclass(frozen=True)
class TensorSpec:
    """An input or output of the model: name, numpy dtype, shape (None for dynamic dims)."""

    name: str
    dtype: np.dtype[np.generic] | None
    shape: tuple[int | None, ...]
    onnx_type: str

    def accepts_shape(self, shape: tuple[int, ...]) -> bool:
        """Whether a concrete shape fits this spec."""
        return len(shape) == len(self.shape) and all(
            want is None or want == got for want, got in zip(self.shape, shape, strict=True)
        )


def _spec(node: ort.NodeArg) -> TensorSpec:
    dims = tuple(d if isinstance(d, int) and d >= 0 else None for d in (node.shape or ()))
    return TensorSpec(node.name, _ORT_TYPES.get(node.type), dims, node.type)


class OnnxModel:
    """One compiled model. ``predict`` is thread-safe (onnxruntime sessions are)."""

    def __init__(self, model: bytes, *, optimize: bool = True, intra_op_threads: int = 0) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if optimize
            else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        )
        options.intra_op_num_threads = intra_op_threads
        # no busy-waiting worker threads: they would compete with the event loop for cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            model, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.inputs = tuple(_spec(n) for n in self._session.get_inputs())
        self.outputs = tuple(_spec(n) for n in self._session.get_outputs())
        self._output_names = [o.name for o in self.outputs]

    def predict(self, feeds: Mapping[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
        """Run the model on validated inputs; returns (output name, array) in model order."""
        try:
            results = self._session.run(self._output_names, dict(feeds))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise InferenceFailed(
                f"the model failed on these inputs: {type(exc).__name__}", status_code=422
            ) from exc
        return [(n, np.asarray(r)) for n, r in zip(self._output_names, results, strict=True)]

    def unload(self) -> None:
        """Release the session (its memory goes when the last reference does)."""
        del self._session
