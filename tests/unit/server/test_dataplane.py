"""The data plane: compiling never holds up inference; lookups; input matching; unloading."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto

from blindai.errors import (
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    PayloadTooLarge,
    RegistryFull,
)
from blindai.server.access import ANONYMOUS
from blindai.server.dataplane import DataPlane
from blindai.server.inputs import match_inputs
from blindai.server.registry import ModelRef, ModelRegistry
from blindai.server.runtime import TensorSpec
from blindai.server.settings import ServerSettings
from blindai.server.store import SealedStore, StoredModel
from tests import attacks
from tests.models import identity, matmul

WAIT_S = 60.0
"""A guard against hanging, not a measurement: every wait here ends on an event."""


class GatedPlane(DataPlane):
    """A data plane whose compilation waits, holding its compile thread, until released (its
    compiler's ``compiled`` step wrapped: uploads, restores and loads all go through it)."""

    def __init__(self, settings: ServerSettings) -> None:
        super().__init__(settings, ModelRegistry())
        self.compiling = threading.Event()
        self.release = threading.Event()
        compiled = self.compiler.compiled

        def gated(model: bytes, optimize: bool, *rest):
            self.compiling.set()
            if not self.release.wait(WAIT_S):
                raise AssertionError("the test never released the compilation")
            return compiled(model, optimize, *rest)

        self.compiler.compiled = gated  # type: ignore[method-assign]


class GatedStore(SealedStore):
    """A sealed store whose writes of the models ``held`` picks wait until :attr:`open` is set
    (:attr:`writing` tells such a write is waiting)."""

    def __init__(self, directory: Path, held: Callable[[StoredModel], bool]) -> None:
        super().__init__(directory, key_material=b"k" * 32)
        self.held = held
        self.open = threading.Event()
        self.writing = threading.Event()

    def put_model(self, record: StoredModel) -> None:
        if self.held(record):
            self.writing.set()
            if not self.open.wait(WAIT_S):
                raise AssertionError("the test never let the write go on")
        super().put_model(record)


def run_then_close(scenario: Callable[[], Any], plane: DataPlane, store: GatedStore) -> None:
    """Run ``scenario()`` (a coroutine function); then, whatever happened, let the store's
    held writes go on and close the plane and the store."""
    try:
        asyncio.run(scenario())
    finally:
        store.open.set()
        plane.close()
        store.close()


def test_string_inputs_refuse_bytes_that_are_not_utf8():
    spec = TensorSpec("s", np.dtype(object), (None,), "tensor(string)")
    ok = match_inputs([spec], [("s", np.array(["a", "é"], dtype=object))])
    assert ok["s"].tolist() == ["a", "é"]
    with pytest.raises(InvalidInput, match="BYTES elements must be UTF-8 text"):
        match_inputs([spec], [("s", np.array(["a", b"\xff"], dtype=object))])


def test_inference_runs_while_another_model_compiles():
    plane = GatedPlane(ServerSettings(tee="simulation", inference_threads=1))
    x = np.ones((1, 16), np.float32)

    async def scenario() -> None:
        plane.release.set()
        small = await plane.upload(matmul(16, 4), name="small", optimize=True, caller=ANONYMOUS)
        plane.release.clear()
        upload = asyncio.ensure_future(
            plane.upload(matmul(8, 2), name="big", optimize=True, caller=ANONYMOUS)
        )
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, plane.compiling.wait, WAIT_S)
        for _ in range(5):  # the one inference thread is free while the compile thread waits
            result = await asyncio.wait_for(
                plane.infer(ModelRef(small.model_id), [("x", x)], caller=ANONYMOUS), WAIT_S
            )
            assert result.outputs[0][1].shape == (1, 4)
        assert not upload.done()
        plane.release.set()
        assert (await upload).name == "big"

    try:
        asyncio.run(scenario())
    finally:
        plane.release.set()
        plane.close()


@pytest.fixture
def plane():
    p = DataPlane(
        ServerSettings(tee="simulation", max_models=3, max_model_bytes=4096),
        ModelRegistry(max_models=3),
    )
    yield p
    p.close()


def _upload(plane: DataPlane, model: bytes, name: str | None = None):
    return asyncio.run(plane.upload(model, name=name, optimize=True, caller=ANONYMOUS))


def _infer(plane: DataPlane, ref: ModelRef, inputs, **kw):
    return asyncio.run(plane.infer(ref, inputs, caller=ANONYMOUS, **kw))


def _delete(plane: DataPlane, ref: ModelRef):
    return asyncio.run(plane.delete(ref, caller=ANONYMOUS))


