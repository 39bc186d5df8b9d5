"""The data plane with callers and a sealed store: who sees, runs and deletes what; restores."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from blindai.errors import (
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    PermissionDenied,
    RegistryFull,
    ServerError,
)
from blindai.server.access import ADMIN, ANONYMOUS, Principal
from blindai.server.dataplane import DataPlane, listable
from blindai.server.registry import ModelEntry, ModelRef, ModelRegistry
from blindai.server.settings import ServerSettings
from blindai.server.store import SealedStore, StoredModel
from tests.models import add_constant
from tests.unit.server.store.test_manifest import _files_limited_to

ALICE = Principal("tenant", "k_alice", "alice")
BOB = Principal("tenant", "k_bob", "bob")
KEY = bytes(range(32))
X = np.array([[1.0, 2.0]], np.float32)
HANG = 30.0  # a guard against hanging, never a timing check
RunOne = Callable[[ModelEntry, Principal], Awaitable[None]]


def make_plane(
    store: SealedStore | None = None, max_models: int = 10, max_models_per_key: int = 10
) -> DataPlane:
    settings = ServerSettings(
        tee="simulation",
        max_models=max_models,
        max_models_per_key=max_models_per_key,
        # keys own models: an open server refuses to restore a store holding owned models
        admin_key_sha256="00" * 32,
    )
    return DataPlane(settings, ModelRegistry(max_models=max_models), store=store)


@pytest.fixture
def plane():
    p = make_plane()
    yield p
    p.close()


def upload(plane: DataPlane, value: float, caller: Principal, **kw) -> ModelEntry:
    return asyncio.run(
        plane.upload(
            add_constant(value), name=kw.pop("name", None), optimize=True, caller=caller, **kw
        )
    )


def run(plane: DataPlane, ref: ModelRef, caller: Principal) -> float:
    result = asyncio.run(plane.infer(ref, [(None, X)], caller=caller))
    return float(result.outputs[0][1][0, 0] - X[0, 0])


def delete(plane: DataPlane, ref: ModelRef, caller: Principal) -> ModelEntry:
    return asyncio.run(plane.delete(ref, caller=caller))


def refusal(action, ref: ModelRef) -> tuple[type, int, str]:
    """How a lookup of ``ref`` fails, its key or hash masked (to compare two refs)."""
    with pytest.raises(ModelNotFound) as info:
        action(ref)
    masked = str(info.value).replace(ref.key or ref.hash, "<ref>")
    return type(info.value), info.value.status_code, masked


def test_a_private_model_of_another_key_is_exactly_a_missing_one(plane: DataPlane):
    secret = upload(plane, 1, ALICE, name="fraud")
    assert run(plane, ModelRef(secret.model_id), ALICE) == 1
    pairs = [
        (ModelRef(secret.model_id), ModelRef(str(uuid.uuid4()))),
        (ModelRef("fraud"), ModelRef("fraux")),
        (ModelRef(hash=secret.hash.hex()), ModelRef(hash="ab" * 32)),
    ]
    actions = [
        lambda ref: run(plane, ref, BOB),
        lambda ref: plane.model(ref, caller=BOB),
        lambda ref: delete(plane, ref, BOB) if ref.key else run(plane, ref, BOB),
    ]
    for theirs, missing in pairs:
        for action in actions:
            assert refusal(action, theirs) == refusal(action, missing)
    assert run(plane, ModelRef(secret.model_id), ALICE) == 1  # still there


def test_public_models_run_for_every_key_and_are_deleted_by_their_owner_only(plane: DataPlane):
    shared = upload(plane, 2, ALICE, public=True)
    assert run(plane, ModelRef(shared.model_id), BOB) == 2
    with pytest.raises(PermissionDenied, match="only the key that uploaded"):
        delete(plane, ModelRef(shared.model_id), BOB)
    assert delete(plane, ModelRef(shared.model_id), ALICE) == shared


def test_the_admin_lists_and_deletes_everything_but_runs_only_its_own_and_public(plane):
    secret = upload(plane, 1, ALICE)
    shared = upload(plane, 2, BOB, public=True)
    mine = upload(plane, 3, ADMIN)
    assert plane.entries(listable(ADMIN)) == [secret, shared, mine]
    assert mine.owner == "admin"
    with pytest.raises(ModelNotFound):
        run(plane, ModelRef(secret.model_id), ADMIN)
    assert run(plane, ModelRef(shared.model_id), ADMIN) == 2
    delete(plane, ModelRef(secret.model_id), ADMIN)
    delete(plane, ModelRef(shared.model_id), ADMIN)
    assert plane.entries(listable(ADMIN)) == [mine]


def test_lists_hold_what_the_caller_may_run(plane: DataPlane):
    a = upload(plane, 1, ALICE)
    b = upload(plane, 2, BOB)
    shared = upload(plane, 3, BOB, public=True)
    assert plane.entries(listable(ALICE)) == [a, shared]
    assert plane.entries(listable(BOB)) == [b, shared]
    assert plane.entries(listable(ANONYMOUS)) == [a, b, shared]
    assert (a.owner, a.public, a.size) == ("k_alice", False, len(add_constant(1)))


def test_run_without_id_is_the_newest_model_the_caller_may_run(plane: DataPlane):
    upload(plane, 1, ALICE)
    upload(plane, 2, BOB, public=True)
    upload(plane, 3, ALICE, name="x")
    upload(plane, 4, BOB)
    assert run(plane, ModelRef(), ALICE) == 3
    assert run(plane, ModelRef(), BOB) == 4
    carol = Principal("tenant", "k_carol", "carol")
    assert run(plane, ModelRef(), carol) == 2  # only the public one


def test_run_without_id_with_nothing_runnable_is_not_found(plane: DataPlane):
    upload(plane, 1, ALICE)
    with pytest.raises(ModelNotFound, match="no model"):
        run(plane, ModelRef(), BOB)


def test_names_resolve_among_the_callers_models(plane: DataPlane):
    upload(plane, 1, ALICE, name="clf")
    upload(plane, 2, BOB, name="clf")
    assert run(plane, ModelRef("clf"), ALICE) == 1
    assert run(plane, ModelRef("clf"), BOB) == 2
    assert delete(plane, ModelRef("clf"), ALICE).owner == "k_alice"
    assert run(plane, ModelRef("clf"), BOB) == 2


def test_another_keys_private_name_does_not_show_in_version_numbers(plane: DataPlane):
    """Versions were counted over every key's uploads of a name: bob's first upload named
    "fraud" was version 2 (it reads in v2 metadata and every v2 reply), telling him that
    another key holds (or held) a private model of that name. Each key numbers its own."""
    upload(plane, 1, ALICE, name="fraud")
    theirs = upload(plane, 2, BOB, name="fraud")
    missing = upload(plane, 3, BOB, name="fraux")
    assert theirs.version == missing.version == 1
    assert upload(plane, 4, BOB, name="fraud").version == 2
    assert upload(plane, 5, ALICE, name="fraud").version == 2


def test_another_keys_public_upload_does_not_take_over_a_callers_name(plane: DataPlane):
    """A name meant the newest upload of it the caller may run: alice uploading a public model
    named as bob's made bob's runs of that name (and of no name) run hers, with his inputs,
    and his delete of it a 403. A name means the caller's own uploads when it has one."""
    upload(plane, 2, BOB, name="clf")
    hers = upload(plane, 1, ALICE, name="clf", public=True)
    carol = Principal("tenant", "k_carol", "carol")
    assert run(plane, ModelRef("clf"), BOB) == 2
    assert run(plane, ModelRef("clf", version="1"), BOB) == 2
    assert run(plane, ModelRef(), BOB) == 2
    assert [e.owner for e in plane.versions("clf", caller=BOB)] == ["k_bob"]
    assert run(plane, ModelRef("clf"), carol) == 1  # no "clf" of her own: the public one
    assert plane.managed_versions("clf", caller=BOB)[0].owner == "k_bob"
    assert delete(plane, ModelRef("clf"), BOB).owner == "k_bob"
    assert run(plane, ModelRef("clf"), BOB) == 1  # now only alice's public one
    with pytest.raises(PermissionDenied):
        delete(plane, ModelRef("clf"), BOB)
    assert delete(plane, ModelRef("clf"), ALICE) == hers


