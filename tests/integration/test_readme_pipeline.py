"""The README's "Tutorial: text in, label out" run as written, read from README.md itself.

Its ``pipeline.toml``, its Python and its two CLI commands are taken from the README's code
blocks (only the server address and ports are filled in for the session's simulation server).
A tiny DistilBERT-shaped ONNX model (``input_ids`` -> two logits) and a real WordPiece
``tokenizer.json`` stand in for the files the tutorial copies from ``make examples``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests._server import REPO, ServerProcess
from tests.integration._cli import ok, target
from tests.unit.pipeline._factory import VOCAB, wordpiece_json

SECTION = "## Tutorial: text in, label out (pipelines)"


def _section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(SECTION)
    return text[start : text.index("\n## ", start + len(SECTION))]


def _block(language: str, containing: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", _section(), flags=re.S)
    (found,) = [b for b in blocks if containing in b]
    return found


def _classifier() -> bytes:
    """logits [1, 2] = mean over tokens of table[input_ids]: 'cat' votes positive."""
    table = np.zeros((len(VOCAB), 2), np.float32)
    table[:, 0] = 1.0
    table[VOCAB["cat"]] = [0.0, 9.0]
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "input_ids"], ["vectors"]),
            helper.make_node("ReduceMean", ["vectors"], ["logits"], axes=[1], keepdims=0),
        ],
        "tiny-distilbert",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, None])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])],
        initializer=[numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def _tutorial_folder(tmp_path: Path) -> Path:
    toml = _block("toml", 'kind = "labels"')
    folder = tmp_path / "sentiment-pipeline"
    folder.mkdir()
    folder.joinpath("pipeline.toml").write_text(toml)
    folder.joinpath("tokenizer.json").write_bytes(wordpiece_json())
    folder.joinpath("labels.txt").write_text("negative\npositive\n")
    tmp_path.joinpath("distilbert.onnx").write_bytes(_classifier())
    return tmp_path


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_python_as_written(server: ServerProcess, tmp_path: Path) -> None:
    cwd = _tutorial_folder(tmp_path)
    code = _block("python", "Pipeline.from_dir")
    connect = 'blindai.connect("localhost", simulation_mode=True)'
    assert connect in code
    ports = ", ".join(f"{k}={v}" for k, v in server.ports.items())
    code = code.replace(connect, f'blindai.connect("{server.host}", simulation_mode=True, {ports})')
    out = ok(_run([sys.executable, "-W", "ignore", "-c", code], cwd))
    label, score = out.split()
    assert label == "negative" and 0.5 < float(score) < 1.0  # no 'cat' in the sentence


def test_the_cli_as_written(server: ServerProcess, tmp_path: Path) -> None:
    cwd = _tutorial_folder(tmp_path)
    lines = _block("sh", "blindai upload distilbert.onnx").splitlines()
    upload, run = (
        shlex.split(line)[1:] + target(server) for line in lines if line.startswith("blindai ")
    )
    assert ok(_run([sys.executable, "-m", "blindai", *upload], cwd)).startswith("model_id ")
    out = ok(_run([sys.executable, "-m", "blindai", *run], cwd)).splitlines()
    assert [line.split()[1] for line in out] == ["negative", "positive"]
    scores = [float(line.split()[0]) for line in out]
    assert abs(sum(scores) - 1.0) < 1e-3 and scores[0] > scores[1]
