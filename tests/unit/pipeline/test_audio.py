"""Audio step: real WAV files made with `wave`; widths, channels, resampling, malformed files."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from blindai.errors import PipelineError
from blindai.pipeline._audio import compile_audio, decode_wav
from blindai.pipeline.limits import PipelineLimits
from blindai.pipeline.spec import AudioInput
from tests.unit.pipeline._factory import Port, tone, wav_bytes

F32 = np.dtype("float32")
PORT = Port("input_values", F32, (1, None))


def _step(**kw):
    spec = AudioInput(kind="audio", **{"sample_rate": 16000, "max_seconds": 2.0, **kw})
    return compile_audio(spec, [PORT], PipelineLimits())


@pytest.mark.parametrize(("width", "tol"), [(1, 1 / 100), (2, 1e-4), (3, 1e-6), (4, 1e-8)])
def test_pcm_widths_decode_to_the_same_signal(width, tol):
    x = tone(0.1, 16000)
    samples, rate = decode_wav(wav_bytes(x, 16000, width), max_seconds=1)
    assert rate == 16000 and samples.shape == (1600, 1)
    np.testing.assert_allclose(samples[:, 0], x, atol=tol)


def test_stereo_is_mixed_to_mono():
    left, right = tone(0.1, 16000, amp=0.4), np.zeros(1600, np.float32)
    out = _step()(wav_bytes(np.stack([left, right], 1), 16000)).feeds["input_values"]
    np.testing.assert_allclose(out[0], left / 2, atol=1e-4)


def test_resampled_to_the_model_rate():
    out = _step()(wav_bytes(tone(0.5, 44100, freq=440), 44100)).feeds["input_values"]
    assert out.shape == (1, 8000) and out.dtype == np.float32
    # the tone survives: its spectrum peaks at 440 Hz
    spectrum = np.abs(np.fft.rfft(out[0]))
    assert abs(np.argmax(spectrum) * 16000 / 8000 - 440) <= 2


def test_normalisations():
    x = tone(0.1, 16000, amp=0.25) + 0.1
    peak = _step(normalize="peak")(wav_bytes(x, 16000)).feeds["input_values"]
    assert np.max(np.abs(peak)) == pytest.approx(1.0)
    z = _step(normalize="zero_mean_unit_var")(wav_bytes(x, 16000)).feeds["input_values"]
    assert abs(float(z.mean())) < 1e-4 and float(z.std()) == pytest.approx(1.0, abs=1e-3)


def test_too_long_is_refused_from_the_header():
    with pytest.raises(PipelineError, match=r"audio is 3\.0 s; this model takes at most 2 s"):
        _step()(wav_bytes(tone(3.0, 8000), 8000))


def test_truncated_wav_is_refused():
    data = wav_bytes(tone(0.1, 16000), 16000)
    with pytest.raises(PipelineError, match="truncated"):
        _step()(data[:-100])


def _patch_bits(data: bytes, bits: int) -> bytes:
    """Rewrite the fmt chunk's bits per sample (offset 34 in a canonical header)."""
    return data[:34] + struct.pack("<H", bits) + data[36:]


def test_wrong_sample_width_is_refused():
    data = _patch_bits(wav_bytes(tone(0.1, 16000), 16000), 40)
    with pytest.raises(PipelineError, match="samples of 5 bytes: 8, 16, 24 or 32-bit PCM only"):
        _step()(data)


def test_float_and_other_formats_are_refused():
    data = bytearray(wav_bytes(tone(0.1, 16000), 16000))
    data[20:22] = struct.pack("<H", 3)  # WAVE_FORMAT_IEEE_FLOAT
    with pytest.raises(PipelineError, match="not a readable PCM WAV file"):
        _step()(bytes(data))
    for junk in (b"", b"RIFF", b"not a wav file at all" * 4):
        with pytest.raises(PipelineError, match="not a readable PCM WAV file"):
            _step()(junk)


def test_empty_and_odd_wavs():
    with pytest.raises(PipelineError, match="audio is empty"):
        _step()(wav_bytes(np.zeros(0, np.float32), 16000))
    with pytest.raises(PipelineError, match="must be sent as bytes"):
        _step()("text")


@pytest.mark.parametrize("normalize", ["none", "peak", "zero_mean_unit_var"])
def test_a_signal_too_short_for_one_sample_at_the_models_rate_is_refused(normalize):
    # 11 samples at 384 kHz are none at 16 kHz: the peak raised a bare ValueError (a 500)
    step = _step(normalize=normalize)
    with pytest.raises(PipelineError, match="11 samples at 384000 Hz make no sample at 16000"):
        step(wav_bytes(np.full(11, 0.5, np.float32), 384_000))
    assert step(wav_bytes(np.full(24, 0.5, np.float32), 384_000)).feeds[PORT.name].size


@pytest.mark.parametrize(
    "port",
    [
        Port("input_values", np.dtype("int64"), (1, None)),
        Port("input_values", F32, (1, 3, None)),
    ],
)
def test_refuses_models_it_cannot_feed(port):
    spec = AudioInput(kind="audio", sample_rate=16000, max_seconds=1)
    with pytest.raises(PipelineError, match="audio needs a float input of shape"):
        compile_audio(spec, [port], PipelineLimits())


def test_chunk_claiming_more_than_its_parent_is_refused():
    # wave's chunk reader raised a bare RuntimeError (a 500 on the server) when a chunk's
    # declared size ran past the RIFF chunk holding it.
    good = wav_bytes(tone(0.01, 16000), 16000)
    junk = b"JUNK" + struct.pack("<I", 1 << 20) + b"\0" * 8
    body = good[12:]
    bad = b"RIFF" + struct.pack("<I", 4 + len(junk) + len(body)) + b"WAVE" + junk + body
    with pytest.raises(PipelineError, match="not a readable PCM WAV"):
        decode_wav(bad, max_seconds=10)