# -- with the sealed store


@pytest.fixture
def store(tmp_path: Path):
    s = SealedStore(tmp_path / "store", key_material=KEY)
    yield s
    s.close()


def test_uploads_and_deletes_reach_the_store_and_restore(store: SealedStore):
    plane = make_plane(store)
    try:
        a = upload(plane, 1, ALICE, name="a")
        b = upload(plane, 2, BOB, public=True)
        c = upload(plane, 1, ANONYMOUS)  # same bytes as a, another owner: a session each
        gone = upload(plane, 4, BOB)
        delete(plane, ModelRef(gone.model_id), BOB)
        stored = {m.model_id: m for m in store.load_models()}
        assert set(stored) == {a.model_id, b.model_id, c.model_id}
        assert stored[a.model_id].model == add_constant(1)
    finally:
        plane.close()
    again = make_plane(store)
    try:
        assert again.restore() == 3
        restored = again.entries(listable(ANONYMOUS))
        fields = [
            (e.model_id, e.hash, e.name, e.owner, e.public, e.size, e.uploaded_ns) for e in restored
        ]
        assert fields == [
            (e.model_id, e.hash, e.name, e.owner, e.public, e.size, e.uploaded_ns)
            for e in (a, b, c)
        ]
        assert restored[0].model is not restored[2].model  # two owners: two sessions again
        assert run(again, ModelRef(), ALICE) == 1  # c, the newest, has no owner: any key runs it
        assert run(again, ModelRef(b.model_id), ALICE) == 2
        with pytest.raises(ModelNotFound):
            run(again, ModelRef(a.model_id), BOB)
    finally:
        again.close()