def test_lookup_by_id_name_hash_and_newest(plane):
    first = _upload(plane, identity(TensorProto.FLOAT), "same")
    second = _upload(plane, identity(TensorProto.INT64), "same")
    assert plane.model(ModelRef(first.model_id), caller=ANONYMOUS) == first
    assert plane.model(ModelRef("same"), caller=ANONYMOUS) == second  # the newest with that name
    assert plane.model(ModelRef(hash=first.hash.hex().upper()), caller=ANONYMOUS) == first
    assert plane.model(ModelRef(), caller=ANONYMOUS) == second
    with pytest.raises(ModelNotFound, match="'nope'"):
        plane.model(ModelRef("nope"), caller=ANONYMOUS)
    with pytest.raises(ModelNotFound, match="no version"):
        plane.model(ModelRef(first.model_id, version="other"), caller=ANONYMOUS)


def test_an_empty_server_has_no_newest_model(plane):
    with pytest.raises(ModelNotFound, match="no model has been uploaded"):
        _infer(plane, ModelRef(), [(None, np.zeros((1, 3), np.float32))])


def test_delete_by_name_removes_the_newest_and_unloads_its_session(plane):
    old = _upload(plane, identity(TensorProto.FLOAT), "m")
    new = _upload(plane, identity(TensorProto.INT64), "m")
    assert _delete(plane, ModelRef("m")) == new
    with pytest.raises(ModelNotFound, match="deleted"):  # the session was unloaded
        new.model.predict({"x": np.zeros((1, 3), np.int64)})
    assert plane.model(ModelRef("m"), caller=ANONYMOUS) == old
    with pytest.raises(InvalidInput, match="id or name"):
        _delete(plane, ModelRef())


def test_a_shared_session_stays_until_its_last_model_goes(plane):
    a = _upload(plane, identity(TensorProto.FLOAT))
    b = _upload(plane, identity(TensorProto.FLOAT))
    assert a.model is b.model
    _delete(plane, ModelRef(a.model_id))
    x = np.zeros((1, 3), np.float32)
    assert _infer(plane, ModelRef(b.model_id), [(None, x)]).outputs[0][0] == "y"
    _delete(plane, ModelRef(b.model_id))
    with pytest.raises(ModelNotFound):
        b.model.predict({"x": x})


def test_limits_and_counts_in_messages(plane):
    with pytest.raises(PayloadTooLarge, match=r"the 4 KiB limit \(--max-model-bytes 4096\)"):
        _upload(plane, b"\0" * 5000)
    for _ in range(3):
        _upload(plane, identity(TensorProto.FLOAT))
    with pytest.raises(RegistryFull, match=r"holds 3 models, the most it may \(--max-models 3\)"):
        _upload(plane, identity(TensorProto.FLOAT))
    x = np.zeros((1, 3), np.float32)
    with pytest.raises(InvalidInput, match="takes 1 input; 2 inputs were given"):
        _infer(plane, ModelRef(), [(None, x), (None, x)])


@pytest.mark.parametrize(
    ("shape", "flat", "expected"),
    [
        ([1, 8], 8, (1, 8)),  # static
        ([None, 4], 8, (2, 4)),  # a leading batch dimension
        ([], 1, ()),  # a scalar
        ([2, 2, 2], 8, (2, 2, 2)),
    ],
)
def test_a_flat_list_takes_the_models_shape(plane, shape, flat, expected):
    entry = _upload(plane, identity(TensorProto.FLOAT, shape))
    values = np.arange(flat, dtype=np.float32)
    out = _infer(plane, ModelRef(entry.model_id), [(None, values)], reshape_flat=True)
    assert out.outputs[0][1].shape == expected
    np.testing.assert_array_equal(out.outputs[0][1].ravel(), values)


@pytest.mark.parametrize(
    ("shape", "flat", "fragment"),
    [
        ([1, 8], 7, "7 values cannot fill the model's shape [1, 8]"),
        ([None, 4], 6, "6 values cannot fill the model's shape ['?', 4]"),
        ([None, None], 8, "dynamic dimensions after the first"),
        ([2, None], 8, "dynamic dimensions after the first"),
        ([], 2, "2 values cannot fill the model's shape []"),
    ],
)
def test_ambiguous_or_misfit_flat_lists_are_refused(plane, shape, flat, fragment):
    entry = _upload(plane, identity(TensorProto.FLOAT, shape))
    values = np.zeros(flat, np.float32)
    with pytest.raises(InvalidInput, match="input 'x'") as refused:
        _infer(plane, ModelRef(entry.model_id), [(None, values)], reshape_flat=True)
    assert fragment in str(refused.value)


def test_without_reshape_flat_a_flat_list_is_a_shape_error(plane):
    entry = _upload(plane, identity(TensorProto.FLOAT, [1, 8]))
    with pytest.raises(InvalidInput, match=r"shape \[8\] does not fit"):
        _infer(plane, ModelRef(entry.model_id), [(None, np.zeros(8, np.float32))])


def test_outputs_by_name(plane):
    entry = _upload(plane, identity(TensorProto.FLOAT))
    x = [(None, np.zeros((1, 3), np.float32))]
    assert _infer(plane, ModelRef(entry.model_id), x, outputs=["y"]).outputs[0][0] == "y"
    with pytest.raises(InvalidInput, match="no output named 'z'"):
        _infer(plane, ModelRef(entry.model_id), x, outputs=["z"])


