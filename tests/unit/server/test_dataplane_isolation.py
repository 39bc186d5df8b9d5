"""The data plane with ``run_isolation = "process"``: what a client is answered when a model's
host crashes, runs past its timeout, or crashed too often; and how its model comes back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import numpy as np
import pytest
from onnx import TensorProto

from blindai.errors import InferenceFailed, InferenceTimeout, ModelNotReady
from blindai.server.access import ANONYMOUS
from blindai.server.dataplane import DataPlane
from blindai.server.model_host import CRASH_LIMIT, HostedModel
from blindai.server.registry import ModelRef, ModelRegistry
from blindai.server.settings import ServerSettings
from tests import attacks
from tests.models import identity

HOSTILE = list(attacks.empty_unsafe_feeds("LSTM", made="slice", empty=True).items())
FINE = list(attacks.empty_unsafe_feeds("LSTM", made="slice").items())


@pytest.fixture
def plane() -> Iterator[DataPlane]:
    settings = ServerSettings(
        tee="simulation",
        run_isolation="process",
        empty_kernel_proofs=False,
        intra_op_threads=1,
        run_timeout=1.0,
    )
    data = DataPlane(settings, ModelRegistry(max_models=16))
    yield data
    data.close()


def _upload(plane: DataPlane, model: bytes) -> ModelRef:
    entry = asyncio.run(plane.upload(model, name=None, optimize=True, caller=ANONYMOUS))
    assert isinstance(entry.model, HostedModel)
    assert entry.model.inline is None  # never on the event loop
    return ModelRef(entry.model_id)


def _ends(plane: DataPlane, why: str) -> float | None:
    """``blindai_model_host_ends_total{why=...}`` (None: never counted)."""
    return plane.metrics.registry.get_sample_value("blindai_model_host_ends_total", {"why": why})


def _infer(plane: DataPlane, ref: ModelRef, inputs: list[tuple[str, np.ndarray]]) -> list:
    return asyncio.run(plane.infer(ref, inputs, caller=ANONYMOUS)).outputs


def test_a_model_that_keeps_crashing_answers_503_until_loaded_again(plane: DataPlane) -> None:
    """Each crash is 422 and the model answers a valid request after it; after CRASH_LIMIT
    crashes within the window it answers 503 without starting a process, until it is unloaded
    and loaded again. The other model is served throughout."""
    crasher = _upload(plane, attacks.empty_unsafe("LSTM", made="slice"))
    other = _upload(plane, identity(TensorProto.FLOAT))
    x = np.ones((1, 3), np.float32)
    for _ in range(CRASH_LIMIT):
        with pytest.raises(InferenceFailed, match=r"ended the model's process .*\(SIG") as crashed:
            _infer(plane, crasher, HOSTILE)
        assert crashed.value.status_code == 422
        assert np.array_equal(_infer(plane, other, [("x", x)])[0][1], x)
    with pytest.raises(ModelNotReady, match="unloaded and loaded again") as stopped:
        _infer(plane, crasher, FINE)
    assert stopped.value.status_code == 503
    assert _ends(plane, "crash") == CRASH_LIMIT
    entries = plane.managed_versions(crasher.key, caller=ANONYMOUS)
    plane.unload(entries)
    asyncio.run(plane.load(entries))
    ((_, y),) = _infer(plane, crasher, FINE)
    assert y.shape == (3, 1, 1, 2)


def test_a_long_kernel_is_a_504_in_time(plane: DataPlane) -> None:
    ref = _upload(plane, attacks.long_kernel())
    started = time.monotonic()
    with pytest.raises(InferenceTimeout) as stopped:
        _infer(plane, ref, [("n", np.array([6000], np.int64))])
    assert stopped.value.status_code == 504
    assert time.monotonic() - started < 2.5
    assert _ends(plane, "stopped") == 1 and _ends(plane, "crash") is None
    ((_, y),) = _infer(plane, ref, [("n", np.array([2], np.int64))])
    assert y == 8.0


def test_closing_the_data_plane_stops_its_hosts(plane: DataPlane) -> None:
    ref = _upload(plane, identity(TensorProto.FLOAT, [2, 3]))
    (entry,) = plane.managed_versions(ref.key, caller=ANONYMOUS)
    assert isinstance(entry.model, HostedModel)
    process = entry.model.pid
    assert process is not None
    plane.close()
    assert entry.model.released and entry.model.pid is None
