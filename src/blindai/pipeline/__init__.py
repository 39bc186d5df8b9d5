"""Pipelines: send text, images and audio, not tensors.

A model may be uploaded with a pipeline: an input step (tokenize text, decode and normalise an
image, decode and resample a WAV file), the ONNX model, and an optional output step (softmax
and top-k labels, next token, pooled embedding, CTC transcript). A pipeline is data, a spec
document plus named files, never code. The server validates it at upload against the model and
runs it inside the TEE, so raw inputs never leave the attested channel and the client needs no
tokenizer, image or audio library.

This package is what the client needs (reading a pipeline, the typed results); the server's
parts are ``blindai.pipeline.spec`` (the schema) and ``blindai.pipeline.compiled``.

Example::

    import blindai
    from blindai.pipeline import Pipeline

    with blindai.connect("localhost", simulation_mode=True) as conn:
        conn.upload_model("minilm.onnx", model_name="minilm",
                          pipeline=Pipeline.from_dir("minilm-pipeline"))
        a = conn.predict("minilm", text="A man is eating food.")
        b = conn.predict("minilm", text="A man is eating a meal.")
        print(a.cosine(b))
"""

from __future__ import annotations

from blindai.pipeline.bundle import Pipeline
from blindai.pipeline.limits import PipelineLimits
from blindai.pipeline.results import (
    Classification,
    Embedding,
    Label,
    PipelineResult,
    Transcript,
    result_from_wire,
)

__all__ = [
    "Classification",
    "Embedding",
    "Label",
    "Pipeline",
    "PipelineLimits",
    "PipelineResult",
    "Transcript",
    "result_from_wire",
]