# -- how models run: threads, runs at once, batching -------------------------------------------


def _upload_with(plane: DataPlane, model: bytes, **settings):
    from blindai.server.settings import ModelSettings

    return asyncio.run(
        plane.upload(
            model,
            name=None,
            optimize=True,
            caller=ANONYMOUS,
            settings=ModelSettings(**settings),
        )
    )


def test_uploads_take_the_servers_schedule_unless_they_ask_for_their_own():
    from tests.models import gather_rows

    settings = ServerSettings(tee="simulation", max_concurrent_runs=2, max_batch_size=4)
    plane = DataPlane(settings, ModelRegistry())
    try:
        default = _upload(plane, gather_rows(10))
        assert default.queue is not None and default.queue.batching
        assert default.queue.policy.max_batch_size == 4
        assert default.queue.policy.max_concurrent_runs == 2
        own = _upload_with(plane, gather_rows(11), max_batch_size=16, max_queue_delay_us=500)
        assert own.queue is not None and own.queue is not default.queue
        assert (own.queue.policy.max_batch_size, own.queue.policy.max_queue_delay_us) == (16, 500)
        # identical bytes share the loaded session and its queue (the first upload's settings)
        again = _upload_with(plane, gather_rows(11), max_batch_size=2)
        assert again.model is own.model and again.queue is own.queue
    finally:
        plane.close()


def test_runs_at_once_by_default_within_the_servers_cap_and_one_batch_at_a_time():
    from tests.models import gather_rows

    def runs(settings: ServerSettings, **asked) -> int:
        """The runs at once of a model uploaded with ``asked`` (its schedule's policy)."""
        plane = DataPlane(settings, ModelRegistry())
        try:
            entry = _upload_with(plane, gather_rows(10), **asked)
            return plane.schedules.by_share[entry.hash].policy.max_concurrent_runs
        finally:
            plane.close()

    assert runs(ServerSettings(tee="simulation")) == 4
    assert runs(ServerSettings(tee="simulation", inference_threads=3)) == 2  # --max-model-runs
    # a batching model runs one batch at a time, unless the server or the upload says otherwise
    assert runs(ServerSettings(tee="simulation", max_batch_size=4)) == 1
    assert runs(ServerSettings(tee="simulation", max_batch_size=4, max_concurrent_runs=3)) == 3
    assert runs(ServerSettings(tee="simulation"), max_batch_size=4) == 1
    assert runs(ServerSettings(tee="simulation"), max_batch_size=4, max_concurrent_runs=2) == 2


def test_batching_a_model_that_cannot_be_batched_is_refused_when_asked_else_left_off():
    from tests.models import mixes_rows

    plane = DataPlane(ServerSettings(tee="simulation", max_batch_size=8), ModelRegistry())
    try:
        with pytest.raises(InvalidInput, match=r"cannot be batched: .*rows interact"):
            _upload_with(plane, mixes_rows(), max_batch_size=4)
        with pytest.raises(InvalidInput, match=r"cannot be batched: .*fixed first dimension"):
            _upload_with(plane, identity(TensorProto.FLOAT, [1, 3]), max_batch_size=4)
        entry = _upload(plane, mixes_rows())  # the server's default: batching left off
        assert entry.queue is None  # run directly, under the run guard
        x = np.array([[1, 2, 3], [3, 2, 1]], np.float32)
        out = _infer(plane, ModelRef(entry.model_id), [("x", x)]).outputs[0][1]
        np.testing.assert_array_equal(out, x - x.mean(axis=0))
    finally:
        plane.close()


def test_more_runs_at_once_than_one_model_may_have_is_refused():
    plane = DataPlane(ServerSettings(tee="simulation", inference_threads=2), ModelRegistry())
    try:
        with pytest.raises(
            InvalidInput, match=r"max_concurrent_runs 3 is more .* \(1, --max-model-runs\)"
        ):
            _upload_with(plane, identity(TensorProto.FLOAT), max_concurrent_runs=3)
    finally:
        plane.close()


def test_concurrent_requests_through_the_plane_are_batched_and_split_exactly():
    from tests.models import gather_rows

    settings = ServerSettings(tee="simulation", max_batch_size=8, max_queue_delay_us=1)
    plane = DataPlane(settings, ModelRegistry())
    try:
        entry = _upload(plane, gather_rows(50))
        rng = np.random.default_rng(0)
        requests = [
            [
                ("ids", rng.integers(0, 50, (1, 6))),
                ("scale", rng.standard_normal((1, 1, 1)).astype(np.float32)),
            ]
            for _ in range(6)
        ]

        async def scenario():
            return await asyncio.gather(
                *(plane.infer(ModelRef(entry.model_id), r, caller=ANONYMOUS) for r in requests)
            )

        results = asyncio.run(scenario())
        assert entry.queue is not None and entry.queue.runs == 1
        for request, result in zip(requests, results, strict=True):
            alone = entry.model.predict(dict(request))
            assert result.outputs[0][1].tobytes() == alone[0][1].tobytes()
    finally:
        plane.close()


