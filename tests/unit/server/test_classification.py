"""The classification extension: Triton's "value:index[:label]" top-k strings."""

from __future__ import annotations

import numpy as np
import pytest

from blindai.errors import InvalidInput
from blindai.server.protocols.classification import (
    classification_count,
    classify,
    labels_from_metadata,
)


def test_top_k_of_a_vector_as_triton_writes_it() -> None:
    got = classify(np.array([1, 5, 10, 4], dtype=np.float32), 2, "y")
    assert got.dtype == object
    assert list(got) == ["10.000000:2", "5.000000:1"]


def test_rows_along_the_batch_dimension_with_labels() -> None:
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]], dtype=np.float64)
    got = classify(scores, 2, "y", labels=("cat", "dog"))
    assert got.shape == (2, 2)
    assert got.tolist() == [["0.700000:1:dog", "0.200000:2"], ["0.500000:0:cat", "0.250000:1:dog"]]


def test_integers_ties_and_k_past_the_classes() -> None:
    got = classify(np.array([3, 7, 7, -1], dtype=np.int64), 10, "y")
    assert list(got) == ["7:1", "7:2", "3:0", "-1:3"]


def test_bfloat16_is_classified_as_floats() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    got = classify(np.array([0.5, 2.0], dtype=ml_dtypes.bfloat16), 1, "y")
    assert list(got) == ["2.000000:1"]


@pytest.mark.parametrize(
    "array",
    [np.array(3.0), np.array([], np.float32), np.array([True]), np.array(["a"], dtype=object)],
    ids=["scalar", "empty", "bool", "bytes"],
)
def test_what_cannot_be_classified(array: np.ndarray) -> None:
    with pytest.raises(InvalidInput, match="classification"):
        classify(array, 1, "y")


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "2"])
def test_count_must_be_a_positive_integer(value: object) -> None:
    with pytest.raises(InvalidInput, match="positive integer"):
        classification_count(value, "y")
    assert classification_count(None, "y") is None
    assert classification_count(3, "y") == 3


def test_labels_come_from_model_metadata_lines() -> None:
    assert labels_from_metadata({"labels": "cat\ndog\n"}) == ("cat", "dog")
    assert labels_from_metadata({"other": "x"}) == ()
