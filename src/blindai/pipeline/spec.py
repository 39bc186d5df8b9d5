"""PipelineSpec: the strict schema of a pipeline document (server side; needs pydantic).

Unknown keys are refused, types are checked (no string-to-number coercion), sizes are bounded by
:class:`~blindai.pipeline.limits.PipelineLimits`; every problem is reported at once in one
:class:`~blindai.errors.PipelineError`. A spec is data: it names files and numbers, never code.

Example (TOML)::

    version = 1

    [input]
    kind = "text"
    tokenizer = "tokenizer.json"
    max_length = 128

    [output]
    kind = "embedding"
    output = "last_hidden_state"
    pooling = "mean"
    normalize = true
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from blindai.errors import PipelineError
from blindai.pipeline.limits import PipelineLimits

__all__ = [
    "AudioInput",
    "CtcOutput",
    "EmbeddingOutput",
    "FileName",
    "Floats",
    "ImageInput",
    "InputStep",
    "IntDtype",
    "LabelsOutput",
    "NextTokenOutput",
    "OutputStep",
    "Pair",
    "PipelineSpec",
    "Side",
    "TensorName",
    "TextInput",
    "TokenNames",
    "parse_spec",
]

FileName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
TensorName = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Side = Annotated[int, Field(gt=0)]
Pair = Annotated[tuple[Side, Side], Field(strict=False)]
Floats = Annotated[tuple[float, ...], Field(strict=False, min_length=1, max_length=4)]
IntDtype = Literal["int64", "int32"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class TokenNames(_Strict):
    """Which model input receives each tokenizer output (unset: the input of the same name,
    when the model has one)."""

    input_ids: TensorName | None = None
    attention_mask: TensorName | None = None
    token_type_ids: TensorName | None = None


class TextInput(_Strict):
    """Text through a Hugging Face ``tokenizer.json`` (the ``tokenizers`` library)."""

    kind: Literal["text"]
    tokenizer: FileName
    max_length: Side
    padding: Literal["max_length", "none"] = "max_length"
    truncation: bool = True
    add_special_tokens: bool = True
    names: TokenNames = TokenNames()


class ImageInput(_Strict):
    """A PNG or JPEG image: decode, resize, centre-crop, scale, normalise, lay out, batch."""

    kind: Literal["image"]
    input: TensorName | None = None
    formats: Annotated[
        tuple[Literal["png", "jpeg"], ...], Field(strict=False, min_length=1, max_length=2)
    ] = ("png", "jpeg")
    resize: Pair | None = None
    resize_shorter: Side | None = None
    crop: Pair | None = None
    resample: Literal["nearest", "bilinear", "bicubic", "lanczos"] = "bilinear"
    channels: Literal["RGB", "BGR", "L"] = "RGB"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    scale: float = 1.0 / 255.0
    mean: Floats = (0.0,)
    std: Floats = (1.0,)
    dtype: Literal["float32", "float16", "float64", "uint8"] | None = None


class AudioInput(_Strict):
    """A PCM WAV file: decode, mix to mono, resample, normalise, batch."""

    kind: Literal["audio"]
    input: TensorName | None = None
    sample_rate: Annotated[int, Field(ge=1000, le=384_000)]
    max_seconds: Annotated[float, Field(gt=0)]
    normalize: Literal["none", "peak", "zero_mean_unit_var"] = "none"


class LabelsOutput(_Strict):
    """Classification: activation, then the top-k labels (from ``labels``, one per line)."""

    kind: Literal["labels"]
    output: TensorName | None = None
    labels: FileName | None = None
    activation: Literal["softmax", "sigmoid", "none"] = "softmax"
    top_k: Side = 5


class NextTokenOutput(_Strict):
    """Language-model logits ``[1, seq, vocab]``: top-k next tokens after the last real token,
    labelled by the text step's tokenizer."""

    kind: Literal["next_token"]
    output: TensorName | None = None
    top_k: Side = 5