def test_deleting_a_model_closes_its_queue(plane):
    from tests.models import gather_rows

    entry = _upload_with(plane, gather_rows(10), max_batch_size=4)
    _delete(plane, ModelRef(entry.model_id))
    assert entry.queue is not None
    with pytest.raises(ModelNotReady):
        ids = np.zeros((1, 2), np.int64)
        asyncio.run(
            entry.queue.predict({"ids": ids, "scale": np.ones((1, 1, 1), np.float32)}, caller=None)
        )


def test_a_streamed_model_is_checked_and_compiled_from_its_file_without_a_copy():
    """The compile guard's child reads the server's file through a descriptor: the server
    no longer reads a streamed model back into memory to pipe it (16 MiB here)."""
    import tracemalloc

    from blindai.server.model_file import ModelFile

    plane = DataPlane(ServerSettings(tee="simulation"), ModelRegistry())
    model = matmul(2048, 2048)
    file = ModelFile(len(model))
    file.write([model])
    del model
    tracemalloc.start()
    try:
        entry = asyncio.run(plane.upload(file, name="m", optimize=True, caller=ANONYMOUS))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        plane.close()
    assert entry.size == file.size
    assert peak < 4 << 20, f"the server held {peak >> 20} MiB of Python objects"


def test_a_request_that_found_a_model_before_its_delete_leaves_no_accounts_behind(plane):
    """A request finds its model, the model is deleted, the request then runs (404: the session
    is gone) and is accounted, as /run, v2 infer and gRPC ModelInfer do: its statistics entry
    and, for a public model, its Prometheus series came back after the delete and stayed (an
    upload-run-delete loop grew /metrics without bound)."""
    from blindai.server.statistics import Timing

    entry = asyncio.run(
        plane.upload(
            identity(TensorProto.FLOAT), name="m", optimize=True, caller=ANONYMOUS, public=True
        )
    )
    found = plane.model(ModelRef("m"), caller=ANONYMOUS)
    _delete(plane, ModelRef(entry.model_id))
    x = np.zeros((1, 3), np.float32)
    with pytest.raises(ModelNotFound, match="deleted"):
        asyncio.run(plane.run(found, [("x", x)], caller=ANONYMOUS))
    plane.record(found, Timing(), success=False, protocol="v06", caller=ANONYMOUS)
    assert plane.statistics.snapshot(entry.model_id).fail.count == 0
    assert entry.model_id not in plane.metrics.render().decode()
    # a model still there is accounted as before
    kept = _upload(plane, identity(TensorProto.FLOAT))
    plane.record(kept, Timing(), success=False, protocol="v06", caller=ANONYMOUS)
    assert plane.statistics.snapshot(kept.model_id).fail.count == 1


def test_a_request_that_found_a_model_before_its_delete_leaves_no_run_slots_behind():
    """The model's run slots were made at its first run and dropped at its delete; a request
    that found the model before the delete and ran after made them again, for good: they
    were never dropped, and the same bytes uploaded again ran with them (the server's runs at
    once, not the 1 the new upload asked for)."""
    plane = DataPlane(
        ServerSettings(tee="simulation", inference_threads=4), ModelRegistry(max_models=3)
    )
    try:
        first = _upload_with(plane, identity(TensorProto.FLOAT), max_concurrent_runs=1)
        found = plane.model(ModelRef(first.model_id), caller=ANONYMOUS)
        _delete(plane, ModelRef(first.model_id))
        x = np.zeros((1, 3), np.float32)
        with pytest.raises(ModelNotFound, match="deleted"):
            asyncio.run(plane.run(found, [("x", x)], caller=ANONYMOUS))
        assert plane.schedules.model_slots == {}  # nothing kept for a model that is gone
        again = _upload_with(plane, identity(TensorProto.FLOAT), max_concurrent_runs=1)
        assert plane.schedules.slots(again)._value == 1  # its own max_concurrent_runs
    finally:
        plane.close()


