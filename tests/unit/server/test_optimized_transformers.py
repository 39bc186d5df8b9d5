"""Transformers optimized by onnxruntime's transformer tools (``optimize_model``) are admitted
with the empty-tensor proofs on, and run as the models they were made from.

Their ``SkipLayerNormalization`` kernels (which divide by zero on an empty skip batch) take
their inputs from other contrib operators (``EmbedLayerNormalization``, ``Attention``,
``BiasGelu``, ``FastGelu``, ``SkipLayerNormalization``) of which onnx infers no shape: they were
refused, unless the server ran with ``--no-empty-kernel-proofs``. ``contrib_shapes`` carries
the request inputs' dimensions through them (and through the ``Slice``, ``Range`` and
``Where`` that PyTorch exports for position ids and masks).

A tiny BERT-like model exported by torch 2.13.0 here (torch tier); the example DistilBERT,
MiniLM and GPT-2 in the slow tier (``make examples``: transformers and the MiniLM wheel)."""

from __future__ import annotations

import importlib.util
import io
import warnings
from importlib.metadata import PackageNotFoundError
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from blindai.server.admission import AdmissionLimits, check_model, parse_model
from tests._server import REPO

LIMITS = AdmissionLimits(max_nodes=100_000, max_subgraph_depth=4, max_tensor_bytes=1 << 30)
_HIDDEN, _HEADS = 16, 2


