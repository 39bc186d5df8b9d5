"""Caller inputs to wire tensors: BlindAI 0.6.3's ``dtypes``/``shapes`` forms, and refusals
that name the argument at fault."""

from __future__ import annotations

import numpy as np
import pytest

from blindai.client._tensors import to_wire_tensors
from blindai.errors import ConfigurationError
from blindai.protocol.messages import DatumType, TensorInfo, WireTensor

FLAT = [float(v) for v in range(8)]
WANT = WireTensor.from_numpy(np.asarray(FLAT, np.float32).reshape(2, 4))


@pytest.mark.parametrize(
    ("dtypes", "shapes"),
    [
        (DatumType.F32, (2, 4)),
        ([DatumType.F32], [(2, 4)]),
        ((DatumType.F32,), ((2, 4),)),
        ("float32", (2, 4)),
        ("f32", [2, 4]),
        ("F32", [[2, 4]]),
        ("FLOAT32", [(2, 4)]),
        (np.float32, (2, 4)),
        (np.dtype("float32"), (2, 4)),
        (0, (2, 4)),  # the 0.6 wire code of F32
        ([np.float32], [np.array([2, 4])[0:2].tolist()]),
    ],
)
def test_forms_accepted_for_one_flat_input(dtypes: object, shapes: object) -> None:
    assert to_wire_tensors(FLAT, dtypes, shapes) == [WANT]


@pytest.mark.parametrize("scalar", [np.float32(2.5), np.array(2.5, np.float32)], ids=type)
def test_a_numpy_scalar_is_a_0d_tensor(scalar: object) -> None:
    """For a model whose input has ONNX shape []: alone or by name (a list of numbers is a
    flat list, as in 0.6.3, so a list holds 0-d arrays)."""
    for inputs, name in ((scalar, None), ({"s": scalar}, "s"), ([np.asarray(scalar)], None)):
        (tensor,) = to_wire_tensors(inputs)
        assert tensor.info == TensorInfo((), DatumType.F32, name)
        assert tensor.as_numpy() == np.float32(2.5)


def test_names_follow_blindai_0_6_3_not_numpy() -> None:
    # "i8" and "u8" are 8-bit in BlindAI's names (numpy's "i8" is int64)
    (i8,) = to_wire_tensors([1, 2], "i8", (2,))
    (u8,) = to_wire_tensors([1, 2], "u8", (2,))
    (bool_,) = to_wire_tensors([1, 0], "bool", (2,))
    assert [t.info.datum_type for t in (i8, u8, bool_)] == [
        DatumType.I8,
        DatumType.U8,
        DatumType.Bool,
    ]


def test_per_input_lists_and_dicts() -> None:
    by_position = to_wire_tensors([[1, 2], [3.0]], ["i64", "f64"], [(1, 2), (1,)])
    assert [t.info for t in by_position] == [
        TensorInfo((1, 2), DatumType.I64),
        TensorInfo((1,), DatumType.F64),
    ]
    by_name = to_wire_tensors(
        {"b": [3.0], "a": [1, 2]}, {"a": "i64", "b": "f64"}, {"a": (1, 2), "b": (1,)}
    )
    assert [t.info for t in by_name] == [
        TensorInfo((1,), DatumType.F64, "b"),
        TensorInfo((1, 2), DatumType.I64, "a"),
    ]


@pytest.mark.parametrize(
    ("inputs", "dtypes", "shapes", "text"),
    [
        (FLAT, "Float33", (2, 4), "dtypes: 'Float33' is not a DatumType"),
        (FLAT, True, (2, 4), "dtypes: True is not"),
        (FLAT, 99, (2, 4), "dtypes: 99 is not"),
        (FLAT, [DatumType.F32, DatumType.F32], (2, 4), "dtypes: 2 given for 1 input"),
        (FLAT, None, (2, 4), "dtypes: a flat list needs a dtype"),
        (FLAT, "f32", [(2, 4), (8,)], "shapes: 2 given for 1 input"),
        (FLAT, "f32", (3, 4), r"shapes: cannot reshape 8 values to \[3, 4\]"),
        (FLAT, "f32", (2, -4), r"shapes: \(2, -4\) is not a shape"),
        (FLAT, "f32", "2x4", "shapes: '2x4' is not a shape"),
        (FLAT, "f32", [(2, "4")], r"shapes: \(2, '4'\) is not a shape"),
        ([[1.0], [2.0]], "f32", [1, 1], "shapes: give one shape per input"),
        ([[1.0], [2.0]], {"a": "f32"}, None, "dtypes: a dict needs the inputs as a dict"),
        ({"a": [1.0]}, {"b": "f32"}, None, "dtypes: no entry for input 'a'"),
        (["x", "y"], "f32", (2,), "input_tensors: cannot read the list as F32"),
        (object(), None, None, "input_tensors: unsupported type object"),
    ],
)
def test_refusals_name_the_argument(
    inputs: object, dtypes: object, shapes: object, text: str
) -> None:
    with pytest.raises(ConfigurationError, match=text):
        to_wire_tensors(inputs, dtypes, shapes)