@pytest.mark.parametrize("gone", ["deleted", "unloaded"])
def test_an_upload_sharing_a_session_that_goes_meanwhile_gets_its_own(tmp_path, gone):
    """An upload of bytes already loaded shares their session; when the model holding it was
    deleted (or unloaded) while the upload was being written to the store, the upload was
    registered with the released session: READY in the index, and every run a 404 ("the
    model was deleted"). It now compiles its own, and runs."""
    store = GatedStore(tmp_path / "store", lambda record: record.name == "b")
    plane = DataPlane(ServerSettings(tee="simulation"), ModelRegistry(), store=store)
    model = identity(TensorProto.FLOAT)
    x = np.ones((1, 3), np.float32)

    async def scenario() -> None:
        first = await plane.upload(model, name="a", optimize=True, caller=ANONYMOUS)
        upload = asyncio.ensure_future(
            plane.upload(model, name="b", optimize=True, caller=ANONYMOUS)
        )
        assert await asyncio.get_running_loop().run_in_executor(None, store.writing.wait, WAIT_S)
        if gone == "deleted":
            await plane.delete(ModelRef(first.model_id), caller=ANONYMOUS)
        else:
            plane.unload([first])
        store.open.set()
        second = await upload
        assert plane.is_ready(second)
        done = await plane.infer(ModelRef("b"), [("x", x)], caller=ANONYMOUS)
        assert done.outputs[0][1].tolist() == x.tolist()
        if gone == "unloaded":  # loading the first again shares the second's session
            (loaded,) = await plane.load([first], caller=ANONYMOUS)
            assert loaded.model is second.model

    run_then_close(scenario, plane, store)


def test_deleting_the_last_loaded_copy_releases_the_session_an_unloaded_copy_shared(plane):
    """Two uploads of the same bytes share a session; with one unloaded, deleting the other
    kept the session (and its memory) held with no loaded model to run it, until the unloaded
    one was deleted too. It is released; loading the unloaded one compiles it again."""
    a = _upload(plane, identity(TensorProto.FLOAT), "a")
    b = _upload(plane, identity(TensorProto.FLOAT), "b")
    assert a.model is b.model
    plane.unload([b])
    _delete(plane, ModelRef(a.model_id))
    x = np.zeros((1, 3), np.float32)
    with pytest.raises(ModelNotFound, match="deleted or unloaded"):
        a.model.predict({"x": x})
    assert plane.registry.session_for(b.share) is None
    (loaded,) = asyncio.run(plane.load([b], caller=ANONYMOUS))
    assert _infer(plane, ModelRef("b"), [(None, x)]).outputs[0][1].tolist() == x.tolist()
    assert loaded.model is not a.model


@pytest.mark.parametrize("optimize", [False, True])
def test_loading_a_model_again_compiles_it_as_it_was_uploaded(plane, optimize):
    """A v2 repository load compiled an unloaded model with onnxruntime's graph optimisations
    whatever the upload asked (a restart, from the store, kept the upload's choice): a model
    uploaded with ``optimize=False`` ran, after an unload and a load, a graph it was not
    uploaded as."""
    import onnxruntime as ort

    entry = asyncio.run(
        plane.upload(identity(TensorProto.FLOAT), name="m", optimize=optimize, caller=ANONYMOUS)
    )
    plane.unload([entry])
    (loaded,) = asyncio.run(plane.load([entry], caller=ANONYMOUS))
    assert loaded.model is not entry.model  # compiled again
    level = loaded.model._session.get_session_options().graph_optimization_level
    want = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if optimize
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    assert level == want


def test_an_upload_stored_after_a_later_one_is_still_the_older_version(tmp_path):
    """Two uploads of one name: the first reserved version 1, the second version 2, and the
    second was stored (and registered) first. The registry kept registration order, so the
    name meant version 1 (the older) until a restart, which restores in upload order and
    made it mean version 2. It means version 2 at once now, as after a restart."""
    from tests.models import add_constant

    store = GatedStore(tmp_path / "store", lambda record: record.version == 1)
    plane = DataPlane(ServerSettings(tee="simulation"), ModelRegistry(), store=store)

    async def scenario() -> None:
        first = asyncio.ensure_future(
            plane.upload(add_constant(1.0), name="m", optimize=True, caller=ANONYMOUS)
        )
        assert await asyncio.get_running_loop().run_in_executor(None, store.writing.wait, WAIT_S)
        second = await plane.upload(add_constant(2.0), name="m", optimize=True, caller=ANONYMOUS)
        store.open.set()
        assert (await first).version == 1 and second.version == 2
        assert plane.model(ModelRef("m"), caller=ANONYMOUS) == second
        assert [e.version for e in plane.versions("m", caller=ANONYMOUS)] == [1, 2]

    run_then_close(scenario, plane, store)