def test_a_model_onnxruntime_refuses_on_restore_is_skipped(store: SealedStore, caplog):
    plane = make_plane(store)
    good = upload(plane, 1, ALICE)
    plane.close()
    junk = b"not an onnx model"
    store.put_model(
        StoredModel(
            model_id="junk",
            name=None,
            owner=None,
            public=False,
            hash=hashlib.sha256(junk).digest(),
            uploaded_ns=1,
            optimize=True,
            model=junk,
        )
    )
    again = make_plane(store)
    try:
        assert again.restore() == 1
        assert [e.model_id for e in again.entries(listable(ANONYMOUS))] == [good.model_id]
        assert "store: model junk cannot be loaded under this server's settings" in caplog.text
        assert "(InvalidInput)" in caplog.text
    finally:
        again.close()


def test_a_stored_model_refused_on_restore_is_logged_without_its_names(store, caplog):
    """The refusal's message quotes the model (here the external file one of its initializers
    names): the log says which model and what kind of error, nothing of the model."""
    from tests import attacks

    hostile = attacks.external_initializer("SECRET-7f3a-PATH.bin")
    store.put_model(
        StoredModel(
            model_id="hostile",
            name=None,
            owner=None,
            public=False,
            hash=hashlib.sha256(hostile).digest(),
            uploaded_ns=1,
            optimize=True,
            model=hostile,
        )
    )
    plane = make_plane(store)
    try:
        assert plane.restore() == 0
        assert "store: model hostile cannot be loaded" in caplog.text
        assert "SECRET-7f3a" not in caplog.text
    finally:
        plane.close()


class FullStore(SealedStore):
    """A real store whose disk is full."""

    def put_model(self, entry: StoredModel) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_an_upload_that_cannot_be_stored_is_refused_and_not_registered(tmp_path: Path):
    with FullStore(tmp_path / "store", key_material=KEY) as full:
        plane = make_plane(full)
        try:
            with pytest.raises(ServerError, match="could not be stored"):
                upload(plane, 1, ALICE)
            assert plane.entries(listable(ADMIN)) == []
        finally:
            plane.close()


def test_a_full_registry_refuses_before_writing(store: SealedStore):
    plane = make_plane(store, max_models=1)
    try:
        upload(plane, 1, ALICE)
        with pytest.raises(RegistryFull):
            upload(plane, 2, ALICE)
        assert len(list(store.load_models())) == 1
    finally:
        plane.close()


def test_one_key_cannot_fill_the_server_for_the_others():
    """A tenant's key holds at most --max-models-per-key models: Alice's third upload is
    refused, Bob's first is not; the admin key is held to --max-models only."""
    plane = make_plane(max_models=6, max_models_per_key=2)
    try:
        mine = [upload(plane, v, ALICE) for v in (1, 2)]
        with pytest.raises(RegistryFull, match=r"this key holds 2 models, the most one key may"):
            upload(plane, 3, ALICE)
        assert run(plane, ModelRef(upload(plane, 4, BOB).model_id), BOB) == 4
        for v in (5, 6, 7):
            upload(plane, v, ADMIN)
        delete(plane, ModelRef(mine[0].model_id), ALICE)
        assert upload(plane, 8, ALICE).owner == "k_alice"  # a slot of hers came back
        with pytest.raises(RegistryFull, match=r"--max-models 6"):
            upload(plane, 9, ADMIN)
    finally:
        plane.close()


