"""CompiledPipeline: a pipeline checked against its model and ready to run (server side).

``compile_pipeline`` runs at upload: it parses the spec, loads the tokenizer, labels and
vocabulary, and checks every name, dtype and static shape against the model's inputs and
outputs, so that a pipeline that cannot work is a 400 at upload rather than at the first request.

Example::

    compiled = compile_pipeline(bundle, inputs=model.inputs, outputs=model.outputs,
                                limits=PipelineLimits())
    prepared = compiled.preprocess("A man is eating food.")
    result = compiled.postprocess(model.predict(prepared.feeds), prepared)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from blindai.errors import PipelineError
from blindai.pipeline._ports import Port, Prepared, pick_port, require_file
from blindai.pipeline._post import (
    CtcStep,
    EmbeddingStep,
    LabelsStep,
    NextTokenStep,
    last_dim,
    parse_labels,
    parse_vocab,
)
from blindai.pipeline.bundle import Pipeline
from blindai.pipeline.limits import PipelineLimits
from blindai.pipeline.results import PipelineResult
from blindai.pipeline.spec import (
    AudioInput,
    CtcOutput,
    EmbeddingOutput,
    ImageInput,
    LabelsOutput,
    NextTokenOutput,
    OutputStep,
    PipelineSpec,
    TextInput,
    parse_spec,
)
from blindai.server._shown import shown

if TYPE_CHECKING:
    from blindai.pipeline._text import TokenizerLoader

__all__ = ["CompiledPipeline", "InputKind", "Prepared", "compile_pipeline"]

InputKind = Literal["text", "image", "audio"]


class _Pre(Protocol):
    def __call__(self, raw: bytes | str) -> Prepared: ...

    def cost(self, raw: bytes | str) -> int: ...


class _Post(Protocol):
    def __call__(self, outputs: Mapping[str, np.ndarray], prepared: Prepared) -> PipelineResult: ...


@dataclass(frozen=True)
class CompiledPipeline:
    """A validated pipeline bound to one model's inputs and outputs."""

    spec: PipelineSpec
    pre: _Pre
    post: _Post | None

    @property
    def input_kind(self) -> InputKind:
        """What the pipeline takes: ``text``, ``image`` or ``audio``."""
        return self.spec.input.kind

    def preprocess_cost(self, raw: bytes | str) -> int:
        """The most memory (bytes) :meth:`preprocess` may take for ``raw``, from its size or
        its header alone (nothing decoded); PipelineError for what the header already refuses."""
        return self.pre.cost(raw)

    def preprocess(self, raw: bytes | str, *, stop: Callable[[], bool] | None = None) -> Prepared:
        """One raw input (text, or the bytes of an image or WAV file) to model feeds.
        ``stop()`` true (the run's timeout, its client gone) stops a tokenizer that runs in a
        process of its own; other steps are bounded by their input's size alone."""
        from blindai.pipeline._text import TextStep

        if stop is not None and isinstance(self.pre, TextStep):
            return self.pre(raw, stop=stop)
        return self.pre(raw)

    def postprocess(
        self, outputs: Mapping[str, np.ndarray], prepared: Prepared
    ) -> PipelineResult | None:
        """The model's outputs to the typed result (None without an output step)."""
        return None if self.post is None else self.post(outputs, prepared)


def _decoder(pre: _Pre) -> Callable[[list[int]], Sequence[str]]:
    """Tokens' labels: the tokenizer's decoder on each (one call for all); PipelineError when
    that decoder could make a label of more than MAX_LABEL_BYTES of the tokenizer's longest
    token."""
    from blindai.pipeline._text import TextStep
    from blindai.pipeline._tokenizer_bounds import MAX_LABEL_BYTES

    assert isinstance(pre, TextStep)  # parse_spec requires a text step for next_token
    decoded = pre.facts.decoded
    assert decoded is not None  # asked for by compile_pipeline
    if isinstance(decoded, str):
        raise PipelineError(decoded)
    longest = decoded.factor * pre.longest_token + decoded.extra
    if longest > MAX_LABEL_BYTES:
        raise PipelineError(
            f"output: the tokenizer's decoder can make a label of up to {longest} bytes of its "
            f"longest token ({pre.longest_token} bytes, {decoded.factor} times), more than "
            f"this server takes ({MAX_LABEL_BYTES})"
        )
    tok = pre.tokenizer
    size = pre.facts.vocab_size

    def decode(ids: list[int]) -> list[str]:
        labels = iter(tok.decode([i for i in ids if i < size]))
        return [next(labels) if i < size else f"<id {i}>" for i in ids]

    return decode