def test_the_numbering_of_a_name_goes_with_its_last_upload(tmp_path):
    """The registry kept the last version number of every name ever uploaded: a loop of
    uploads and deletes under new names (256 characters each) grew it without bound. A name
    nothing holds or uploads any more is forgotten, and numbered from 1 again, as after a
    restart; while an upload of it is under way its numbers are kept (no number twice)."""
    store = GatedStore(tmp_path / "store", lambda record: record.version == 2)
    plane = DataPlane(ServerSettings(tee="simulation"), ModelRegistry(), store=store)
    model = identity(TensorProto.FLOAT)

    async def scenario() -> None:
        for i in range(20):
            name = f"{i:03d}" + "n" * 250
            entry = await plane.upload(model, name=name, optimize=True, caller=ANONYMOUS)
            assert entry.version == 1
            await plane.delete(ModelRef(entry.model_id), caller=ANONYMOUS)
        assert plane.registry._versions == {}  # nothing kept for names that are gone
        first = await plane.upload(model, name="m", optimize=True, caller=ANONYMOUS)
        second = asyncio.ensure_future(
            plane.upload(model, name="m", optimize=True, caller=ANONYMOUS)
        )
        assert await asyncio.get_running_loop().run_in_executor(None, store.writing.wait, WAIT_S)
        await plane.delete(ModelRef(first.model_id), caller=ANONYMOUS)  # version 2 under way
        third = await plane.upload(model, name="m", optimize=True, caller=ANONYMOUS)
        store.open.set()
        assert ((await second).version, third.version) == (2, 3)
        for entry in plane.versions("m", caller=ANONYMOUS):
            await plane.delete(ModelRef(entry.model_id), caller=ANONYMOUS)
        again = await plane.upload(model, name="m", optimize=True, caller=ANONYMOUS)
        assert again.version == 1

    run_then_close(scenario, plane, store)


def test_a_version_deleted_while_its_name_loads_leaves_the_others_loaded():
    """Loading a name compiles its unloaded versions one by one; a version deleted while it
    compiled made the whole load a 404 ("no model with id ..." for a name that exists), and
    the versions after it stayed unloaded. They are loaded; the deleted one is left out."""
    plane = GatedPlane(ServerSettings(tee="simulation"))
    plane.release.set()

    async def scenario() -> None:
        def upload(elem_type: int) -> Any:
            model = identity(elem_type)
            return plane.upload(model, name="m", optimize=True, caller=ANONYMOUS)

        one = await upload(TensorProto.FLOAT)
        two = await upload(TensorProto.INT64)
        plane.unload([one, two])
        plane.release.clear()
        plane.compiling.clear()
        loading = asyncio.ensure_future(plane.load([one, two], caller=ANONYMOUS))
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, plane.compiling.wait, WAIT_S)  # one compiles
        await plane.delete(ModelRef(one.model_id), caller=ANONYMOUS)
        plane.release.set()
        assert [e.model_id for e in await loading] == [two.model_id]
        assert plane.model(ModelRef("m"), caller=ANONYMOUS).model_id == two.model_id  # ready
        x = np.zeros((1, 3), np.int64)
        done = await plane.infer(ModelRef("m"), [("x", x)], caller=ANONYMOUS)
        assert done.outputs[0][1].tolist() == x.tolist()

    try:
        asyncio.run(scenario())
    finally:
        plane.release.set()
        plane.close()


def test_an_upload_whose_client_leaves_while_it_compiles_keeps_nothing(tmp_path):
    """The client left while its model was checked (about a minute for this one): the upload
    stops with ClientGone, its compile child killed; nothing is stored or registered (before,
    the model was compiled, stored and registered under an id nobody received)."""
    from blindai.server.abandon import ClientGone
    from tests import attacks

    store = SealedStore(tmp_path / "store", key_material=b"k" * 32)
    plane = DataPlane(ServerSettings(tee="simulation"), ModelRegistry(), store=store)
    left = asyncio.Event()

    async def disconnected() -> None:
        await left.wait()

    async def upload_and_leave() -> None:
        upload = asyncio.ensure_future(
            plane.upload(
                attacks.wide_ifs(20000),
                name="left",
                optimize=True,
                caller=ANONYMOUS,
                disconnected=disconnected,
            )
        )
        await asyncio.sleep(0.5)  # compiling by now, or not yet started: stopped either way
        left.set()
        with pytest.raises(ClientGone):
            await asyncio.wait_for(upload, 60)

    try:
        asyncio.run(upload_and_leave())
        assert plane.registry.entries(lambda e: True) == [] and list(store.load_models()) == []
        kept = asyncio.run(  # the compile workers are free
            plane.upload(identity(TensorProto.FLOAT), name="k", optimize=True, caller=ANONYMOUS)
        )
        assert [e.model_id for e in plane.registry.entries(lambda e: True)] == [kept.model_id]
    finally:
        plane.close()