def test_the_per_key_bound_holds_for_uploads_that_raced_past_the_first_check():
    """Uploads of one key in flight together all pass the check made before compiling; the
    registry checks again when each is added."""
    registry = ModelRegistry(max_models=10)
    plane = make_plane()
    try:
        compiled = upload(plane, 1, ALICE).model
        registry.add(b"a" * 32, compiled, "m", owner="k_alice", most_owned=1)
        with pytest.raises(RegistryFull, match="--max-models-per-key 1"):
            registry.add(b"b" * 32, compiled, "m", owner="k_alice", most_owned=1)
        registry.add(b"c" * 32, compiled, "m", owner="k_bob", most_owned=1)
    finally:
        plane.close()


def test_a_store_holding_more_than_max_models_restores_what_fits_and_keeps_the_rest(
    store: SealedStore, caplog
):
    """A lower --max-models after a restart, or entries the host put back: the server starts
    with the oldest models that fit, and deletes none (it deleted one from the store and
    refused to start)."""
    plane = make_plane(store)
    try:
        first, second, third = (upload(plane, v, ALICE).model_id for v in (1, 2, 3))
    finally:
        plane.close()
    smaller = make_plane(store, max_models=2)
    try:
        assert smaller.restore() == 2
        assert [e.model_id for e in smaller.entries(listable(ADMIN))] == [first, second]
        assert f"store: model {third} not restored, it stays in the store" in caplog.text
        assert run(smaller, ModelRef(second), ALICE) == 2
    finally:
        smaller.close()
    assert {m.model_id for m in store.load_models()} == {first, second, third}
    again = make_plane(store)
    try:
        assert again.restore() == 3
    finally:
        again.close()


