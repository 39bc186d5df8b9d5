"""The data plane: compilation never holds up inference on other models."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from blindai.errors import ProtocolError
from blindai.server.handlers import DataPlane, match_inputs
from blindai.server.registry import ModelRegistry
from blindai.server.runtime import TensorSpec
from blindai.server.settings import ServerSettings
from tests.models import matmul


def test_string_inputs_refuse_bytes_that_are_not_utf8():
    spec = TensorSpec("s", np.dtype(object), (None,), "tensor(string)")
    ok = match_inputs([spec], [("s", np.array(["a", "é"], dtype=object))])
    assert ok["s"].tolist() == ["a", "é"]
    with pytest.raises(ProtocolError, match="BYTES elements must be UTF-8 text"):
        match_inputs([spec], [("s", np.array(["a", b"\xff"], dtype=object))])


def test_inference_runs_while_another_model_compiles():
    settings = ServerSettings(tee="simulation", inference_threads=1)
    plane = DataPlane(settings, ModelRegistry())
    big = matmul(3072, 3072, seed=7)  # 36 MiB: compiling takes a while
    x = np.ones((1, 16), np.float32)

    async def scenario() -> tuple[int, float]:
        small = await plane.upload(matmul(16, 4), name="small", optimize=True)
        upload = asyncio.ensure_future(plane.upload(big, name="big", optimize=True))
        await asyncio.sleep(0)  # let the upload start
        runs, worst = 0, 0.0
        while not upload.done():
            start = time.perf_counter()
            out = await plane.run(small, {"x": x})
            worst = max(worst, time.perf_counter() - start)
            assert out[0][1].shape == (1, 4)
            runs += 1
        await upload
        return runs, worst

    try:
        runs, worst = asyncio.run(scenario())
    finally:
        plane.close()
    assert runs > 10, "inference stalled while a model compiled"
    assert worst < 0.5
