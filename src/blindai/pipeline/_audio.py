"""Audio step: PCM WAV decode (stdlib ``wave``), mix to mono, resample (soxr), normalise."""

from __future__ import annotations

import io
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr

from blindai.errors import PipelineError
from blindai.pipeline._ports import Port, Prepared, dims_fit, pick_port
from blindai.pipeline.limits import PipelineLimits
from blindai.pipeline.spec import AudioInput
from blindai.server._shown import shown, shown_names

__all__ = ["AudioStep", "compile_audio", "decode_wav", "normalize_audio", "wav_cost"]

_FLOATS = tuple(np.dtype(t) for t in ("float32", "float16", "float64"))
MAX_CHANNELS = 16


def _samples(frames: bytes, width: int) -> np.ndarray:
    if width == 1:  # 8-bit WAV is unsigned
        return (np.frombuffer(frames, np.uint8).astype(np.float32) - 128.0) / 128.0
    if width == 2:
        return np.frombuffer(frames, "<i2").astype(np.float32) / 32768.0
    if width == 3:
        b = np.frombuffer(frames, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        return v.astype(np.float32) / float(1 << 23)
    return np.frombuffer(frames, "<i4").astype(np.float32) / float(1 << 31)


BYTES_PER_INPUT_SAMPLE = {1: 12, 2: 12, 3: 40, 4: 16}
"""Memory per sample of the file, by sample width: its bytes read out, float32 samples, the
24-bit unpacking's int32 temporaries, the mono mix."""
BYTES_PER_OUTPUT_SAMPLE = 24
"""Memory per sample of the resampled mono signal: float32 from soxr, the normalisation's
temporaries, the feed (up to float64)."""


def _wav_header(wav: wave.Wave_read, max_seconds: float) -> tuple[int, int, int, int]:
    """Sample width, channels, rate and frame count of an open WAV, checked."""
    width, channels = wav.getsampwidth(), wav.getnchannels()
    rate, count = wav.getframerate(), wav.getnframes()
    if width not in (1, 2, 3, 4):
        raise PipelineError(f"WAV samples of {width} bytes: 8, 16, 24 or 32-bit PCM only")
    if not 1 <= channels <= MAX_CHANNELS or not 1000 <= rate <= 384_000:
        raise PipelineError(f"WAV has {channels} channels at {rate} Hz: not supported")
    if count / rate > max_seconds:
        raise PipelineError(
            f"audio is {count / rate:.1f} s; this model takes at most {max_seconds:g} s"
        )
    return width, channels, rate, count


def _unreadable(exc: Exception) -> PipelineError:
    return PipelineError(f"audio is not a readable PCM WAV file ({exc})")


def wav_cost(data: bytes, *, max_seconds: float, sample_rate: int) -> int:
    """The most memory (bytes) decoding and resampling a WAV to ``sample_rate`` may take, from
    its header (and its size: a header may claim more frames than the file holds)."""
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            width, channels, rate, count = _wav_header(wav, max_seconds)
    except PipelineError:
        raise
    except (wave.Error, EOFError, ValueError, OSError, RuntimeError) as exc:
        raise _unreadable(exc) from None
    frames = min(count, len(data) // (width * channels))
    out = frames * sample_rate // rate + 1
    return BYTES_PER_INPUT_SAMPLE[width] * frames * channels + BYTES_PER_OUTPUT_SAMPLE * out


def decode_wav(data: bytes, *, max_seconds: float) -> tuple[np.ndarray, int]:
    """Samples ``[frames, channels]`` in [-1, 1] and the rate of a PCM WAV file."""
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            width, channels, rate, count = _wav_header(wav, max_seconds)
            frames = wav.readframes(count)
    except PipelineError:
        raise
    except (wave.Error, EOFError, ValueError, OSError, RuntimeError) as exc:
        # RuntimeError: wave's chunk reader, for a chunk that claims to run past its parent
        raise _unreadable(exc) from None
    if len(frames) != count * width * channels:
        raise PipelineError("WAV data is truncated (shorter than its header says)")
    if count == 0:
        raise PipelineError("audio is empty")
    return _samples(frames, width).reshape(count, channels), rate


def normalize_audio(x: np.ndarray, how: str) -> np.ndarray:
    """``peak``: scale to a peak of 1; ``zero_mean_unit_var``: as Wav2Vec2's feature extractor."""
    if how == "peak":
        peak = float(np.max(np.abs(x)))
        return x / peak if peak > 0 else x
    if how == "zero_mean_unit_var":
        return np.asarray((x - x.mean()) / np.sqrt(x.var() + 1e-7), dtype=x.dtype)
    return x


@dataclass(frozen=True)
class AudioStep:
    """Decode and preprocess one WAV file into the model's audio input ``[1, samples]``."""

    spec: AudioInput
    input_name: str
    dtype: np.dtype[Any]
    kind: str = "audio"

    def cost(self, raw: bytes | str) -> int:
        """The most memory (bytes) preprocessing ``raw`` may take, from its header."""
        if not isinstance(raw, bytes):
            raise PipelineError("audio must be sent as bytes")
        return wav_cost(raw, max_seconds=self.spec.max_seconds, sample_rate=self.spec.sample_rate)

    def __call__(self, raw: bytes | str) -> Prepared:
        """Bytes of a WAV file in, the model's feed out."""
        if not isinstance(raw, bytes):
            raise PipelineError("audio must be sent as bytes")
        samples, rate = decode_wav(raw, max_seconds=self.spec.max_seconds)
        mono = samples.mean(axis=1, dtype=np.float32)
        if rate != self.spec.sample_rate:
            mono = soxr.resample(mono, rate, self.spec.sample_rate)
        if mono.size == 0:  # a few samples at a much higher rate: nothing to normalise or run
            raise PipelineError(
                f"audio is too short: {len(samples)} samples at {rate} Hz make no sample at "
                f"{self.spec.sample_rate} Hz"
            )
        out = normalize_audio(np.asarray(mono, dtype=np.float32), self.spec.normalize)
        return Prepared({self.input_name: np.ascontiguousarray(out[None], dtype=self.dtype)})


def compile_audio(spec: AudioInput, inputs: Sequence[Port], limits: PipelineLimits) -> AudioStep:
    """Check the step against the model's audio input (``[1, samples]``, float)."""
    del limits  # the spec's own max_seconds is bounded when it is parsed
    port = pick_port(inputs, spec.input, "input")
    if len(inputs) != 1:
        others = [p.name for p in inputs if p.name != port.name]
        raise PipelineError(
            f"the audio step feeds no value to model input(s) {shown_names(others)}"
        )
    if port.dtype not in _FLOATS or not dims_fit((1, None), port.shape):
        raise PipelineError(
            f"model input {shown(port.name)} is {port.dtype} {list(port.shape)}; audio needs a "
            "float input of shape [1, samples]"
        )
    assert port.dtype is not None
    return AudioStep(spec, port.name, port.dtype)
