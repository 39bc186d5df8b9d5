"""What a type checker makes of the README's calls: ``predict`` given tensors is typed as a
``PredictResponse`` (``.output[0].argmax()``, ``response["name"]`` check), and given raw text
as what it may be (a pipeline's result, which has no ``.output``)."""

from __future__ import annotations

from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

PREVIEW_README = """
import numpy as np
import blindai

with blindai.connect("localhost", simulation_mode=True) as client:
    input_batch = np.zeros((1, 3, 224, 224), np.float32)
    response = client.predict("resnet18", input_batch)
    best: np.intp = response.output[0].argmax()
    shape: tuple[int, ...] = response.output[0].shape
    by_name: np.ndarray = response["probabilities"]
"""

RAW_TEXT = """
import blindai

with blindai.connect("localhost", simulation_mode=True) as client:
    client.predict("sentiment", text="I love AI").output
"""


def test_predict_is_typed_by_what_it_is_given(tmp_path: Path) -> None:
    """One mypy run over both scripts: the README flow checks, ``.output`` on raw text does not."""
    (tmp_path / "preview_readme.py").write_text(PREVIEW_README)
    (tmp_path / "raw_text.py").write_text(RAW_TEXT)
    out, err, _ = mypy_api.run(
        ["--strict", "--cache-dir", str(tmp_path / "cache"), str(tmp_path / "preview_readme.py"),
         str(tmp_path / "raw_text.py")]
    )  # fmt: skip
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert [e for e in errors if "preview_readme.py" in e] == [], out + err
    assert any("raw_text.py" in e and 'Item "Classification"' in e for e in errors), out + err
