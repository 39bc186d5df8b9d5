"""OnnxModel: what it reports of a model, and what it never writes to the log."""

from __future__ import annotations

import numpy as np
import pytest

from blindai.errors import InferenceFailed
from blindai.server.runtime import OnnxModel
from tests.models import gather_rows


def test_a_failing_run_writes_no_input_value_to_stderr(capfd):
    model = OnnxModel(gather_rows(vocab=10))
    capfd.readouterr()
    with pytest.raises(InferenceFailed):
        model.predict({"ids": np.array([[1, 987654]]), "scale": np.ones((1, 1, 1), np.float32)})
    out, err = capfd.readouterr()
    assert "987654" not in out + err


def test_specs_keep_the_names_of_symbolic_dimensions():
    model = OnnxModel(gather_rows(vocab=10))
    ids, scale = model.inputs
    assert ids.shape == (None, None) and ids.symbols == ("batch", "seq")
    assert scale.shape == (None, 1, 1) and scale.symbols == ("batch", None, None)
    assert model.outputs[0].symbols == ("batch", "seq", None)


def test_predict_returns_the_outputs_asked_for_in_that_order():
    from tests.models import two_in_two_out

    model = OnnxModel(two_in_two_out())
    feeds = {"a": np.ones((1, 4), np.float32), "b": np.ones((1, 4), np.float32)}
    assert [n for n, _ in model.predict(feeds)] == ["sum", "idx"]
    assert [n for n, _ in model.predict(feeds, ["idx", "sum"])] == ["idx", "sum"]
