"""Audio in: Wav2vec2 CTC speech to text (RANDOM weights) and silero-vad (REAL weights).

The WAV comes from espeak-ng when it is installed (else a generated tone). The server decodes
the WAV, mixes to mono, resamples to 16 kHz, normalises, runs the model and decodes (CTC) or
labels (VAD). The transcript is gibberish: Wav2vec2's weights are random. The voice-activity
model is real: speech scores high, silence low.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np
from _common import Pipeline, connected, ensure

TEXT = "Confidential computing keeps data encrypted while it is being used."


def speech_wav() -> tuple[bytes, str]:
    """Speech from espeak-ng (22.05 kHz), or a 440 Hz tone when it is absent."""
    if shutil.which("espeak-ng"):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "speech.wav"
            subprocess.run(["espeak-ng", "-w", str(out), TEXT], check=True)
            return out.read_bytes(), f"espeak-ng: {TEXT!r}"
    t = np.arange(16000 * 2) / 16000
    return wav(0.5 * np.sin(2 * np.pi * 440 * t), 16000), "a 440 Hz tone (no espeak-ng)"


def wav(x: np.ndarray, rate: int) -> bytes:
    """16-bit mono PCM."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def main() -> None:
    """Upload both models with their pipelines; send the same WAV files to each."""
    w2v, vad = ensure("wav2vec2"), ensure("silero_vad")
    speech, source = speech_wav()
    silence = wav(np.zeros(16000 * 2), 16000)
    print(f"speech: {source}")
    with connected() as conn:
        conn.upload_model(
            w2v / "model.onnx", model_name="wav2vec2", pipeline=Pipeline.from_dir(w2v / "pipeline")
        )
        conn.upload_model(
            vad / "model.onnx", model_name="vad", pipeline=Pipeline.from_dir(vad / "pipeline")
        )
        text = conn.predict("wav2vec2", audio=speech).text
        print(f"wav2vec2 (RANDOM weights, gibberish expected): {text[:60]!r}")
        for label, data in (("speech", speech), ("silence", silence)):
            scores = {x.label: x.score for x in conn.predict("vad", audio=data).labels}
            print(f"silero-vad on {label:<7}: speech probability {scores['speech']:.3f}")


if __name__ == "__main__":
    main()