def _compile_post(
    out: OutputStep,
    files: Mapping[str, bytes],
    outputs: Sequence[Port],
    pre: _Pre,
    limits: PipelineLimits,
) -> _Post:
    port = pick_port(outputs, out.output, "output")
    if isinstance(out, LabelsOutput):
        labels = None
        if out.labels is not None:
            labels = parse_labels(require_file(files, out.labels, "labels"), out.labels)
            classes = last_dim(port)
            if classes is not None and classes != len(labels):
                raise PipelineError(
                    f"{out.labels} has {len(labels)} labels; output {shown(port.name)} has "
                    f"{classes} classes"
                )
        return LabelsStep(out, port.name, labels)
    if isinstance(out, NextTokenOutput):
        return NextTokenStep(out, port.name, _decoder(pre))
    if isinstance(out, EmbeddingOutput):
        return EmbeddingStep(out, port.name, limits.max_result_bytes)
    return _compile_ctc(out, files, port, limits)


def _compile_ctc(
    out: CtcOutput, files: Mapping[str, bytes], port: Port, limits: PipelineLimits
) -> CtcStep:
    tokens = parse_vocab(require_file(files, out.vocab, "vocab"), out.vocab)
    index = {t: i for i, t in enumerate(tokens)}
    if out.blank not in index:
        raise PipelineError(f"output.blank: {out.blank!r} is not in {out.vocab}")
    classes = last_dim(port)
    if classes is not None and classes != len(tokens):
        raise PipelineError(
            f"{out.vocab} has {len(tokens)} tokens; output {shown(port.name)} has {classes}"
        )
    skip = frozenset(index[t] for t in out.skip if t in index)
    return CtcStep(out, port.name, tokens, index[out.blank], skip, limits.max_result_bytes)


def _compile_pre(
    spec: PipelineSpec,
    files: Mapping[str, bytes],
    inputs: Sequence[Port],
    limits: PipelineLimits,
    tokenizers: TokenizerLoader | None,
) -> _Pre:
    # each library is imported only when a pipeline of that kind is compiled
    step = spec.input
    if isinstance(step, TextInput):
        from blindai.pipeline._text import compile_text, load_local

        decoder = isinstance(spec.output, NextTokenOutput)
        return compile_text(
            step, files, inputs, limits, loader=tokenizers or load_local, decoder=decoder
        )
    if isinstance(step, ImageInput):
        from blindai.pipeline._image import compile_image

        return compile_image(step, inputs, limits)
    assert isinstance(step, AudioInput)
    from blindai.pipeline._audio import compile_audio

    return compile_audio(step, inputs, limits)


def _named_files(spec: PipelineSpec) -> set[str]:
    names = set()
    for step in (spec.input, spec.output):
        for key in ("tokenizer", "labels", "vocab"):
            value = getattr(step, key, None)
            if isinstance(value, str):
                names.add(value)
    return names


def compile_pipeline(
    bundle: Pipeline,
    *,
    inputs: Sequence[Port],
    outputs: Sequence[Port],
    limits: PipelineLimits,
    tokenizers: TokenizerLoader | None = None,
) -> CompiledPipeline:
    """Parse and check a pipeline against a model; PipelineError says what is wrong.
    ``tokenizers``: where a text step's tokenizer is compiled and run (None: in this
    process; the server's runs each in a limited process of its own)."""
    spec = parse_spec(bundle.spec, limits=limits)
    unused = sorted(set(bundle.files) - _named_files(spec))
    if unused:
        raise PipelineError(f"pipeline file(s) {unused} are not named by the spec")
    if not inputs or not outputs:
        raise PipelineError("the model has no inputs or no outputs")
    pre = _compile_pre(spec, bundle.files, inputs, limits, tokenizers)
    post = (
        None
        if spec.output is None
        else _compile_post(spec.output, bundle.files, outputs, pre, limits)
    )
    return CompiledPipeline(spec, pre, post)
