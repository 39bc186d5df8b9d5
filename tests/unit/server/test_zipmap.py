"""ZipMap done by the server (``_zipmap``): the same maps as onnxruntime's, bit for bit and
key for key, bounded by each run's rows; scikit-learn classifiers as skl2onnx exports them."""

from __future__ import annotations

import struct

import numpy as np
import onnxruntime as ort
import pytest
from onnx import ModelProto, TensorProto, helper

from blindai.errors import InferenceFailed
from blindai.server._zipmap import MAP_ENTRY_BYTES, server_side, without_zipmaps
from blindai.server.runtime import OnnxModel


def _zipmap(labels: dict[str, object], shape: list[object] | None, *, softmax: bool) -> bytes:
    key = TensorProto.INT64 if "classlabels_int64s" in labels else TensorProto.STRING
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    maps = helper.make_value_info(
        "maps",
        helper.make_sequence_type_proto(
            helper.make_map_type_proto(key, helper.make_tensor_type_proto(TensorProto.FLOAT, []))
        ),
    )
    nodes = [
        helper.make_node(
            "ZipMap", ["p" if softmax else "x"], ["maps"], domain="ai.onnx.ml", **labels
        )
    ]
    outputs = [maps]
    if softmax:
        nodes.insert(0, helper.make_node("Softmax", ["x"], ["p"], axis=-1))
        outputs.append(helper.make_tensor_value_info("p", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "z", [x], outputs)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    )
    model.ir_version = 8
    return model.SerializeToString()


def _exact(maps: object) -> list[list[tuple[object, bytes, type]]]:
    """Each map's keys in order, each value's float64 bits and type (NaN compares)."""
    assert isinstance(maps, np.ndarray | list)
    return [[(k, struct.pack("<d", v), type(v)) for k, v in m.items()] for m in maps]


CASES = [
    ({"classlabels_int64s": [3, 1, 2]}, [None, 3]),
    ({"classlabels_int64s": [7, -1, 7]}, [None, 3]),  # a label twice: its last value
    ({"classlabels_strings": ["b", "a", "é", "Z"]}, [None, 4]),
    ({"classlabels_strings": ["x", "y"]}, [2]),  # 1-D: one map
]


@pytest.mark.parametrize(("labels", "shape"), CASES)
@pytest.mark.parametrize("softmax", [False, True])
def test_the_maps_are_onnxruntimes_bit_for_bit(labels, shape, softmax) -> None:
    model = _zipmap(labels, shape, softmax=softmax)
    served = OnnxModel(model)
    reference = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    width = shape[-1]
    rng = np.random.default_rng(3)
    for rows in (0, 1, 5):
        if len(shape) == 1 and rows != 1:
            continue
        x = rng.standard_normal((rows, width) if len(shape) == 2 else (width,), np.float32)
        if x.size:
            x.flat[0], x.flat[-1] = np.nan, -0.0
        want = reference.run(None, {"x": x})
        got = served.predict({"x": x})
        assert [n for n, _ in got] == [o.name for o in reference.get_outputs()]
        assert _exact(got[0][1]) == _exact(want[0])
        if softmax:
            assert np.array_equal(got[1][1], want[1], equal_nan=True)


def test_only_the_outputs_asked_for_come_back() -> None:
    served = OnnxModel(_zipmap({"classlabels_int64s": [0, 1]}, [None, 2], softmax=True))
    x = np.array([[1, 2]], np.float32)
    assert [n for n, _ in served.predict({"x": x}, ["p"])] == ["p"]
    ((name, maps),) = served.predict({"x": x}, ["maps"])
    assert name == "maps" and list(maps[0]) == [0, 1]
    assert [n for n, _ in served.predict({"x": x}, ["maps", "p", "maps"])] == ["maps", "p", "maps"]


def test_the_maps_of_a_run_are_bounded_by_its_rows() -> None:
    """Ten rows of two classes fit the limit; eleven fail alone, before any map is made, and the
    next run is served."""
    served = OnnxModel(
        _zipmap({"classlabels_int64s": [0, 1]}, [None, 2], softmax=False),
        max_map_bytes=10 * 2 * MAP_ENTRY_BYTES,
    )
    assert len(served.predict({"x": np.zeros((10, 2), np.float32)})[0][1]) == 10
    with pytest.raises(InferenceFailed, match="send at most 10 rows a request") as refused:
        served.predict({"x": np.zeros((11, 2), np.float32)})
    assert refused.value.status_code == 422
    assert len(served.predict({"x": np.zeros((1, 2), np.float32)})[0][1]) == 1


def test_what_onnxruntimes_zipmap_refuses_is_refused() -> None:
    served = OnnxModel(_zipmap({"classlabels_int64s": [0, 1, 2]}, None, softmax=False))
    for x in (np.zeros((1, 2), np.float32), np.zeros((1, 1, 3), np.float32)):
        with pytest.raises(InferenceFailed):
            served.predict({"x": x})


def _read_by(model: bytes) -> ModelProto:
    parsed = ModelProto.FromString(model)
    parsed.graph.node.append(helper.make_node("Identity", ["maps"], ["again"]))
    parsed.graph.output.append(helper.make_value_info("again", parsed.graph.output[0].type))
    return parsed


def test_only_a_zipmap_whose_maps_are_the_models_output_alone_is_the_servers() -> None:
    plain = ModelProto.FromString(_zipmap({"classlabels_int64s": [0]}, [None, 1], softmax=True))
    assert list(server_side(plain)) == [1]
    copy, made = without_zipmaps(plain)
    assert [n.op_type for n in copy.graph.node] == ["Softmax"]
    assert [o.name for o in copy.graph.output] == ["p"]  # the probabilities once
    assert made["maps"].source == "p" and made["maps"].labels == (0,)
    assert len(plain.graph.node) == 2  # the model itself is left as it was
    read = _read_by(plain.SerializeToString())
    assert server_side(read) == {}
    twice = ModelProto()
    twice.CopyFrom(plain)
    twice.graph.output.append(twice.graph.output[0])
    assert server_side(twice) == {}
    untyped = ModelProto()
    untyped.CopyFrom(plain)
    untyped.graph.output[0].type.Clear()  # onnxruntime would report its type: not these
    assert server_side(untyped) == {}
    both = ModelProto()
    both.CopyFrom(plain)
    both.graph.node[1].attribute.append(helper.make_attribute("classlabels_strings", ["a"]))
    assert server_side(both) == {}


def test_scikit_learn_classifiers_as_skl2onnx_exports_them() -> None:
    sklearn = pytest.importorskip("sklearn")
    skl2onnx = pytest.importorskip("skl2onnx")
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    assert sklearn and skl2onnx
    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    for classifier, labels in (
        (make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)), y),
        (RandomForestClassifier(n_estimators=5, random_state=0), names),
    ):
        model = skl2onnx.to_onnx(classifier.fit(x, labels), x[:1]).SerializeToString()
        served = OnnxModel(model)
        reference = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        want = reference.run(None, {"X": x})
        got = served.predict({"X": x})
        assert np.array_equal(got[0][1], want[0])
        assert _exact(got[1][1]) == _exact(want[1])
