"""A real server's log holds no native library's output: a tokenizer.json the tokenizers
library panics on (Rust prints the panic, with a backtrace, to descriptor 2 before Python sees
it) is refused, and the log says only how many bytes were written (with the tokenizer in the
server's process, --no-compile-isolation; in its own process, the default, the child's
descriptor 2 goes nowhere)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from blindai.errors import InvalidInput
from blindai.pipeline import Pipeline
from tests import models
from tests._server import connect, start_server
from tests.integration.test_pipelines import PANICKING_TOKENIZER, TEXT
from tests.unit.pipeline._factory import VOCAB


@pytest.mark.parametrize("isolation", ["--compile-isolation", "--no-compile-isolation"])
def test_a_panic_of_a_native_library_is_not_in_the_servers_log(
    tmp_path: Path, isolation: str
) -> None:
    server = start_server(tmp_path, isolation)
    try:
        with connect(server) as conn:
            pipeline = Pipeline({"input": TEXT}, {"tokenizer.json": PANICKING_TOKENIZER})
            with pytest.raises(InvalidInput, match=r"not a valid tokenizer\.json"):
                conn.upload_model(models.token_embedder(len(VOCAB)), pipeline=pipeline)
            if isolation == "--compile-isolation":  # nothing reached the server's descriptor 2
                conn.upload_model(models.token_embedder(len(VOCAB)))  # a line after the refusal
        if isolation == "--no-compile-isolation":
            log = server.wait_for_log("bytes to stderr", timeout=10)
            assert "a native library (onnxruntime, tokenizers, ...) wrote" in log
        else:
            time.sleep(0.5)  # the server's stderr reader's turn, had anything reached it
            log = server.log()
        assert "panicked at" not in log and "stack backtrace" not in log
        assert "SIMULATION MODE" in log  # the server's own lines still reach it
    finally:
        server.stop()
