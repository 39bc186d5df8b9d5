"""PipelineLimits: the bounds every pipeline spec, file and raw input is held to.

The server builds one from its settings and passes it down; nothing here reads the environment.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PipelineLimits"]


@dataclass(frozen=True, kw_only=True)
class PipelineLimits:
    """Upper bounds on pipelines (checked at upload) and on raw inputs (checked per request)."""

    max_files_bytes: int = 32 << 20
    """Total size of a pipeline's files (tokenizer, labels, vocabulary), spec included."""
    max_files: int = 16
    """Most files in one pipeline."""
    max_sequence_length: int = 4096
    """Largest ``max_length`` a text step may pad or truncate to."""
    max_image_side: int = 4096
    """Largest height or width an image step may resize or crop to."""
    max_image_pixels: int = 25_000_000
    """Largest decoded image (width x height) a request may send; larger ones are refused
    from their header, before any pixel is decoded (decompression bombs)."""
    max_audio_seconds: float = 600.0
    """Largest ``max_seconds`` an audio step may accept."""
    max_text_bytes: int = 1 << 20
    """Largest raw text (UTF-8 bytes) a request may send to a text step."""
    max_top_k: int = 1000
    """Largest ``top_k`` a label step may ask for."""
    max_result_bytes: int = 64 << 20
    """Largest result an output step may make (the server's ``--max-response-bytes``): an
    embedding's values, a transcript's text, counted before they are made."""
    max_preprocess_bytes: int = 4 << 30
    """Most memory the preprocessing of one raw input may take (the server's
    ``--max-preprocess-memory``, which all of them share); a text step takes less text when its
    tokenizer could make more of it."""
    max_compile_bytes: int = 2 << 30
    """Most memory compiling one upload may take (the server's ``--compile-memory``): a
    ``tokenizer.json`` is refused whose size times ``TOKENIZER_MEMORY_FACTOR``
    (``blindai.pipeline._text``) could pass it, before anything reads it (the server then
    compiles it in a process of its own capped at this: ``blindai.server.tokenizer_host``)."""

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not value > 0:
                raise ValueError(f"PipelineLimits.{name} must be positive, got {value!r}")
