"""OnnxModel: load / predict / unload around one onnxruntime session, on the CPU or a GPU.

``device="cuda"`` runs sessions with onnxruntime's CUDA execution provider (package
``onnxruntime-gpu``); :func:`check_device` refuses at start-up when it cannot, and every session
is checked to really run on it: onnxruntime's own fallback to the CPU is never taken silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import onnxruntime as ort

from blindai.errors import (
    BlindAIError,
    ConfigurationError,
    InferenceFailed,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
)
from blindai.server._bfloat16 import BF16_ONNX_TYPE, bfloat16, from_ort_value, to_ort_value
from blindai.server._inline import InlineGate
from blindai.server._shown import shown

if TYPE_CHECKING:
    from onnx import ModelProto

    from blindai.server._zipmap import ZipMapOutput

__all__ = [
    "Device",
    "LoadedModel",
    "OnnxModel",
    "TensorSpec",
    "check_device",
    "check_environment",
    "inference_session",
    "providers_for",
    "session_options",
]

Device = Literal["cpu", "cuda"]
_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"

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
_BF16 = bfloat16()
if _BF16 is not None:
    _ORT_TYPES[BF16_ONNX_TYPE] = _BF16


@dataclass(frozen=True)
class TensorSpec:
    """An input or output of the model: name, numpy dtype, shape (None for dynamic dims)."""

    name: str
    dtype: np.dtype[np.generic] | None
    shape: tuple[int | None, ...]
    onnx_type: str
    symbols: tuple[str | None, ...] = ()
    """The names of the symbolic dimensions (``"batch"``), None for the others; may be empty."""

    def accepts_shape(self, shape: tuple[int, ...]) -> bool:
        """Whether a concrete shape fits this spec."""
        return len(shape) == len(self.shape) and all(
            want is None or want == got for want, got in zip(self.shape, shape, strict=True)
        )


class LoadedModel(Protocol):
    """What the data plane, the registry and the batching queue use of a compiled model:
    :class:`OnnxModel` (in the server's process) or ``model_host.HostedModel`` (in a process of
    its own, ``--run-isolation process``)."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    metadata: dict[str, str]
    inline: InlineGate | None
    empty_unsafe: tuple[str, ...]

    def predict(
        self,
        feeds: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        *,
        run_options: ort.RunOptions | None = None,
        caller: str | None = None,
    ) -> list[tuple[str, np.ndarray]]:
        """Run the model on validated inputs (see :meth:`OnnxModel.predict`); ``caller``: the
        key id that sent them (a model in a process of its own charges its crashes to it)."""

    def unload(self) -> None:
        """Release the session; later requests get ModelNotFound."""

    @property
    def released(self) -> bool:
        """Whether :meth:`unload` released the session."""


def _tensor(name: str, value: object) -> np.ndarray:
    """One output as an array: a tensor, or a sequence of same-shaped tensors stacked (a
    sequence of maps, as onnxruntime gives ZipMap's, an array of dicts). InferenceFailed (422)
    for what no array holds: an empty optional, or tensors of different shapes."""
    if isinstance(value, np.ndarray):
        return value
    if value is None:
        raise InferenceFailed(
            f"output {shown(name)} is an empty optional: this server returns tensors only"
        )
    try:
        return np.asarray(value)
    except ValueError:  # numpy refuses a ragged sequence
        raise InferenceFailed(
            f"output {shown(name)} is a sequence of tensors of different shapes: this server "
            "returns tensors only (concatenate them in the model)"
        ) from None


def _parsed(model: bytes | str) -> ModelProto:
    """The model a session was built from, parsed again (its bytes, or the file at a path the
    server chose)."""
    import onnx

    if isinstance(model, str):
        with open(model, "rb") as file:
            model = file.read()
    return onnx.load_model_from_string(model)


def _spec(node: ort.NodeArg) -> TensorSpec:
    raw = node.shape or ()
    dims = tuple(d if isinstance(d, int) and d >= 0 else None for d in raw)
    symbols = tuple(d if isinstance(d, str) and d else None for d in raw)
    return TensorSpec(node.name, _ORT_TYPES.get(node.type), dims, node.type, symbols)


def providers_for(device: Device, gpu_index: int = 0) -> list[Any]:
    """onnxruntime's providers for ``device``: the CUDA provider first on a GPU.

    The CPU provider stays after CUDA for the operators CUDA lacks (onnxruntime assigns them
    node by node); a session whose first provider is not CUDA is refused by OnnxModel.
    """
    if device == "cuda":
        return [(_CUDA, {"device_id": gpu_index}), _CPU]
    return [_CPU]


