"""Registry versions (Triton's numbering) and unload/load keeping the model's bytes."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from onnx import TensorProto

from blindai.errors import ModelNotFound, ModelNotReady
from blindai.server.access import ANONYMOUS
from blindai.server.dataplane import DataPlane
from blindai.server.protocols.v2.service import OipService
from blindai.server.registry import ModelRegistry
from blindai.server.settings import ServerSettings
from blindai.server.statistics import Timing
from tests import models


@pytest.fixture
def oip() -> OipService:
    plane = DataPlane(ServerSettings(simulation=True), ModelRegistry())
    yield OipService(plane)
    plane.close()


def run(oip: OipService, name: str, version: str = "") -> str:
    x = np.ones((1, 3), np.float32)

    async def go() -> str:
        entry = oip.ready_model(name, version, caller=ANONYMOUS)
        outputs = await oip.infer(entry, [("x", x)], None, Timing(), caller=ANONYMOUS)
        np.testing.assert_array_equal(outputs[0][1], x)
        return str(entry.version)

    return asyncio.run(go())


def upload(oip: OipService, name: str | None, model: bytes) -> str:
    async def go() -> str:
        entry = await oip.plane.upload(model, name=name, optimize=True, caller=ANONYMOUS)
        return entry.model_id

    return asyncio.run(go())


def test_versions_count_uploads_per_name(oip: OipService) -> None:
    model = models.identity(TensorProto.FLOAT)
    first = upload(oip, "m", model)
    upload(oip, "m", model)
    anonymous = upload(oip, None, model)
    assert run(oip, "m") == "2"
    assert run(oip, "m", "1") == "1"
    assert run(oip, "m", first) == "1"
    assert run(oip, anonymous) == "1"
    assert oip.model_metadata("m", caller=ANONYMOUS)["versions"] == ["1", "2"]
    with pytest.raises(ModelNotFound):
        oip.model("m", "3", caller=ANONYMOUS)


def test_unload_releases_the_session_and_load_rebuilds_it(oip: OipService) -> None:
    model = models.identity(TensorProto.FLOAT)
    upload(oip, "m", model)
    session = oip.model("m", caller=ANONYMOUS).model
    oip.unload(oip.managed("m", caller=ANONYMOUS))
    assert oip.index(caller=ANONYMOUS) == [
        {"name": "m", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"}
    ]
    assert oip.index(ready_only=True, caller=ANONYMOUS) == []
    assert oip.plane.registry.session_for(oip.model("m", caller=ANONYMOUS).hash) is None
    with pytest.raises(ModelNotReady):
        run(oip, "m")
    asyncio.run(oip.load(oip.managed("m", caller=ANONYMOUS), caller=ANONYMOUS))
    assert oip.index(caller=ANONYMOUS) == [{"name": "m", "version": "1", "state": "READY"}]
    assert oip.model("m", caller=ANONYMOUS).model is not session
    assert run(oip, "m") == "1"


def test_a_session_shared_with_a_loaded_model_stays(oip: OipService) -> None:
    model = models.identity(TensorProto.FLOAT)
    upload(oip, "a", model)
    upload(oip, "b", model)
    oip.unload(oip.managed("a", caller=ANONYMOUS))
    assert run(oip, "b") == "1"
    asyncio.run(oip.load(oip.managed("a", caller=ANONYMOUS), caller=ANONYMOUS))
    assert oip.model("a", caller=ANONYMOUS).model is oip.model("b", caller=ANONYMOUS).model


def test_statistics_document_has_tritons_shape(oip: OipService) -> None:
    upload(oip, "m", models.identity(TensorProto.FLOAT))
    entry = oip.model("m", caller=ANONYMOUS)
    timing = Timing()
    timing.add("infer", 7)
    oip.record(entry, timing, success=True, protocol="rest", caller=ANONYMOUS)
    (stats,) = oip.statistics("m", caller=ANONYMOUS)[0]["model_stats"]
    assert stats["inference_count"] == stats["execution_count"] == 1
    assert stats["inference_stats"]["compute_infer"] == {"count": 1, "ns": 7}
    assert set(stats["inference_stats"]) == {
        "success", "fail", "queue", "compute_input", "compute_infer", "compute_output",
        "cache_hit", "cache_miss",
    }  # fmt: skip
    assert oip.statistics(caller=ANONYMOUS)[0]["model_stats"][0]["name"] == "m"


def test_statistics_name_the_model_they_read_for_the_audit_log(oip: OipService) -> None:
    """One version's statistics name its model; every model's name none, even when there is
    one model; a name with several versions none (the line has room for one id)."""
    upload(oip, "m", models.identity(TensorProto.FLOAT))
    entry = oip.model("m", caller=ANONYMOUS)
    assert oip.statistics("m", caller=ANONYMOUS)[1] == entry.model_id
    assert oip.statistics("m", "1", caller=ANONYMOUS)[1] == entry.model_id
    assert oip.statistics(caller=ANONYMOUS)[1] is None
    upload(oip, "m", models.identity(TensorProto.DOUBLE))
    document, model = oip.statistics("m", caller=ANONYMOUS)
    assert len(document["model_stats"]) == 2 and model is None