def _tiny(*, causal: bool) -> bytes:
    """Two BERT layers (hidden 16, 2 heads), position ids sliced to the sequence's length;
    ``causal``: the mask also built from ``arange`` and expanded with -1 (as GPT-2's)."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Block(nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Linear(_HIDDEN, _HIDDEN) for _ in range(4))
            self.ln1, self.ln2 = nn.LayerNorm(_HIDDEN), nn.LayerNorm(_HIDDEN)
            self.ff1, self.ff2 = nn.Linear(_HIDDEN, 4 * _HIDDEN), nn.Linear(4 * _HIDDEN, _HIDDEN)

        def forward(self, x, bias):  # type: ignore[no-untyped-def]
            b, s, h = x.shape

            def split(t):  # type: ignore[no-untyped-def]
                return t.view(b, s, _HEADS, h // _HEADS).transpose(1, 2)

            q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
            scores = q @ k.transpose(-1, -2) / (h // _HEADS) ** 0.5 + bias
            context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, s, h)
            x = self.ln1(x + self.o(context))
            return self.ln2(x + self.ff2(nn.functional.gelu(self.ff1(x))))

    class Tiny(nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.word, self.pos = nn.Embedding(50, _HIDDEN), nn.Embedding(32, _HIDDEN)
            self.register_buffer("position_ids", torch.arange(32).unsqueeze(0))
            self.ln = nn.LayerNorm(_HIDDEN)
            self.blocks = nn.ModuleList(Block() for _ in range(2))

        def forward(self, ids, mask):  # type: ignore[no-untyped-def]
            b, s = ids.shape
            x = self.ln(self.word(ids) + self.pos(self.position_ids[:, :s]))
            if causal:
                steps = torch.arange(s)
                keep = mask[:, None, None, :].bool()
                keep = keep & (steps[None, :] <= steps[:, None])[None, None].expand(b, 1, -1, -1)
                bias = (~keep).float() * -10000.0
            else:
                bias = (1.0 - mask[:, None, None, :].float()) * -10000.0
            for block in self.blocks:
                x = block(x, bias)
            return x

    torch.manual_seed(0)
    ids = torch.ones((2, 5), dtype=torch.int64)
    dims = {0: "batch", 1: "tokens"}
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Tiny().eval(),
            (ids, ids),
            buffer,
            input_names=["input_ids", "attention_mask"],
            output_names=["hidden"],
            dynamic_axes={"input_ids": dims, "attention_mask": dims, "hidden": dims},
            dynamo=False,
            opset_version=17,
        )
    return buffer.getvalue()


def _optimized(model: bytes, tmp_path: Path, *, model_type: str, heads: int, hidden: int) -> bytes:
    from onnxruntime.transformers.optimizer import optimize_model

    path = tmp_path / "model.onnx"
    path.write_bytes(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimized = optimize_model(
            str(path), model_type=model_type, num_heads=heads, hidden_size=hidden
        )
    return optimized.model.SerializeToString()


def _contrib_ops(model: bytes) -> set[str]:
    return {n.op_type for n in parse_model(model).graph.node if n.domain == "com.microsoft"}


def _same_outputs(original: bytes, optimized: bytes, feeds: dict[str, np.ndarray]) -> None:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    runs = [
        ort.InferenceSession(m, options, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        for m in (original, optimized)
    ]
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-3, atol=1e-3)


@pytest.mark.torch
@pytest.mark.parametrize("causal", [False, True], ids=["bert", "causal-mask"])
def test_an_optimized_small_transformer_is_admitted_with_proofs_and_runs(causal, tmp_path):
    """Exported by torch, optimized by onnxruntime's optimizer (EmbedLayerNormalization,
    Attention, SkipLayerNormalization, BiasGelu): admitted with the proofs on (it was refused:
    SkipLayerNormalization's skip of an unknown shape), and it runs as the exported model on
    a batch and a sequence of 1, and others."""
    exported = _tiny(causal=causal)
    optimized = _optimized(exported, tmp_path, model_type="bert", heads=_HEADS, hidden=_HIDDEN)
    contrib = _contrib_ops(optimized)
    assert {"EmbedLayerNormalization", "SkipLayerNormalization", "BiasGelu"} <= contrib
    assert causal or "Attention" in contrib
    assert check_model(parse_model(optimized), limits=LIMITS).empty_unsafe == (
        "SkipLayerNormalization",
    )
    rng = np.random.default_rng(0)
    for batch, tokens in ((1, 1), (1, 7), (3, 4)):
        ids = rng.integers(0, 50, (batch, tokens), dtype=np.int64)
        mask = np.ones((batch, tokens), np.int64)
        mask[0, -1] = 0 if tokens > 1 else 1
        _same_outputs(exported, optimized, {"input_ids": ids, "attention_mask": mask})


_EXAMPLES = {
    "minilm": ("bert", 12, 384),
    "distilbert": ("bert", 12, 768),
    "gpt2": ("gpt2", 12, 768),
}


def _example(name: str) -> bytes:
    for module in ("torch", "transformers"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: run make examples")
    spec = importlib.util.spec_from_file_location("_export", REPO / "examples" / "_export.py")
    assert spec is not None and spec.loader is not None
    export = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export)
    try:
        folder = export.ensure(name)
    except (FileNotFoundError, PackageNotFoundError) as exc:  # the MiniLM wheel is not installed
        pytest.skip(f"{exc}: run make examples")
    return (folder / "model.onnx").read_bytes()


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.parametrize("name", list(_EXAMPLES))
def test_the_optimized_example_transformers_are_admitted_with_proofs_and_run(name, tmp_path):
    """The example DistilBERT, MiniLM (real weights) and GPT-2, optimized by
    ``optimize_model``: admitted with the proofs on (measured before: all three refused at
    their first SkipLayerNormalization), and they run as the models exported."""
    exported = _example(name)
    model_type, heads, hidden = _EXAMPLES[name]
    optimized = _optimized(exported, tmp_path, model_type=model_type, heads=heads, hidden=hidden)
    assert "SkipLayerNormalization" in _contrib_ops(optimized)
    assert check_model(parse_model(optimized), limits=LIMITS).empty_unsafe == (
        "SkipLayerNormalization",
    )
    names = [i.name for i in onnx.load_from_string(exported).graph.input]
    ids = np.array([[101, 2023, 2003, 1037, 3231, 6251, 1012, 102]], np.int64)
    feeds = {n: (ids if n == "input_ids" else np.ones_like(ids)) for n in names}
    if "token_type_ids" in feeds:
        feeds["token_type_ids"] = np.zeros_like(ids)
    _same_outputs(exported, optimized, feeds)
