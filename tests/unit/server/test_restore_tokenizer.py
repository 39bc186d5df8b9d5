"""A stored pipeline a newer tokenizer bound refuses is skipped at restart, by model id only."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Regex, Tokenizer, pre_tokenizers

from blindai.pipeline import Pipeline
from blindai.protocol import codec
from blindai.server.access import ANONYMOUS
from blindai.server.dataplane import DataPlane, listable
from blindai.server.registry import ModelRegistry
from blindai.server.settings import ServerSettings
from blindai.server.store import SealedStore
from tests.models import token_table_embedding
from tests.unit.pipeline._factory import VOCAB, wordpiece_json

KEY = bytes(range(32))
PATTERN = "(?:a|a){1,20}b|a"


def _plane(store: SealedStore, **limits: int) -> DataPlane:
    settings = ServerSettings(tee="simulation", admin_key_sha256="00" * 32, **limits)
    return DataPlane(settings, ModelRegistry(max_models=10), store=store)


def _pipeline(tokenizer: bytes) -> Pipeline:
    spec = {
        "input": {"kind": "text", "tokenizer": "tokenizer.json", "max_length": 8},
        "output": {"kind": "embedding"},
    }
    return Pipeline(spec, {"tokenizer.json": tokenizer})


@pytest.fixture
def store(tmp_path: Path):
    s = SealedStore(tmp_path / "store", key_material=KEY)
    yield s
    s.close()


def test_a_stored_pipeline_refused_by_a_tokenizer_bound_is_skipped_with_its_id(
    store: SealedStore, caplog: pytest.LogCaptureFixture
):
    table = np.eye(len(VOCAB), 3, dtype=np.float32)
    plane = _plane(store)
    try:
        good = asyncio.run(
            plane.upload(
                token_table_embedding(table),
                name=None,
                optimize=True,
                caller=ANONYMOUS,
                pipeline=_pipeline(wordpiece_json()),
            )
        )
    finally:
        plane.close()
    (stored,) = store.load_models()
    # stored before the server knew better: a backtracking Split, and a tokenizer.json that a
    # lower --compile-memory no longer takes
    tok = Tokenizer.from_str(wordpiece_json().decode())
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(PATTERN), "isolated")
    big = wordpiece_json() + b" " * (1 << 20)  # 80 MiB to compile, as counted
    for model_id, tokenizer in (("old-regex", tok.to_str().encode()), ("old-size", big)):
        wire = _pipeline(tokenizer).to_wire()
        store.put_model(replace(stored, model_id=model_id, pipeline=codec.dumps(wire)))
    caplog.set_level(logging.ERROR, logger="blindai.server")
    again = _plane(store)
    try:
        assert again.restore() == 2
        restored = {e.model_id for e in again.entries(listable(ANONYMOUS))}
        assert restored == {good.model_id, "old-size"}
    finally:
        again.close()
    line = "store: model old-regex cannot be loaded under this server's settings (InvalidInput)"
    assert line in caplog.text
    assert PATTERN not in caplog.text and "pre_tokenizer" not in caplog.text
    caplog.clear()
    smaller = _plane(store, compile_memory=64 << 20)
    try:
        assert smaller.restore() == 1
    finally:
        smaller.close()
    assert "store: model old-size cannot be loaded under this server's settings" in caplog.text
    assert "store: model old-regex cannot be loaded" in caplog.text
