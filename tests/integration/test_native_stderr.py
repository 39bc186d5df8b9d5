"""A real server's log holds no native library's output: a tokenizer.json the tokenizers
library panics on (Rust prints the panic, with a backtrace, to descriptor 2 before Python sees
it) is refused, and the log says only how many bytes were written."""

from __future__ import annotations

from pathlib import Path

import pytest

from blindai.errors import InvalidInput
from blindai.pipeline import Pipeline
from tests import models
from tests._server import connect, start_server
from tests.integration.test_pipelines import PANICKING_TOKENIZER, TEXT
from tests.unit.pipeline._factory import VOCAB


def test_a_panic_of_a_native_library_is_not_in_the_servers_log(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        with connect(server) as conn:
            pipeline = Pipeline({"input": TEXT}, {"tokenizer.json": PANICKING_TOKENIZER})
            with pytest.raises(InvalidInput, match=r"not a valid tokenizer\.json"):
                conn.upload_model(models.token_embedder(len(VOCAB)), pipeline=pipeline)
        log = server.wait_for_log("bytes to stderr", timeout=10)
        assert "panicked at" not in log and "stack backtrace" not in log
        assert "a native library (onnxruntime, tokenizers, ...) wrote" in log
        assert "SIMULATION MODE" in log  # the server's own lines still reach it
    finally:
        server.stop()
