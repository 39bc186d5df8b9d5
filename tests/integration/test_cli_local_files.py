"""The files ``blindai run`` reads and writes on the user's machine, made hostile: an image or
audio file far larger than any server takes (a sparse file), ``.npy`` inputs whose data would
pass every bound, and symbolic links planted where outputs are written.

Each is the real ``blindai`` command against the session's simulation server over loopback TLS
(tests/integration/_cli.py); each refusal is one readable line naming the file.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from blindai.pipeline import Pipeline
from tests import models
from tests._server import ServerProcess, connect
from tests.integration._cli import cli, ok, one_error_line, target
from tests.unit.pipeline._factory import wordpiece_json

MiB = 1 << 20


@pytest.fixture(scope="module")
def dense(server: ServerProcess) -> Iterator[str]:
    """A dense layer x [?, 4] -> y [?, 2], by name."""
    name = f"dense-{uuid.uuid4().hex[:8]}"
    with connect(server) as conn:
        uploaded = conn.upload_model(models.matmul(4, 2), model_name=name)
    yield name
    with connect(server) as conn:
        conn.delete_model(uploaded.model_id)


@pytest.fixture(scope="module")
def embedder(server: ServerProcess) -> Iterator[str]:
    """A text model whose pipeline's result is an embedding (saved as embedding.npy)."""
    name = f"embed-{uuid.uuid4().hex[:8]}"
    table = np.eye(40, 3, dtype=np.float32)
    pipeline = Pipeline(
        {
            "input": {"kind": "text", "tokenizer": "tokenizer.json", "max_length": 8},
            "output": {"kind": "embedding"},
        },
        {"tokenizer.json": wordpiece_json()},
    )
    with connect(server) as conn:
        model = models.token_table_embedding(table)
        uploaded = conn.upload_model(model, model_name=name, pipeline=pipeline)
    yield name
    with connect(server) as conn:
        conn.delete_model(uploaded.model_id)


@pytest.fixture
def x_file(tmp_path: Path) -> Path:
    path = tmp_path / "x.npy"
    np.save(path, np.ones((3, 4), np.float32))
    return path


# --- outputs ---------------------------------------------------------------------------------


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file outside the output folder that a planted link points at (a ~/.bashrc)."""
    path = tmp_path / "home" / ".bashrc"
    path.parent.mkdir()
    path.write_text("export PATH=/usr/bin\n")
    return path


def test_run_does_not_write_through_a_link_planted_at_an_output(
    server: ServerProcess, dense: str, tmp_path: Path, x_file: Path, victim: Path
) -> None:
    # y.npy -> ~/.bashrc in a shared or downloaded output folder: np.save followed the link
    # and overwrote the file it named, outside --output-dir
    out = tmp_path / "out"
    out.mkdir()
    (out / "y.npy").symlink_to(victim)
    r = cli("run", dense, "--input", f"x={x_file}", "--output-dir", out, *target(server))
    line = one_error_line(r, "ConfigurationError", 2)
    assert f"cannot write {out / 'y.npy'}: it is a symbolic link" in line, line
    assert victim.read_text() == "export PATH=/usr/bin\n"
    assert (out / "y.npy").is_symlink() and sorted(os.listdir(out)) == ["y.npy"]


def test_run_does_not_write_through_a_dangling_link(
    server: ServerProcess, dense: str, tmp_path: Path, x_file: Path
) -> None:
    # a link to a file not there yet: np.save created it, wherever it pointed
    out = tmp_path / "out"
    out.mkdir()
    planted = tmp_path / "elsewhere.npy"
    (out / "y.npy").symlink_to(planted)
    r = cli("run", dense, "--input", f"x={x_file}", "--output-dir", out, *target(server))
    assert "it is a symbolic link" in one_error_line(r, "ConfigurationError", 2)
    assert not planted.exists()


def test_an_embedding_is_not_written_through_a_planted_link(
    server: ServerProcess, embedder: str, tmp_path: Path, victim: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "embedding.npy").symlink_to(victim)
    r = cli("run", embedder, "--text", "a cat", "--output-dir", out, *target(server))
    line = one_error_line(r, "ConfigurationError", 2)
    assert f"cannot write {out / 'embedding.npy'}: it is a symbolic link" in line, line
    assert victim.read_text() == "export PATH=/usr/bin\n"


def test_outputs_replace_regular_files_and_leave_nothing_else(
    server: ServerProcess, dense: str, tmp_path: Path, x_file: Path
) -> None:
    # a run again into the same folder replaces its outputs, as before; no temporary file stays
    out = tmp_path / "out"
    out.mkdir()
    (out / "y.npy").write_bytes(b"old")
    os.chmod(out / "y.npy", 0o644)
    for _ in range(2):
        ok(cli("run", dense, "--input", f"x={x_file}", "--output-dir", out, *target(server)))
    assert sorted(os.listdir(out)) == ["y.npy"]
    assert np.load(out / "y.npy").shape == (3, 2)
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "y.npy").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_write_leaves_no_temporary_file(
    server: ServerProcess, dense: str, tmp_path: Path, x_file: Path
) -> None:
    out = tmp_path / "out"
    (out / "y.npy").mkdir(parents=True)  # the rename over it fails, after the write
    r = cli("run", dense, "--input", f"x={x_file}", "--output-dir", out, *target(server))
    assert "Is a directory" in one_error_line(r, "ConfigurationError", 2)
    assert sorted(os.listdir(out)) == ["y.npy"]