class CountingPlane(DataPlane):
    """A real data plane that counts the sessions it holds compiled at once (its compiler's
    ``checked`` step wrapped: uploads and restores go through it)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.live = self.peak = 0
        checked = self.compiler.checked

        def counting(model, optimize, schedule, abandon=None):
            compiled = checked(model, optimize, schedule, abandon)
            self.live += 1
            self.peak = max(self.peak, self.live)
            unload = compiled[0].unload

            def counted() -> None:
                self.live -= 1
                unload()

            compiled[0].unload = counted
            return compiled

        self.compiler.checked = counting  # type: ignore[method-assign]


def test_entries_put_back_beyond_max_models_are_never_compiled_all_at_once(store: SealedStore):
    """The host may put back every entry it ever saw: restoring compiled them all before
    registering any (memory: the store's size, not --max-models)."""
    plane = make_plane(store, max_models=10)
    try:
        ids = [upload(plane, v, ALICE).model_id for v in range(6)]
    finally:
        plane.close()
    settings = ServerSettings(tee="simulation", max_models=2, admin_key_sha256="00" * 32)
    small = CountingPlane(settings, ModelRegistry(max_models=2), store=store)
    try:
        assert small.restore() == 2
        assert [e.model_id for e in small.entries(listable(ADMIN))] == ids[:2]
        assert small.peak <= 3 and small.live == 2
        assert run(small, ModelRef(ids[1]), ALICE) == 1
    finally:
        small.close()


def test_delete_needs_an_id_or_name(plane: DataPlane):
    with pytest.raises(InvalidInput):
        delete(plane, ModelRef(), ADMIN)


def test_a_pipeline_is_stored_with_its_model_and_restored(store: SealedStore):
    from PIL import Image

    from blindai.pipeline import Classification, Pipeline
    from tests import models
    from tests.unit.pipeline._factory import encode

    pipe = Pipeline(
        {
            "input": {"kind": "image", "resize": [16, 16]},
            "output": {"kind": "labels", "labels": "labels.txt", "top_k": 3},
        },
        {"labels.txt": b"red\ngreen\nblue\n"},
    )
    png = encode(Image.new("RGB", (50, 30), (200, 30, 10)), "PNG")
    plane = make_plane(store)
    try:
        entry = asyncio.run(
            plane.upload(
                models.colour_classifier(16),
                name="colours",
                optimize=True,
                caller=ALICE,
                pipeline=pipe,
            )
        )
    finally:
        plane.close()
    (stored,) = store.load_models()
    assert stored.pipeline is not None and stored.model == models.colour_classifier(16)
    again = make_plane(store)
    try:
        assert again.restore() == 1
        ref = ModelRef(entry.model_id)
        entry = again.model(ref, caller=ALICE)
        result = asyncio.run(again.run_raw(entry, "image", png, caller=ALICE)).result
        assert isinstance(result, Classification) and result.top.label == "red"
        with pytest.raises(ModelNotFound):
            again.model(ref, caller=BOB)
    finally:
        again.close()


def test_versions_survive_a_restart(store: SealedStore):
    plane = make_plane(store)
    try:
        first = upload(plane, 1, ALICE, name="clf")
        second = upload(plane, 2, ALICE, name="clf")
        delete(plane, ModelRef(first.model_id), ALICE)
    finally:
        plane.close()
    again = make_plane(store)
    try:
        again.restore()
        (kept,) = again.entries(listable(ALICE))
        assert (kept.model_id, kept.version) == (second.model_id, 2)
        third = upload(again, 3, ALICE, name="clf")
        assert third.version == 3
    finally:
        again.close()


# -- the performance paths: streamed uploads, batching queues, per-model settings ------------


def _streamed(model: bytes):
    from blindai.server.model_file import ModelFile

    file = ModelFile(len(model))
    file.write([model[:7], model[7:]])
    return file


def test_a_streamed_upload_is_owned_stored_and_restored(store: SealedStore):
    plane = make_plane(store)
    try:
        entry = asyncio.run(
            plane.upload(_streamed(add_constant(5)), name="s", optimize=True, caller=ALICE)
        )
        assert (entry.owner, entry.size) == ("k_alice", len(add_constant(5)))
        assert run(plane, ModelRef("s"), ALICE) == 5
        with pytest.raises(ModelNotFound):
            run(plane, ModelRef("s"), BOB)
        (stored,) = store.load_models()
        assert stored.model == add_constant(5)  # read back from the file for the store
    finally:
        plane.close()
    again = make_plane(store)
    try:
        assert again.restore() == 1
        assert run(again, ModelRef("s"), ALICE) == 5
    finally:
        again.close()


def alices_batching(
    plane: DataPlane, model: bytes, name: str, *, public: bool = False, **settings: int
) -> ModelEntry:
    """Alice's upload of ``model`` with batching on (``max_batch_size`` 8 unless given)."""
    from blindai.server.settings import ModelSettings

    settings.setdefault("max_batch_size", 8)
    how = ModelSettings(**settings)
    upload = plane.upload(
        model, name=name, optimize=True, caller=ALICE, public=public, settings=how
    )
    return asyncio.run(upload)


def test_a_batching_model_runs_only_for_the_keys_that_may_run_it(plane: DataPlane):
    from tests.models import gather_rows

    entry = alices_batching(plane, gather_rows(10), "b", max_batch_size=4)
    assert entry.queue is not None and entry.owner == "k_alice"
    feeds = [("ids", np.zeros((1, 2), np.int64)), ("scale", np.ones((1, 1, 1), np.float32))]
    done = asyncio.run(plane.infer(ModelRef("b"), feeds, caller=ALICE))
    assert done.outputs[0][1].shape == (1, 2, 4)
    with pytest.raises(ModelNotFound):
        asyncio.run(plane.infer(ModelRef("b"), feeds, caller=BOB))
    with pytest.raises(ModelNotFound):
        delete(plane, ModelRef("b"), BOB)
    delete(plane, ModelRef("b"), ALICE)
    with pytest.raises(ModelNotReady):  # the queue went with the model
        asyncio.run(entry.queue.predict(dict(feeds), caller=ALICE.key_id))


def test_a_batch_never_shows_one_key_another_keys_inputs(plane: DataPlane):
    """Alice's public model passes the batching probe but adds a batch's sum to every row
    when one row holds her trigger: her run beside Bob's must not show her his input."""
    from tests.models import leaks_rows

    model = leaks_rows(777.0)
    entry = alices_batching(plane, model, "leak", public=True, max_queue_delay_us=1)
    assert entry.queue is not None and entry.queue.batching
    bob = np.array([[12.0, 34.0]], np.float32)
    trigger = np.array([[777.0, 0.0]], np.float32)

    async def together():  # both queued before the queue's first run starts
        return await asyncio.gather(
            plane.infer(ModelRef("leak"), [(None, trigger)], caller=ALICE),
            plane.infer(ModelRef("leak"), [(None, bob)], caller=BOB),
            plane.infer(ModelRef("leak"), [(None, trigger)], caller=ALICE),
        )

    runs = entry.queue.runs
    alice, his, again = asyncio.run(together())
    assert entry.queue.runs == runs + 2  # Alice's two requests batched, Bob's alone
    np.testing.assert_array_equal(his.outputs[0][1], bob)
    for mine in (alice, again):  # her batch's sum is her own rows' only
        np.testing.assert_array_equal(mine.outputs[0][1], trigger + 2 * trigger)


@contextlib.contextmanager
def _slow_models(threads: int) -> Iterator[tuple[DataPlane, list[ModelEntry], RunOne, list[str]]]:
    """A plane of ``threads`` inference threads with three slow models of Alice's and one of
    Bob's; ``run_one(model, who)`` runs one and appends the caller's key id to the list."""
    from tests.models import slow_add

    settings = ServerSettings(tee="simulation", inference_threads=threads, inline_run_us=0)
    plane = DataPlane(settings, ModelRegistry(max_models=10))
    try:
        models = [
            asyncio.run(plane.upload(slow_add(v), name=None, optimize=True, caller=who))
            for v, who in enumerate((ALICE, ALICE, ALICE, BOB))
        ]
        ended: list[str] = []

        async def run_one(entry: ModelEntry, who: Principal) -> None:
            await plane.infer(ModelRef(entry.model_id), [(None, X)], caller=who)
            ended.append(who.key_id or "")

        yield plane, models, run_one, ended
    finally:
        plane.close()


def test_a_keys_burst_of_runs_takes_turns_with_another_keys_run():
    """One inference thread; Alice starts runs of three models at once, then Bob one of his:
    his run is not held behind all of hers (it was the last of the four to end)."""
    with _slow_models(1) as (_, models, run_one, ended):

        async def burst() -> None:
            await asyncio.gather(*map(run_one, models, (ALICE, ALICE, ALICE, BOB)))

        asyncio.run(burst())
        assert len(ended) == 4 and ended.index("k_bob") <= 2, ended


def test_a_key_holds_at_most_its_share_of_the_inference_threads():
    """Two inference threads, so a tenant's key runs one at a time (--max-key-runs: half).
    Alice's three long runs over three models are under way when Bob sends his: the other
    thread is his at once, and his run ends before her second. Taking turns alone, hers held
    both threads and his ended third at best."""
    with _slow_models(2) as (plane, models, run_one, ended):
        assert plane.settings.key_runs == 1

        async def burst() -> None:
            hers = [asyncio.ensure_future(run_one(m, ALICE)) for m in models[:3]]
            # her runs are under way: both threads run hers, or one does and the rest wait
            while plane.runs.counter.running < 2 and not plane._infer._held:
                await asyncio.sleep(0.001)
            await asyncio.gather(run_one(models[3], BOB), *hers)

        asyncio.run(burst())
        assert len(ended) == 4 and ended.index("k_bob") <= 1, ended


def test_a_keys_burst_of_uploads_takes_turns_with_another_keys_upload(plane: DataPlane):
    """Alice's four uploads reach the two compile workers before Bob's one: his is not
    compiled after all of hers."""
    import threading

    gate = threading.Event()
    compiled: list[float] = []
    real = plane.compiler.checked

    def held(model, optimize, schedule, abandon=None):  # held until all are queued
        gate.wait(10)
        compiled.append(float(model_value(model)))
        return real(model, optimize, schedule, abandon)

    def model_value(model) -> float:
        return next(v for v in range(10) if add_constant(v) == bytes(model))

    plane.compiler.checked = held  # type: ignore[method-assign]

    async def burst() -> None:
        uploads = [
            asyncio.ensure_future(
                plane.upload(add_constant(v), name=None, optimize=True, caller=who)
            )
            for v, who in ((1, ALICE), (2, ALICE), (3, ALICE), (4, ALICE), (5, BOB))
        ]
        await asyncio.sleep(0)  # each upload's task runs up to its compile job's submission
        gate.set()
        await asyncio.gather(*uploads)

    asyncio.run(burst())
    # FIFO took Bob's last; in turns, it goes before Alice's last at the latest
    assert sorted(compiled) == [1, 2, 3, 4, 5] and compiled.index(5) <= 3, compiled


def test_a_keys_burst_of_loads_takes_turns_with_another_keys_load(plane: DataPlane):
    """Alice's four loads (four unloaded models, four requests at once) reach the two compile
    workers before Bob's one: his is compiled second at the latest, as her uploads' turns
    would have it. Loads were submitted with no key: hers took both workers and his came last.

    Her key compiles one model at a time, so the second worker is his: the compiles are held
    until both workers hold one. Opening them as soon as all five were submitted failed 4 runs
    in 40 beside four busy loops on two cores ([1, 2, 5, 3, 4]): her first compile ended and her
    second began on the same worker before the other worker's thread ran to take his."""
    import threading

    entries = [upload(plane, v, ALICE) for v in (1, 2, 3, 4)] + [upload(plane, 5, BOB)]
    plane.unload(entries)
    gate = threading.Event()
    compiled: list[float] = []  # in the order the workers took them
    real = plane.compiler.compiled

    def held(model, optimize, *rest):  # held until both workers hold one
        compiled.append(float(next(v for v in range(10) if add_constant(v) == bytes(model))))
        gate.wait(HANG)
        return real(model, optimize, *rest)

    plane.compiler.compiled = held  # type: ignore[method-assign]

    async def burst() -> None:
        loads = [
            asyncio.ensure_future(plane.load([entry], caller=who))
            for entry, who in zip(entries, (ALICE, ALICE, ALICE, ALICE, BOB), strict=True)
        ]
        deadline = time.monotonic() + HANG  # a guard against hanging, not a timing check
        while len(compiled) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        gate.set()
        await asyncio.gather(*loads)

    asyncio.run(burst())
    assert sorted(compiled) == [1, 2, 3, 4, 5] and compiled.index(5) <= 1, compiled
    assert all(plane.registry.is_ready(e) for e in plane.registry.entries(lambda e: True))


def test_upload_settings_survive_a_restart(store: SealedStore):
    from blindai.server.settings import ModelSettings
    from tests.models import gather_rows

    plane = make_plane(store)
    try:
        asked = ModelSettings(max_batch_size=16, max_queue_delay_us=500)
        asyncio.run(
            plane.upload(gather_rows(10), name="b", optimize=True, caller=ALICE, settings=asked)
        )
        (stored,) = store.load_models()
        assert dict(stored.settings) == {"max_batch_size": 16, "max_queue_delay_us": 500}
    finally:
        plane.close()
    again = make_plane(store)
    try:
        assert again.restore() == 1
        entry = again.model(ModelRef("b"), caller=ALICE)
        assert entry.queue is not None
        policy = entry.queue.policy
        assert (policy.max_batch_size, policy.max_queue_delay_us) == (16, 500)
    finally:
        again.close()


def test_identical_bytes_of_two_keys_are_two_sessions_and_of_one_key_one(plane: DataPlane):
    """Identical bytes shared one session whoever uploaded them: a second key's upload ran with
    the first key's settings and in its queue (its own settings silently ignored), and was
    quick, since nothing was compiled (telling it another key held those bytes). Now each key
    has its own session; a key's own identical uploads still share one."""
    from blindai.server.settings import ModelSettings
    from tests.models import gather_rows

    def up(target: DataPlane, caller: Principal, batch: int) -> ModelEntry:
        settings = ModelSettings(max_batch_size=batch)
        return asyncio.run(
            target.upload(
                gather_rows(10), name=None, optimize=True, caller=caller, settings=settings
            )
        )

    alice, bob, alice_again = up(plane, ALICE, 4), up(plane, BOB, 16), up(plane, ALICE, 16)
    assert alice.hash == bob.hash == alice_again.hash
    assert bob.model is not alice.model and bob.queue is not alice.queue
    assert alice_again.model is alice.model and alice_again.queue is alice.queue
    assert bob.queue is not None and bob.queue.policy.max_batch_size == 16
    assert alice_again.queue is not None and alice_again.queue.policy.max_batch_size == 4
    delete(plane, ModelRef(alice.model_id), ALICE)
    delete(plane, ModelRef(alice_again.model_id), ALICE)  # Alice's session goes, Bob's stays
    feeds = [("ids", np.zeros((1, 2), np.int64)), ("scale", np.ones((1, 1, 1), np.float32))]
    done = asyncio.run(plane.infer(ModelRef(bob.model_id), feeds, caller=BOB))
    assert done.outputs[0][1].shape == (1, 2, 4)


@pytest.mark.parametrize("newer_first", [True, False])
def test_a_keys_identical_uploads_come_back_with_the_oldest_ones_settings(
    store: SealedStore, newer_first: bool
):
    """After a restart, a key's identical uploads share one session again, two keys' uploads a
    session each; the shared one runs with the settings of the oldest upload, as it did when
    they were uploaded. The store gives entries in file-name order (keyed hashes of the ids):
    the newer upload first made the session run with its settings."""
    from blindai.server.settings import ModelSettings
    from tests.models import gather_rows

    first = make_plane(store)
    try:
        for caller, batch in ((ALICE, 4), (BOB, 16), (ALICE, 16)):
            settings = ModelSettings(max_batch_size=batch)
            asyncio.run(
                first.upload(
                    gather_rows(10), name=None, optimize=True, caller=caller, settings=settings
                )
            )
    finally:
        first.close()
    records = sorted(store.load_models(), key=lambda r: r.uploaded_ns)
    older, newer = (r for r in records if r.owner == "k_alice")
    while True:  # new ids whose entries the store reads in the order the test wants
        ids = (str(uuid.uuid4()), str(uuid.uuid4()))
        names = [store._path(b"m", i).name for i in ids]
        if (names[1] < names[0]) == newer_first:
            break
    for record, new_id in ((older, ids[0]), (newer, ids[1])):
        store.delete_model(record.model_id)
        store.put_model(replace(record, model_id=new_id))
    again = make_plane(store)
    try:
        assert again.restore() == 3
        entries = again.entries(lambda e: True)
        assert len({id(e.model) for e in entries}) == 2
        policies = sorted((e.owner, e.queue.policy.max_batch_size) for e in entries if e.queue)
        assert policies == [("k_alice", 4), ("k_alice", 4), ("k_bob", 16)]
    finally:
        again.close()


class InterruptedRegistry(ModelRegistry):
    """A real registry where a signal (Ctrl-C, SIGINT's KeyboardInterrupt) arrives while the
    first model is being added."""

    def __init__(self, max_models: int) -> None:
        super().__init__(max_models=max_models)
        self.interrupted = False

    def add(self, *args, **kwargs) -> ModelEntry:
        if not self.interrupted:
            self.interrupted = True
            raise KeyboardInterrupt
        return super().add(*args, **kwargs)


def test_a_restore_interrupted_by_a_signal_deletes_nothing_from_the_store(store: SealedStore):
    """The upload's clean-up (a model the registry refused must not come back) ran on a restore
    too: stopping the server while it restored deleted a model for ever."""
    plane = make_plane(store)
    try:
        kept = {upload(plane, v, ALICE).model_id for v in (1, 2)}
    finally:
        plane.close()
    settings = ServerSettings(tee="simulation", max_models=10, admin_key_sha256="00" * 32)
    stopped = DataPlane(settings, InterruptedRegistry(max_models=10), store=store)
    try:
        with pytest.raises(KeyboardInterrupt):
            stopped.restore()
    finally:
        stopped.close()
    assert {m.model_id for m in store.load_models()} == kept
    again = make_plane(store)
    try:
        assert again.restore() == 2
    finally:
        again.close()


def test_a_tenants_pipeline_inputs_hold_at_most_half_the_preprocessing_memory(plane):
    """Alice's inputs in progress hold half of --max-preprocess-memory: her next one is 503 at
    once, Bob's is served (the budget's other half)."""
    from PIL import Image

    from blindai.errors import ServerBusy
    from blindai.pipeline import Pipeline
    from tests import models
    from tests.unit.pipeline._factory import encode

    pipe = Pipeline({"input": {"kind": "image", "resize": [16, 16]}}, {})
    png = encode(Image.new("RGB", (50, 30), (200, 30, 10)), "PNG")
    model = models.colour_classifier(16)
    mine = asyncio.run(plane.upload(model, name="a", optimize=True, caller=ALICE, pipeline=pipe))
    public = asyncio.run(
        plane.upload(model, name="b", optimize=True, caller=BOB, pipeline=pipe, public=True)
    )
    budget = plane.preprocess_budget
    with budget.holding(budget.per_key - 1000, ALICE.key_id):
        with pytest.raises(ServerBusy, match="one key may hold"):
            asyncio.run(plane.run_raw(mine, "image", png, caller=ALICE))
        assert asyncio.run(plane.run_raw(public, "image", png, caller=BOB)).outputs
    assert asyncio.run(plane.run_raw(mine, "image", png, caller=ALICE)).outputs


def test_a_refused_uploads_copy_is_removed_with_the_next_write_when_not_now(
    store: SealedStore, caplog: pytest.LogCaptureFixture
):
    """An upload stored, then refused (the registry full meanwhile): its copy is taken out of
    the store, and must not come back. When the manifest cannot be written at that moment (a
    full disk), the removal waits for the next write; before, the OSError replaced the upload's
    own error, and the copy came back at the next start."""
    payload = add_constant(1)
    refused = StoredModel(
        model_id="refused",
        name=None,
        owner="k_alice",
        public=False,
        hash=hashlib.sha256(payload).digest(),
        uploaded_ns=1,
        optimize=True,
        model=payload,
    )
    store.put_model(refused)
    plane = make_plane(store)
    try:
        with _files_limited_to(16):
            asyncio.run(plane.intake.unstore(refused))  # the upload's own error goes on up
        assert "store: a refused upload's copy could not be removed yet" in caplog.text
        store.put_model(replace(refused, model_id="later"))
    finally:
        plane.close()
    store.close()
    reopened = SealedStore(store.directory, key_material=KEY)
    try:
        assert [m.model_id for m in reopened.load_models()] == ["later"]
    finally:
        reopened.close()