def test_an_unload_that_arrives_while_the_model_loads_wins():
    """A v2 unload that arrived while a load of the same model compiled answered 200, and the
    load, finishing after it, left the model loaded: a client that unloaded it (the last
    request it sent) found it READY and running. The unload, which came last, wins (Triton
    applies a model's loads and unloads in the order they arrive): the model stays unloaded
    and the session the load compiled is freed; a load after that loads it."""
    plane = GatedPlane(ServerSettings(tee="simulation"))
    plane.release.set()
    x = np.ones((1, 3), np.float32)

    async def scenario() -> None:
        entry = await plane.upload(
            identity(TensorProto.FLOAT), name="m", optimize=True, caller=ANONYMOUS
        )
        plane.unload([entry])
        plane.release.clear()
        plane.compiling.clear()
        loading = asyncio.ensure_future(plane.load([entry], caller=ANONYMOUS))
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, plane.compiling.wait, WAIT_S)
        plane.unload([entry])  # arrives while the load compiles
        plane.release.set()
        assert await loading == []
        assert not plane.is_ready(entry)
        assert plane.registry.session_for(entry.share) is None  # nothing left held
        with pytest.raises(ModelNotReady, match="unloaded"):
            await plane.infer(ModelRef("m"), [("x", x)], caller=ANONYMOUS)
        (again,) = await plane.load([entry], caller=ANONYMOUS)
        done = await plane.infer(ModelRef("m"), [("x", x)], caller=ANONYMOUS)
        assert done.outputs[0][1].tolist() == x.tolist() and again.model_id == entry.model_id

    try:
        asyncio.run(scenario())
    finally:
        plane.release.set()
        plane.close()


@pytest.mark.parametrize("batching", [False, True])
def test_a_request_that_found_a_model_before_an_unload_and_a_load_runs_on_the_loaded_one(
    batching,
):
    """A request finds its model when it arrives and runs later (a v2 request's body is read in
    between). One that found a model before an unload and a load ran on the released session:
    404 "deleted or unloaded" or, through a batching model's queue, 503 "removed", though the
    model was loaded. It runs on the model's new session; one that finds it still unloaded gets
    the lookup's 503 ("unloaded; load it first")."""
    from blindai.server.settings import ModelSettings

    plane = DataPlane(ServerSettings(tee="simulation"), ModelRegistry())
    x = np.ones((1, 3), np.float32)
    settings = ModelSettings(max_batch_size=4) if batching else None

    async def scenario() -> None:
        entry = await plane.upload(
            identity(TensorProto.FLOAT),
            name="m",
            optimize=True,
            caller=ANONYMOUS,
            settings=settings,
        )
        assert (entry.queue is not None) == batching
        found = plane.model(ModelRef("m"), caller=ANONYMOUS)
        plane.unload([entry])
        with pytest.raises(ModelNotReady, match="unloaded; load it first"):
            await plane.run(found, [("x", x)], caller=ANONYMOUS)
        (loaded,) = await plane.load([entry], caller=ANONYMOUS)
        assert loaded.model is not found.model
        done = await plane.run(found, [("x", x)], caller=ANONYMOUS)
        assert done.outputs[0][1].tolist() == x.tolist()
        assert done.entry.model is loaded.model
        await plane.delete(ModelRef(entry.model_id), caller=ANONYMOUS)
        with pytest.raises(ModelNotFound):  # deleted: as before
            await plane.run(found, [("x", x)], caller=ANONYMOUS)

    try:
        asyncio.run(scenario())
    finally:
        plane.close()


@pytest.mark.parametrize("when", ["before", "while-stored"])
def test_a_session_compiled_again_runs_with_the_settings_of_the_upload_that_compiled_it(
    tmp_path, when
):
    """Identical bytes share one session, which runs with the settings of the upload whose
    compile made it. When the model holding it was unloaded, before another upload of the same
    bytes or while that upload was being stored (the upload then compiles its own session),
    the new session ran with the first upload's runs at once, kept (and its run slots) for the
    unloaded model. It runs with the new upload's; the first, loaded again once the second is
    deleted, runs with its own."""
    from blindai.server.settings import ModelSettings

    store = GatedStore(tmp_path / "store", lambda record: record.name == "b")
    plane = DataPlane(ServerSettings(tee="simulation"), ModelRegistry(), store=store)
    model = identity(TensorProto.FLOAT)
    x = np.ones((1, 3), np.float32)

    async def scenario() -> None:
        first = await plane.upload(
            model,
            name="a",
            optimize=True,
            caller=ANONYMOUS,
            settings=ModelSettings(max_concurrent_runs=1),
        )
        await plane.infer(ModelRef("a"), [("x", x)], caller=ANONYMOUS)  # its slots are made
        assert plane.schedules.slots(first)._value == 1
        if when == "before":
            plane.unload([first])
        upload = asyncio.ensure_future(
            plane.upload(
                model,
                name="b",
                optimize=True,
                caller=ANONYMOUS,
                settings=ModelSettings(max_concurrent_runs=2),
            )
        )
        assert await asyncio.get_running_loop().run_in_executor(None, store.writing.wait, WAIT_S)
        if when == "while-stored":
            plane.unload([first])
        store.open.set()
        second = await upload
        assert second.model is not first.model  # compiled again
        await plane.infer(ModelRef("b"), [("x", x)], caller=ANONYMOUS)
        assert plane.schedules.slots(second)._value == 2
        await plane.delete(ModelRef(second.model_id), caller=ANONYMOUS)
        (loaded,) = await plane.load([first], caller=ANONYMOUS)
        await plane.infer(ModelRef("a"), [("x", x)], caller=ANONYMOUS)
        assert plane.schedules.slots(loaded)._value == 1

    run_then_close(scenario, plane, store)


