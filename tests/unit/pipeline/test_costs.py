"""Each step's worst case (``cost``, from the input's size or header) bounds what it really
takes: measured as the peak RSS of a fresh process (``VmHWM``) over one step's call."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from blindai.pipeline.limits import PipelineLimits

SETUP = textwrap.dedent(
    """
    import numpy as np
    from PIL import Image
    from blindai.pipeline._audio import compile_audio
    from blindai.pipeline._image import compile_image
    from blindai.pipeline._text import compile_text
    from blindai.pipeline.limits import PipelineLimits
    from blindai.pipeline.spec import AudioInput, ImageInput, TextInput
    from tests.unit.pipeline._factory import Port, encode, wav_bytes, wordpiece_json

    F32 = np.dtype("float32")

    def rss(field):
        with open("/proc/self/status") as f:
            line = next(x for x in f if x.startswith(field + ":"))
        return int(line.split()[1]) * 1024

    def measure(step, small, data):
        step(small)  # the libraries' lazy imports and first allocations
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = rss("VmRSS")
        cost = step.cost(data)
        step(data)
        print(rss("VmHWM") - before, cost)
    """
)
CASES = {
    "image": """
        step = compile_image(ImageInput(kind="image"), [Port("x", F32, (1, 3, None, None))],
                             PipelineLimits())
        arr = np.random.default_rng(0).integers(0, 255, (2000, 1, 4), dtype=np.uint8)
        img = Image.fromarray(arr.repeat(2000, 1), "RGBA")
        measure(step, encode(Image.new("RGB", (8, 8)), "PNG"), encode(img, "PNG"))
    """,
    "image-crop": """
        spec = ImageInput(kind="image", resize_shorter=256, crop=(224, 224))
        step = compile_image(spec, [Port("x", F32, (1, 3, 224, 224))], PipelineLimits())
        arr = np.random.default_rng(0).integers(0, 255, (3000, 1, 3), dtype=np.uint8)
        img = Image.fromarray(arr.repeat(3000, 1), "RGB")
        measure(step, encode(Image.new("RGB", (300, 300)), "JPEG"), encode(img, "JPEG"))
    """,
    "image-progressive-cmyk": """
        # libjpeg holds every DCT coefficient of a progressive JPEG beside Pillow's pixels
        spec = ImageInput(kind="image", resize=(224, 224))
        step = compile_image(spec, [Port("x", F32, (1, 3, 224, 224))], PipelineLimits())
        x = np.linspace(0, 255, 4000, dtype=np.float32)
        grey = ((x[:, None] + x[None, :]) % 256).astype(np.uint8)
        img = Image.fromarray(np.stack([grey] * 3, -1), "RGB").convert("CMYK")
        small = encode(Image.new("CMYK", (8, 8)), "JPEG", progressive=True)
        measure(step, small, encode(img, "JPEG", progressive=True, subsampling=0))
    """,
    "audio-24-bit": """
        spec = AudioInput(kind="audio", sample_rate=16000, max_seconds=600)
        step = compile_audio(spec, [Port("x", F32, (1, None))], PipelineLimits())
        noise = np.random.default_rng(0).uniform(-1, 1, (48000 * 60, 2)).astype(np.float32)
        small = wav_bytes(noise[:48000], 48000, 3)
        measure(step, small, wav_bytes(noise, 48000, 3))
    """,
    "audio-upsampled": """
        spec = AudioInput(kind="audio", sample_rate=16000, max_seconds=600)
        step = compile_audio(spec, [Port("x", F32, (1, None))], PipelineLimits())
        tone = np.sin(np.arange(1000 * 600, dtype=np.float32))
        measure(step, wav_bytes(tone[:1000], 1000, 1), wav_bytes(tone, 1000, 1))
    """,
    "text-byte-level": """
        # "a" to 16 emoji: 16 characters but 64 bytes, each a token of a byte-level tokenizer
        from tokenizers import Tokenizer, normalizers, pre_tokenizers
        from tokenizers.models import BPE

        alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
        tok = Tokenizer(BPE({c: i for i, c in enumerate(alphabet)}, []))
        tok.normalizer = normalizers.Replace("a", "\\U0001F600" * 16)
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        spec = TextInput(kind="text", tokenizer="t", max_length=16, truncation=True)
        inputs = [Port("input_ids", np.dtype("int64"), (1, None))]
        step = compile_text(spec, {"t": tok.to_str().encode()}, inputs, PipelineLimits())
        measure(step, "a a", b"a" * (16 << 10))
    """,
    "text": """
        spec = TextInput(kind="text", tokenizer="t", max_length=16, truncation=True)
        inputs = [Port("input_ids", np.dtype("int64"), (1, None))]
        step = compile_text(spec, {"t": wordpiece_json()}, inputs, PipelineLimits())
        measure(step, "a .", b"." * (256 << 10))  # one token a character
    """,
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_steps_cost_bounds_its_real_peak(case):
    script = SETUP + textwrap.dedent(CASES[case])
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    peak, cost = map(int, done.stdout.split())
    assert peak > 10 << 20  # the measure sees the step's memory at all
    assert peak <= cost, f"{case}: took {peak >> 20} MiB, its cost said {cost >> 20} MiB"


def test_a_text_is_refused_when_tokenizing_it_could_pass_the_memory_limit():
    """BERT's normalizer may make a text 12 times longer, each character a token of 640 bytes
    and more: 1 MiB of text could take 8 GB; 64 MiB allow 8 KiB of text."""
    import numpy as np

    from blindai.errors import PipelineError
    from blindai.pipeline._text import compile_text
    from blindai.pipeline.spec import TextInput
    from tests.unit.pipeline._factory import Port, wordpiece_json

    limits = PipelineLimits(max_preprocess_bytes=64 << 20)
    inputs = [Port("input_ids", np.dtype("int64"), (1, None))]
    spec = TextInput(kind="text", tokenizer="t", max_length=16, truncation=True)
    step = compile_text(spec, {"t": wordpiece_json()}, inputs, limits)
    assert 8000 < step.largest_text < 9000
    assert step.cost("x" * step.largest_text) <= 64 << 20
    with pytest.raises(PipelineError, match="--max-preprocess-memory"):
        step("x" * (step.largest_text + 1))
    step("x" * step.largest_text)