class EmbeddingOutput(_Strict):
    """A vector: pooled over tokens (mean with the attention mask, or the first token)."""

    kind: Literal["embedding"]
    output: TensorName | None = None
    pooling: Literal["mean", "first", "none"] = "mean"
    normalize: bool = True


class CtcOutput(_Strict):
    """CTC greedy decoding of ``[1, frames, vocab]`` logits with ``vocab`` (token -> id JSON)."""

    kind: Literal["ctc"]
    output: TensorName | None = None
    vocab: FileName
    blank: TensorName = "<pad>"
    word_delimiter: str = "|"
    skip: Annotated[tuple[TensorName, ...], Field(strict=False, max_length=64)] = (
        "<s>",
        "</s>",
    )


InputStep = Annotated[TextInput | ImageInput | AudioInput, Field(discriminator="kind")]
OutputStep = Annotated[
    LabelsOutput | NextTokenOutput | EmbeddingOutput | CtcOutput, Field(discriminator="kind")
]


class PipelineSpec(_Strict):
    """A whole pipeline: format version, the input step, and an optional output step (without
    one, the model's outputs are returned as tensors)."""

    version: Literal[1] = 1
    input: InputStep
    output: OutputStep | None = None


def _where(loc: tuple[int | str, ...]) -> str:
    # drop the discriminator tags pydantic inserts ("input.text.max_length")
    kinds = {"text", "image", "audio", "labels", "next_token", "embedding", "ctc"}
    parts = [str(p) for i, p in enumerate(loc) if not (i == 1 and p in kinds)]
    return ".".join(parts) or "spec"


def _bounds(spec: PipelineSpec, limits: PipelineLimits) -> list[str]:
    problems: list[str] = []
    step = spec.input
    if isinstance(step, TextInput) and step.max_length > limits.max_sequence_length:
        problems.append(f"input.max_length: at most {limits.max_sequence_length}")
    if isinstance(step, ImageInput):
        for key in ("resize", "crop"):
            pair = getattr(step, key)
            if pair is not None and max(pair) > limits.max_image_side:
                problems.append(f"input.{key}: sides of at most {limits.max_image_side}")
        if (step.resize_shorter or 0) > limits.max_image_side:
            problems.append(f"input.resize_shorter: at most {limits.max_image_side}")
        if step.resize is not None and step.resize_shorter is not None:
            problems.append("input: give resize or resize_shorter, not both")
        width = 1 if step.channels == "L" else 3
        for key in ("mean", "std"):
            if len(getattr(step, key)) not in (1, width):
                wanted = "1 value" if width == 1 else f"1 or {width} values"
                problems.append(f"input.{key}: {wanted} for {step.channels}")
        if any(s == 0 for s in step.std):
            problems.append("input.std: must not be zero")
    if isinstance(step, AudioInput) and step.max_seconds > limits.max_audio_seconds:
        problems.append(f"input.max_seconds: at most {limits.max_audio_seconds:g}")
    out = spec.output
    if isinstance(out, LabelsOutput | NextTokenOutput) and out.top_k > limits.max_top_k:
        problems.append(f"output.top_k: at most {limits.max_top_k}")
    if isinstance(out, NextTokenOutput) and not isinstance(step, TextInput):
        problems.append("output: next_token needs a text input step")
    if (
        isinstance(out, EmbeddingOutput)
        and out.pooling == "mean"
        and not isinstance(step, TextInput)
    ):
        problems.append("output.pooling: mean pooling needs a text input step (its mask)")
    return problems


def parse_spec(doc: Mapping[str, Any], *, limits: PipelineLimits) -> PipelineSpec:
    """Validate a spec mapping; every problem at once in one PipelineError."""
    try:
        spec = PipelineSpec.model_validate(dict(doc))
    except ValidationError as exc:
        problems = [f"{_where(e['loc'])}: {e['msg']}" for e in exc.errors()[:10]]
        raise PipelineError("invalid pipeline spec: " + "; ".join(problems)) from None
    problems = _bounds(spec, limits)
    if problems:
        raise PipelineError("invalid pipeline spec: " + "; ".join(problems))
    return spec
