"""The data plane, independent of HTTP: upload, run, delete on top of the registry.

Inputs are matched to the model's inputs by name (any order) or by position, and their dtype
and shape are checked against the model before anything runs. Blocking work (compilation,
inference) runs in worker threads, never on the event loop; compilation has its own limiter so
that uploads never hold up inference on other models.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from blindai.errors import InferenceFailed, ProtocolError
from blindai.pipeline.bundle import Pipeline
from blindai.pipeline.compiled import CompiledPipeline, InputKind, compile_pipeline
from blindai.pipeline.results import PipelineResult
from blindai.protocol import codec
from blindai.protocol.messages import WireTensor
from blindai.server.registry import ModelEntry, ModelRegistry, model_digest
from blindai.server.runtime import OnnxModel, TensorSpec
from blindai.server.settings import ServerSettings

__all__ = ["DataPlane", "match_inputs"]

_log = logging.getLogger("blindai.server")


class PayloadTooLarge(InferenceFailed):
    """Raised when a body or tensor is over the configured limits (413)."""


@dataclass
class DataPlane:
    """Transport-agnostic handlers shared by the 0.6 routes and the v2 routes."""

    settings: ServerSettings
    registry: ModelRegistry

    def __post_init__(self) -> None:
        # two pools: compiling a model never takes a thread that inference needs
        self._infer_pool = ThreadPoolExecutor(
            self.settings.inference_threads, thread_name_prefix="blindai-infer"
        )
        self._compile_pool = ThreadPoolExecutor(2, thread_name_prefix="blindai-compile")

    def close(self) -> None:
        """Stop the worker threads."""
        self._infer_pool.shutdown(wait=False, cancel_futures=True)
        self._compile_pool.shutdown(wait=False, cancel_futures=True)

    async def upload(
        self,
        model: bytes,
        *,
        name: str | None,
        optimize: bool,
        pipeline: Pipeline | None = None,
    ) -> ModelEntry:
        """Compile (or reuse) a model, check its pipeline against it, register it under a fresh
        id. A pipeline that cannot work with the model is a PipelineError (400)."""
        if len(model) > self.settings.max_model_bytes:
            raise PayloadTooLarge(
                f"model is {len(model)} bytes; this server accepts at most "
                f"{self.settings.max_model_bytes}",
                status_code=413,
            )
        if not model:
            raise ProtocolError("model is empty")
        digest = model_digest(model)
        compiled = self.registry.session_for(digest)
        if compiled is None:
            loop = asyncio.get_running_loop()
            compiled = await loop.run_in_executor(
                self._compile_pool, self._compile, model, optimize
            )
        steps = None
        if pipeline is not None:
            loop = asyncio.get_running_loop()
            steps = await loop.run_in_executor(
                self._compile_pool, self._compile_pipeline, pipeline, compiled
            )
        return self.registry.add(digest, compiled, name, steps)

    def _compile_pipeline(self, pipeline: Pipeline, model: OnnxModel) -> CompiledPipeline:
        return compile_pipeline(
            pipeline,
            inputs=model.inputs,
            outputs=model.outputs,
            limits=self.settings.pipeline_limits(),
        )

    def _compile(self, model: bytes, optimize: bool) -> OnnxModel:
        try:
            return OnnxModel(
                model,
                optimize=optimize,
                intra_op_threads=self.settings.intra_op_threads,
                device=self.settings.device,
                gpu_index=self.settings.gpu_index,
            )
        except InferenceFailed:
            raise  # the GPU refused the session: its own message
        except Exception as exc:  # onnxruntime raises several types for a bad model
            raise InferenceFailed(
                "the model could not be loaded by onnxruntime (not a valid ONNX model, or "
                "it uses operators this runtime lacks)",
                status_code=400,
            ) from exc

    async def run(
        self, entry: ModelEntry, feeds: dict[str, np.ndarray]
    ) -> list[tuple[str, np.ndarray]]:
        """Run validated inputs through a model in a worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._infer_pool, entry.model.predict, feeds)

    async def run_raw(
        self, entry: ModelEntry, kind: InputKind, raw: bytes | str
    ) -> tuple[PipelineResult | None, list[tuple[str, np.ndarray]]]:
        """Run one raw input (text, image or audio bytes) through the model's pipeline: the
        typed result when the pipeline has an output step (else None), and the raw outputs."""
        pipe = entry.pipeline
        label = entry.name or entry.model_id
        if pipe is None:
            raise ProtocolError(f"model {label!r} has no pipeline: send tensors")
        if pipe.input_kind != kind:
            raise ProtocolError(f"model {label!r} takes {pipe.input_kind}, not {kind}")

        def work() -> tuple[PipelineResult | None, list[tuple[str, np.ndarray]]]:
            prepared = pipe.preprocess(raw)
            feeds = match_inputs(entry.model.inputs, list(prepared.feeds.items()))
            outputs = entry.model.predict(feeds)
            return pipe.postprocess(dict(outputs), prepared), outputs

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._infer_pool, work)

    def run_wire(self, entry: ModelEntry, tensors: Sequence[WireTensor]) -> dict[str, np.ndarray]:
        """Validate 0.6 wire tensors against the model and make the feeds."""
        arrays = [(t.info.node_name, t.as_numpy()) for t in tensors]
        return match_inputs(entry.model.inputs, arrays)


