"""The classification extension: Triton's "value:index[:label]" top-k strings."""

from __future__ import annotations

import numpy as np
import pytest

from blindai.errors import InferenceFailed, InvalidInput
from blindai.server.protocols.classification import (
    MAX_LABELS,
    MIN_ELEMENT_BYTES,
    check_classified_size,
    classification_count,
    classified_count,
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


@pytest.mark.parametrize(
    "text",
    ["", "\n", "a", "a\n", "a\r\nb", "a\rb\r", "\n\nx\n\n", "a\x0bb\x1cc\u2028d\x85e\r\n\r\n"],
)
def test_labels_are_the_lines_splitlines_reads(text: str) -> None:
    assert labels_from_metadata({"labels": text}) == tuple(text.splitlines())
    long = text + "x" * MAX_LABELS  # read one line at a time
    assert labels_from_metadata({"labels": long}) == tuple(long.splitlines())


def test_labels_past_the_limit_are_never_split_out() -> None:
    """A model's labels of 3 Mi short lines: every request split out all of them (187 MiB
    traced) to keep the first 1 Mi; now only those are made."""
    import tracemalloc

    text = "ab\n" * (3 * MAX_LABELS)
    tracemalloc.start()
    try:
        labels = labels_from_metadata({"labels": text})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(labels) == MAX_LABELS and labels[-1] == "ab"
    assert peak < 100 << 20, f"{peak >> 20} MiB"


@pytest.mark.parametrize(
    ("shape", "k", "count"),
    [((5,), 2, 2), ((5,), 9, 5), ((3, 4), 2, 6), ((3, 2, 2), 9, 12), ((0, 4), 1, 0)],
)
def test_the_classified_count_is_known_before_classifying(shape, k, count) -> None:
    array = np.zeros(shape, np.float32)
    assert classified_count(array, k) == count
    if count:
        assert classify(array, k, "y").size == count


def test_a_classification_too_large_for_any_reply_is_refused_before_it_is_made() -> None:
    """16M one-class rows (a 64 MiB request) were classified at 4 us a row on the event loop
    and gigabytes of strings made before the reply's size was checked."""
    rows = np.zeros((1 << 24, 1), np.uint8)
    with pytest.raises(InferenceFailed, match="16777216 elements"):
        check_classified_size(rows, 1, "y", limit=64 << 20)
    check_classified_size(rows[: (64 << 20) // MIN_ELEMENT_BYTES], 1, "y", limit=64 << 20)
