"""The benchmark's real-shape models, exported offline at bench time and cached.

DistilBERT (sequence classification) and ResNet18 are built in code with RANDOM weights
(``transformers`` configs, no hub) and exported with torch's TorchScript exporter (opset 17,
one self-contained file), with a dynamic batch axis so that batching can be measured. The
files land in ``.bench-models/`` at the repository root (git-ignored); an existing file is
reused. Needs the ``bench`` extra (``torch==2.13.0``, ``transformers``), see the Makefile.

Also built here, with ``onnx.helper`` only: a model that does no compute (for the payload's
own cost) and a large model of a chosen size (for upload throughput and memory).

Usage: python scripts/_realmodels.py [distilbert] [resnet18]
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

__all__ = ["CACHE", "RealModel", "big_model", "identity_model", "real_model"]

CACHE = Path(__file__).resolve().parents[1] / ".bench-models"


@dataclass(frozen=True)
class RealModel:
    """An exported model file and one batch-1 request for it."""

    name: str
    path: Path
    feeds: dict[str, np.ndarray]

    def batch(self, n: int) -> dict[str, np.ndarray]:
        """The same request repeated ``n`` times along the batch axis."""
        return {k: np.repeat(v, n, axis=0) for k, v in self.feeds.items()}


def _torch_export(module: object, args: tuple[object, ...], path: Path, **kw: object) -> None:
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice and tracer noise
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=17, **kw)


def _wrap(model: object, call: Callable[..., object]) -> object:
    import torch

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: object) -> object:
            return call(self.model, *inputs)

    return Wrapped()


def _export_distilbert(path: Path) -> None:
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    model = DistilBertForSequenceClassification(DistilBertConfig(num_labels=2)).eval()
    net = _wrap(model, lambda m, i, a: m(input_ids=i, attention_mask=a).logits)
    ids = torch.ones((1, 128), dtype=torch.int64)
    dyn = {0: "batch", 1: "tokens"}
    _torch_export(
        net,
        (ids, ids),
        path,
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_axes={"input_ids": dyn, "attention_mask": dyn, "logits": {0: "batch"}},
    )


def _export_resnet18(path: Path) -> None:
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    config = ResNetConfig(
        layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], num_labels=1000
    )
    model = ResNetForImageClassification(config).eval()
    net = _wrap(model, lambda m, x: m(pixel_values=x).logits)
    _torch_export(
        net,
        (torch.zeros((1, 3, 224, 224)),),
        path,
        input_names=["pixel_values"],
        output_names=["logits"],
        dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
    )


_EXPORTS: dict[str, Callable[[Path], None]] = {
    "distilbert": _export_distilbert,
    "resnet18": _export_resnet18,
}


def _feeds(name: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    if name == "distilbert":
        ids = rng.integers(1000, 20000, size=(1, 128), dtype=np.int64)
        return {"input_ids": ids, "attention_mask": np.ones((1, 128), np.int64)}
    return {"pixel_values": rng.standard_normal((1, 3, 224, 224), dtype=np.float32)}


def real_model(name: str) -> RealModel:
    """The cached export of ``name`` (``distilbert`` or ``resnet18``), exported if missing."""
    path = CACHE / f"{name}.onnx"
    if not path.is_file():
        CACHE.mkdir(exist_ok=True)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        tmp = CACHE / f".{name}.partial.onnx"
        start = time.perf_counter()
        _EXPORTS[name](tmp)
        tmp.rename(path)
        size = path.stat().st_size / 1e6
        print(f"exported {name}: {size:.1f} MB in {time.perf_counter() - start:.1f} s", flush=True)
    return RealModel(name, path, _feeds(name))


def identity_model(shape: list[int], dtype: int = TensorProto.FLOAT) -> bytes:
    """A model that does no compute: ``y = Identity(x)``, batch axis dynamic."""
    dims: list[int | str] = ["batch", *shape[1:]]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", dtype, dims)],
        [helper.make_tensor_value_info("y", dtype, dims)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def big_model(size_bytes: int, path: Path) -> Path:
    """A valid model of about ``size_bytes`` (float32 weights in 64 MiB initializers), written
    to ``path`` unless a file of that size is there. ``y = x + sum of each weight's first
    element``, so that every initializer is used and kept."""
    if path.is_file() and abs(path.stat().st_size - size_bytes) < (1 << 20):
        return path
    chunk = 16 << 20  # float32 elements: 64 MiB
    count = max(1, round(size_bytes / (4 * chunk)))
    per = size_bytes // (4 * count)
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(count):
        w = rng.standard_normal(per, dtype=np.float32)
        inits.append(onnx.numpy_helper.from_array(w, f"w{i}"))
        inits.append(onnx.numpy_helper.from_array(np.array([0], np.int64), f"i{i}"))
        nodes.append(helper.make_node("Gather", [f"w{i}", f"i{i}"], [f"g{i}"]))
        out = "y" if i == count - 1 else f"s{i}"
        nodes.append(helper.make_node("Add", [prev, f"g{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    tmp.write_bytes(model.SerializeToString())
    del model, graph, inits
    shutil.move(tmp, path)
    return path


if __name__ == "__main__":
    for wanted in sys.argv[1:] or list(_EXPORTS):
        m = real_model(wanted)
        print(f"{m.name}: {m.path} ({m.path.stat().st_size / 1e6:.1f} MB)")