def _check(spec: TensorSpec, array: np.ndarray, label: str) -> np.ndarray:
    if spec.dtype is None:
        raise ProtocolError(f"input {spec.name!r} has type {spec.onnx_type}, not supported")
    if array.dtype != spec.dtype:
        raise ProtocolError(
            f"input {spec.name!r}{label}: dtype {array.dtype} does not match the model's "
            f"{spec.dtype}"
        )
    if array.dtype == object and not all(isinstance(x, str) for x in array.ravel()):
        raise ProtocolError(f"input {spec.name!r}{label}: BYTES elements must be UTF-8 text")
    if not spec.accepts_shape(tuple(array.shape)):
        want = ["?" if d is None else d for d in spec.shape]
        raise ProtocolError(
            f"input {spec.name!r}{label}: shape {list(array.shape)} does not fit the model's {want}"
        )
    return array


def match_inputs(
    specs: Sequence[TensorSpec], arrays: Sequence[tuple[str | None, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Map named inputs by name (any order) and unnamed ones by position; check each."""
    by_name = {s.name: s for s in specs}
    feeds: dict[str, np.ndarray] = {}
    unnamed: list[np.ndarray] = []
    for name, array in arrays:
        if name is None or name == "":
            unnamed.append(array)
            continue
        spec = by_name.get(name)
        if spec is None:
            raise ProtocolError(f"the model has no input named {name!r}; inputs: {list(by_name)}")
        if name in feeds:
            raise ProtocolError(f"input {name!r} given twice")
        feeds[name] = _check(spec, array, "")
    free = [s for s in specs if s.name not in feeds]
    if len(unnamed) > len(free):
        raise ProtocolError(f"the model takes {len(specs)} inputs, {len(arrays)} were given")
    for i, (spec, array) in enumerate(zip(free, unnamed, strict=False)):
        feeds[spec.name] = _check(spec, array, f" (position {i})")
    missing = [s.name for s in specs if s.name not in feeds]
    if missing:
        raise ProtocolError(f"missing input(s) {missing}; the model takes {list(by_name)}")
    return feeds


def output_tensors(outputs: list[tuple[str, np.ndarray]]) -> list[dict[str, Any]]:
    """Encode outputs for the 0.6 wire (node_name = ONNX output name)."""
    out = []
    for name, array in outputs:
        try:
            out.append(codec.encode_tensor(WireTensor.from_numpy(array, name)))
        except ValueError as exc:
            raise InferenceFailed(
                f"output {name!r} has dtype {array.dtype}, which the 0.6 wire cannot carry; "
                "use the v2 protocol",
                status_code=422,
            ) from exc
    return out