def check_device(device: Device, gpu_index: int = 0) -> None:
    """Refuse (ConfigurationError, one line) a device onnxruntime cannot run models on."""
    if device != "cuda":
        return
    available = ort.get_available_providers()
    if _CUDA not in available:
        raise ConfigurationError(
            f"--device cuda: onnxruntime {ort.__version__} has no CUDA execution provider "
            f"(it has {', '.join(available)}); install onnxruntime-gpu in place of onnxruntime "
            "(see docs/deploy-gpu.md)"
        )
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    try:
        OnnxModel(probe.SerializeToString(), device=device, gpu_index=gpu_index)
    except ModelNotReady as exc:
        raise ConfigurationError(exc.message) from exc


_MODEL_CONFIG_VARIABLE = "ORT_LOAD_CONFIG_FROM_MODEL"


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuse (ConfigurationError, one line) an environment in which onnxruntime lets each
    model set its own session options.

    With ``ORT_LOAD_CONFIG_FROM_MODEL=1`` onnxruntime reads session options from a model's
    ``ort_config`` metadata: an uploaded model could turn profiling on (a file of its node
    names, shapes and each run's timings, written to the server's working directory) or pick
    its own thread count. :func:`inference_session` refuses such sessions anyway (every model
    would fail to load); this says why at start-up.
    """
    if environ.get(_MODEL_CONFIG_VARIABLE) == "1":
        raise ConfigurationError(
            f"{_MODEL_CONFIG_VARIABLE}=1 lets every uploaded model choose onnxruntime's session "
            "options (profiling files of its node names and timings, its own threads): unset it"
        )


def session_options(
    *, optimize: bool, intra_op_threads: int = 0, shared_arena: bool = False
) -> ort.SessionOptions:
    """The session options of every model (the compile guard compiles with the same ones;
    the benchmark's in-process reference runs with them).

    ``shared_arena``: allocate tensors from the process's capped arena
    (``blindai.server.run_guard.cap_arena``) instead of a private, uncapped one.
    """
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
    # 4: fatal only. Kernel errors quote input values (an index out of range): never logged
    options.log_severity_level = 4
    if shared_arena:
        options.add_session_config_entry("session.use_env_allocators", "1")
    return options


def inference_session(
    model: bytes | str, *, options: ort.SessionOptions, providers: Sequence[Any]
) -> ort.InferenceSession:
    """An onnxruntime session configured by the server alone (the compile guard's child makes
    its trial sessions with it too).

    ``read_config_from_model=0``: session options never come from the model's ``ort_config``
    metadata (where ``ORT_LOAD_CONFIG_FROM_MODEL=1`` is set, onnxruntime then refuses every
    session: :func:`check_environment` refuses that environment at start-up).
    ``enable_fallback=0``: onnxruntime's Python layer otherwise prints a failed session's or
    run's error to stdout (the server's log) and retries, on a GPU quietly on the CPU.

    onnxruntime's telemetry events are turned off first (in every process that builds
    sessions: the server, the compile guard's child, a model host): onnxruntime 1.32 records
    each failed load or run with its error's text (a model's node names, an index out of range
    that a request sent) in an event store under ``$HOME/.cache/Microsoft/DeveloperTools``,
    to upload later.
    """
    ort.disable_telemetry_events()
    session = ort.InferenceSession(
        model,
        sess_options=options,
        providers=list(providers),
        read_config_from_model=0,
        enable_fallback=0,
    )
    session.disable_fallback()  # the keyword is ignored by versions that predate it
    return session


class OnnxModel:
    """One compiled model, from its bytes or a path the server chose (never one a client
    named). ``predict`` is thread-safe (onnxruntime sessions are)."""

    def __init__(
        self,
        model: bytes | str,
        *,
        optimize: bool = True,
        intra_op_threads: int = 0,
        device: Device = "cpu",
        gpu_index: int = 0,
        shared_arena: bool = False,
        max_map_bytes: int = 1 << 30,
    ) -> None:
        options = session_options(
            optimize=optimize, intra_op_threads=intra_op_threads, shared_arena=shared_arena
        )
        try:
            session = inference_session(
                model, options=options, providers=providers_for(device, gpu_index)
            )
        except (RuntimeError, ValueError) as exc:
            if device != "cuda":
                raise
            # what onnxruntime's fallback turned into a CPU session, refused below, before
            raise ModelNotReady(
                f"--device cuda: onnxruntime could not create a session on GPU {gpu_index} "
                f"({type(exc).__name__})"
            ) from exc
        got = session.get_providers()
        if device == "cuda" and got[0] != _CUDA:
            raise ModelNotReady(
                f"--device cuda: onnxruntime could not use CUDA on GPU {gpu_index} "
                f"(the session got {', '.join(got)})"
            )
        self._session: ort.InferenceSession | None = session
        self.metadata: dict[str, str] = dict(session.get_modelmeta().custom_metadata_map)
        """The model's metadata properties (``labels`` feeds the classification extension)."""
        self.inputs = tuple(_spec(n) for n in session.get_inputs())
        self.outputs = tuple(_spec(n) for n in session.get_outputs())
        for spec in self.outputs:  # onnxruntime cannot hand these to Python: every run fails
            if spec.dtype is None and spec.onnx_type.startswith("tensor("):
                if spec.onnx_type != BF16_ONNX_TYPE:  # bfloat16 is read through OrtValues
                    raise InvalidInput(
                        f"output {shown(spec.name)} has type {spec.onnx_type}, which this server "
                        "cannot return; cast it in the model (to float32 or int8, say)"
                    )
        self._output_names = [o.name for o in self.outputs]
        self._zipmaps: dict[str, ZipMapOutput] = {}
        """Outputs the server makes of the probabilities a ZipMap was given (``_zipmap``):
        their maps are bounded by each run's rows, ``max_map_bytes`` (--max-string-memory)."""
        self._max_map_bytes = max_map_bytes
        if any(o.onnx_type.startswith("seq(map(") for o in self.outputs):
            from blindai.server._zipmap import without_zipmaps  # onnx: for these models only

            plain, self._zipmaps = without_zipmaps(_parsed(model))
            if self._zipmaps:  # the session without them (a small model: a classifier's)
                session = inference_session(
                    plain.SerializeToString(),
                    options=options,
                    providers=providers_for(device, gpu_index),
                )
                self._session = session
        self._bf16_out = any(o.onnx_type == BF16_ONNX_TYPE for o in self.outputs)
        self.inline: InlineGate | None = None
        """Set by the data plane for a model that may run on the event loop (``_inline``)."""
        self.empty_unsafe: tuple[str, ...] = ()
        """Set by the data plane from the upload's checks: the model's operators whose kernels
        end the process on a tensor with a zero-size dimension (its runs refuse empty inputs)."""

    def predict(
        self,
        feeds: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        *,
        run_options: ort.RunOptions | None = None,
        caller: str | None = None,
    ) -> list[tuple[str, np.ndarray]]:
        """Run the model on validated inputs (``caller``, the key that sent them, is not used
        here: a crash ends the server's process).

        Returns (output name, array) for ``outputs`` (all of them, in model order, when None).
        bfloat16 inputs and outputs go through OrtValues (onnxruntime's numpy interface has no
        bfloat16). ``run_options`` lets the caller stop the run (``terminate``) and give the
        arena back after it (``blindai.server.run_guard.RunControl``); onnxruntime's own error
        is the InferenceFailed's ``__cause__``.
        """
        session = self._session
        if session is None:
            raise ModelNotFound("the model was deleted or unloaded before this request ran")
        names = self._output_names if outputs is None else list(outputs)
        # only a model whose ZipMap the server does fetches other names than it answers
        fetched = names if not self._zipmaps else list(dict.fromkeys(map(self._fetched, names)))
        try:
            if self._bf16_out:
                values = session.run_with_ort_values(
                    fetched, {k: to_ort_value(v) for k, v in feeds.items()}, run_options
                )
                results = [from_ort_value(v) for v in values]
            else:
                results = session.run(
                    fetched,
                    {
                        k: to_ort_value(v) if v.dtype.name == "bfloat16" else v
                        for k, v in feeds.items()
                    },
                    run_options,
                )
        except BlindAIError:
            raise
        except Exception as exc:  # onnxruntime raises its own exception types
            raise InferenceFailed(
                f"the model failed on these inputs: {type(exc).__name__}"
            ) from exc
        if not self._zipmaps:
            return [(n, _tensor(n, r)) for n, r in zip(names, results, strict=True)]
        got = dict(zip(fetched, results, strict=True))
        return [(n, _tensor(n, self._made(n, got[self._fetched(n)]))) for n in names]

    def _fetched(self, name: str) -> str:
        """What the session outputs for the model's output ``name``."""
        zipmap = self._zipmaps.get(name)
        return name if zipmap is None else zipmap.source

    def _made(self, name: str, value: object) -> object:
        """The model's output ``name`` from what the session gave: the maps of a ZipMap the
        server does, else the value itself."""
        zipmap = self._zipmaps.get(name)
        if zipmap is None:
            return value
        if not isinstance(value, np.ndarray):
            raise InferenceFailed(f"output {shown(name)}: ZipMap was given no tensor")
        from blindai.server._zipmap import maps

        return maps(name, value, zipmap, self._max_map_bytes)

    def unload(self) -> None:
        """Release the session; requests that reach this model afterwards get ModelNotFound."""
        self._session = None

    @property
    def released(self) -> bool:
        """Whether :meth:`unload` released the session (no run can use it any more)."""
        return self._session is None