@pytest.mark.parametrize("op_type", ["GRU", "LSTM"])
def test_a_model_that_ends_the_process_on_an_empty_tensor_refuses_empty_inputs(op_type):
    """onnxruntime's GRU and LSTM kernels end the server's process (std::terminate) on an
    input with a zero-size dimension: one request with an empty batch stopped every tenant's
    runs. Such a model's runs refuse empty inputs (400), also once unloaded and loaded again;
    other models still take empty inputs."""
    plane = DataPlane(ServerSettings(tee="simulation"), ModelRegistry())

    async def scenario() -> None:
        entry = await plane.upload(
            attacks.recurrent(op_type), name="r", optimize=True, caller=ANONYMOUS
        )
        ok = await plane.infer(
            ModelRef("r"), [("x", np.ones((3, 1, 2), np.float32))], caller=ANONYMOUS
        )
        assert ok.outputs[0][1].shape == (3, 1, 1, 2)
        assert entry.model.empty_unsafe == (op_type,)  # before the runs that would crash
        plane.unload([entry])
        (loaded,) = await plane.load([entry], caller=ANONYMOUS)
        assert loaded.model.empty_unsafe == (op_type,)
        for shape in [(3, 0, 2), (0, 1, 2)]:
            with pytest.raises(InvalidInput, match=rf"shape \[.*\] is empty; .*{op_type}"):
                await plane.infer(
                    ModelRef("r"), [("x", np.ones(shape, np.float32))], caller=ANONYMOUS
                )
        await plane.upload(
            identity(TensorProto.FLOAT, [None]), name="i", optimize=True, caller=ANONYMOUS
        )
        empty = await plane.infer(
            ModelRef("i"), [("x", np.ones((0,), np.float32))], caller=ANONYMOUS
        )
        assert empty.outputs[0][1].shape == (0,)

    try:
        asyncio.run(scenario())
    finally:
        plane.close()


def test_the_next_compile_child_starts_once_the_upload_has_compiled(plane, monkeypatch):
    """The compile guard's next spare child starts after the server's own compilation, not
    while the upload's child checks the model (its start-up took a core from the check), and
    also after a refused upload, so that the next one finds it."""
    events: list[str] = []
    guard = plane.compile_guard
    spawn, session = guard._spawn, plane.compiler.session
    monkeypatch.setattr(guard, "_spawn", lambda: events.append("spawn") or spawn())
    monkeypatch.setattr(
        plane.compiler, "session", lambda *a: events.append("session") or session(*a)
    )
    asyncio.run(
        plane.upload(identity(TensorProto.FLOAT), name=None, optimize=True, caller=ANONYMOUS)
    )
    # the first child is started for the upload (no spare was warmed); the next after it
    assert events == ["spawn", "session", "spawn"]
    assert guard._spare is not None and guard._spare.process.poll() is None
    with pytest.raises(InvalidInput):
        asyncio.run(
            plane.upload(b"\x08\x07" + b"\x00" * 64, name=None, optimize=True, caller=ANONYMOUS)
        )
    assert events == ["spawn", "session", "spawn", "spawn"]


def test_a_refused_uploads_stored_copy_is_removed_off_the_event_loop(tmp_path):
    """Uploads of one key at once pass its --max-models-per-key check together; the one that
    finds the key full when it registers has its stored copy removed (Intake.unstore). That
    removal writes the store's manifest (an fsync, and up to LOCK_WAIT_S, 10 s, for the
    manifest file's lock another process holds) and ran on the event loop, which stood every
    port still meanwhile, as a key write did before 7115e51. It now runs in a worker."""
    from blindai.server.access.principal import Principal

    store = SealedStore(tmp_path / "store", key_material=b"k" * 32)
    settings = ServerSettings(tee="simulation", max_models_per_key=1)
    plane = DataPlane(settings, ModelRegistry(), store=store)
    alice = Principal("tenant", "k_0123456789abcdef", "alice")
    removed_on: list[int] = []
    real = store.delete_model

    def spied(model_id: str, **kw: Any) -> bool:
        removed_on.append(threading.get_ident())
        return real(model_id, **kw)

    store.delete_model = spied  # type: ignore[method-assign]

    async def both() -> tuple[int, list[Any]]:
        models = [identity(TensorProto.FLOAT, [1, n]) for n in (2, 3)]
        uploads = [plane.upload(m, name=None, optimize=True, caller=alice) for m in models]
        return threading.get_ident(), await asyncio.gather(*uploads, return_exceptions=True)

    try:
        loop_thread, results = asyncio.run(both())
        refused = [r for r in results if isinstance(r, BaseException)]
        assert len(refused) == 1 and isinstance(refused[0], RegistryFull), results
        assert removed_on and loop_thread not in removed_on
        assert len(list(store.load_models())) == 1  # the refused upload's copy is gone
    finally:
        plane.close()
        store.close()
