"""The files ``blindai run`` reads and writes on the user's machine, made hostile: an image or
audio file far larger than any server takes (a sparse file), ``.npy`` inputs whose data would
pass every bound, and symbolic links planted where outputs are written.

Each is the real ``blindai`` command against the session's simulation server over loopback TLS
(tests/integration/_cli.py); each refusal is one readable line naming the file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import blindai
from blindai.pipeline import Pipeline
from tests import models
from tests._server import REPO, ServerProcess, connect
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


def test_run_does_not_write_through_a_hard_link_planted_at_an_output(
    server: ServerProcess, dense: str, tmp_path: Path, x_file: Path, victim: Path
) -> None:
    # np.save opened y.npy for writing, truncating the file it shares with ~/.bashrc: the
    # output is now a new file renamed over the name, and the other name keeps its contents
    out = tmp_path / "out"
    out.mkdir()
    os.link(victim, out / "y.npy")
    ok(cli("run", dense, "--input", f"x={x_file}", "--output-dir", out, *target(server)))
    assert victim.read_text() == "export PATH=/usr/bin\n"
    assert np.load(out / "y.npy").shape == (3, 2)


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


def test_an_output_replacing_a_file_keeps_its_permissions(
    server: ServerProcess, dense: str, tmp_path: Path, x_file: Path
) -> None:
    # outputs are confidential: a y.npy the user had made 0600 stays 0600 when a run replaces
    # it (np.save wrote into it; since 06b2943 a new file takes its place, made by the umask)
    out = tmp_path / "out"
    out.mkdir()
    (out / "y.npy").write_bytes(b"old")
    os.chmod(out / "y.npy", 0o600)
    ok(cli("run", dense, "--input", f"x={x_file}", "--output-dir", out, *target(server)))
    assert (out / "y.npy").stat().st_mode & 0o777 == 0o600


def test_a_failed_write_leaves_no_temporary_file(
    server: ServerProcess, dense: str, tmp_path: Path, x_file: Path
) -> None:
    out = tmp_path / "out"
    (out / "y.npy").mkdir(parents=True)  # the rename over it fails, after the write
    r = cli("run", dense, "--input", f"x={x_file}", "--output-dir", out, *target(server))
    assert "Is a directory" in one_error_line(r, "ConfigurationError", 2)
    assert sorted(os.listdir(out)) == ["y.npy"]


def test_an_output_dir_that_is_a_link_is_followed(
    server: ServerProcess, dense: str, tmp_path: Path, x_file: Path
) -> None:
    # a folder the user names may be a link (docs/cli.md says so); only links at the outputs'
    # names, inside it, are refused
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "out").symlink_to(real, target_is_directory=True)
    out = tmp_path / "out"
    ok(cli("run", dense, "--input", f"x={x_file}", "--output-dir", out, *target(server)))
    assert os.listdir(real) == ["y.npy"] and np.load(real / "y.npy").shape == (3, 2)


_SLOW_SAVE = """
import os, time, numpy
from pathlib import Path

def save(file, array, *args, **kwargs):  # the write starts, then takes a minute
    file.write(b"\\x93NUMPY")
    file.flush()
    Path(os.environ["BLINDAI_TEST_WRITING"]).write_text("writing")
    time.sleep(60)

numpy.save = save
"""
"""Run first in the ``blindai`` process: np.save writes a few bytes of the output, says so in
the file ``$BLINDAI_TEST_WRITING``, and waits: the signal then comes in mid-write, every time."""


def _writing_when_signalled(
    server: ServerProcess,
    model: str,
    x_file: Path,
    out: Path,
    *signals: signal.Signals,
    ignoring: signal.Signals | None = None,
) -> subprocess.CompletedProcess[str]:
    """``blindai run`` stopped in the middle of writing its output by ``signals``, sent one
    after the other a second apart (``ignoring``: a signal it was started with ignored)."""
    writing = out.parent / "writing"
    run = "import runpy; runpy.run_module('blindai', run_name='__main__', alter_sys=True)"
    argv = [sys.executable, "-c", f"{_SLOW_SAVE}\n{run}", "run", model, "--input", f"x={x_file}"]
    argv += ["--output-dir", str(out), *target(server)]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), BLINDAI_TEST_WRITING=str(writing))
    before = signal.getsignal(ignoring) if ignoring is not None else None
    if ignoring is not None:  # as nohup starts it: the child inherits the disposition
        signal.signal(ignoring, signal.SIG_IGN)
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    finally:
        if ignoring is not None:
            signal.signal(ignoring, before)
    try:
        deadline = time.monotonic() + 60
        while not writing.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert writing.exists(), (proc.poll(), out)
        assert [p.name.startswith(".blindai-") for p in out.iterdir()] == [True]  # mid-write
        for i, sig in enumerate(signals):
            if i:
                time.sleep(1)
                assert proc.poll() is None, "it stopped on a signal it was started ignoring"
            proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(argv, proc.returncode, stdout.decode(), stderr.decode())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_during_the_write_leaves_no_temporary_file(
    server: ServerProcess, dense: str, tmp_path: Path, x_file: Path, sig: signal.Signals
) -> None:
    # SIGTERM (or a closed terminal's SIGHUP) ended the process where it stood, and the output
    # being written stayed as out/.blindai-<random>.tmp; SIGINT already cleaned it up
    out = tmp_path / "out"
    out.mkdir()
    result = _writing_when_signalled(server, dense, x_file, out, sig)
    line = one_error_line(result, "Interrupted", 128 + sig)
    assert line == f"Interrupted: stopped before it finished ({sig.name})", line
    assert os.listdir(out) == []


def test_a_signal_ignored_at_start_stays_ignored(
    server: ServerProcess, dense: str, tmp_path: Path, x_file: Path
) -> None:
    # `nohup blindai run ...`: the terminal closing must not stop it
    out = tmp_path / "out"
    out.mkdir()
    result = _writing_when_signalled(
        server, dense, x_file, out, signal.SIGHUP, signal.SIGTERM, ignoring=signal.SIGHUP
    )
    assert "(SIGTERM)" in one_error_line(result, "Interrupted", 128 + signal.SIGTERM)
    assert os.listdir(out) == []


# --- inputs ----------------------------------------------------------------------------------


def _sparse(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        f.truncate(size)  # no disk used
    return path


def _sparse_npy(path: Path, count: int) -> Path:
    """A .npy of ``count`` float32 zeros whose header tells the truth: the file holds them all
    (as a hole)."""
    from numpy.lib import format as npy_format

    with path.open("wb") as f:
        npy_format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (count,)}
        )
        f.truncate(f.tell() + 4 * count)
    return path


def _nowhere() -> list[str]:
    """Connection flags for a port where nothing listens: a refusal must come before."""
    from tests._server import free_ports

    (port,) = free_ports(1)
    ports = ["--unattested-port", str(port), "--attested-port", str(port)]
    return ["--host", "127.0.0.1", *ports, "--management-port", str(port), "--simulation"]


@pytest.mark.parametrize("flag", ["--image", "--audio"])
def test_a_raw_input_file_over_the_bound_is_refused_unread(tmp_path: Path, flag: str) -> None:
    # a 4 GiB file (sparse here) was read whole into memory, then encoded (a second copy),
    # before any server could refuse it
    from blindai.client.connection import MAX_RAW_FILE_BYTES

    big = _sparse(tmp_path / "big.bin", 4 << 30)
    r = cli("run", "m", flag, big, *_nowhere())
    line = one_error_line(r, "ConfigurationError", 2)
    assert f"{flag[2:]} file {big} is over {MAX_RAW_FILE_BYTES} bytes" in line, line
    assert "--max-input-bytes" in line


def test_max_input_bytes_sets_the_bound(server: ServerProcess, tmp_path: Path) -> None:
    at, over = tmp_path / "at.png", tmp_path / "over.png"
    at.write_bytes(b"\0" * 1000)
    over.write_bytes(b"\0" * 1001)
    r = cli("run", "no-such-model", "--image", over, "--max-input-bytes", "1000", *_nowhere())
    assert f"image file {over} is over 1000 bytes" in one_error_line(r, "ConfigurationError", 2)
    # at the bound, the file goes to the server, which knows no such model
    r = cli("run", "no-such-model", "--image", at, "--max-input-bytes", "1000", *target(server))
    one_error_line(r, "ModelNotFound", 1)


@pytest.mark.parametrize("value", ["0", "-5", "many"])
def test_max_input_bytes_must_be_a_positive_integer(value: str) -> None:
    r = cli("run", "m", "--text", "t", "--max-input-bytes", value)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.splitlines()[-1].startswith("blindai run: error: argument --max-input-bytes")


@pytest.mark.parametrize("count", [1 << 40, 40 * MiB], ids=["4TiB", "160MiB"])
def test_npy_inputs_over_the_bound_are_refused_before_they_are_read(
    tmp_path: Path, count: int
) -> None:
    # a truthful header over a sparse file: numpy allocated what it said (4 TiB: a MemoryError
    # traceback; 160 MiB: read, encoded and sent for the server's 413)
    big = _sparse_npy(tmp_path / "big.npy", count)
    r = cli("run", "m", "--input", f"x={big}", *_nowhere())
    line = one_error_line(r, "ConfigurationError", 2)
    assert f"input {big} holds {4 * count} bytes of data" in line, line
    assert f"over {64 * MiB} bytes (--max-input-bytes)" in line, line


def test_the_bound_is_on_all_npy_inputs_together(tmp_path: Path, x_file: Path) -> None:
    # x.npy holds 48 bytes of data: alone it passes 80, twice it does not
    r = cli("run", "m", "--input", f"a={x_file}", "--max-input-bytes", "80", *_nowhere())
    one_error_line(r, "NetworkError", 1)  # read, then the connection was refused
    args = ["--input", f"a={x_file}", "--input", f"b={x_file}", "--max-input-bytes", "80"]
    r = cli("run", "m", *args, *_nowhere())
    line = one_error_line(r, "ConfigurationError", 2)
    assert f"input {x_file} holds 48 bytes of data; with the inputs before it" in line, line


def test_the_client_bounds_a_raw_input_file_too(server: ServerProcess, tmp_path: Path) -> None:
    from blindai.client.connection import MAX_RAW_FILE_BYTES
    from blindai.errors import ConfigurationError

    # one byte over: it was read, copied into the request and sent, for the server's 413
    big = _sparse(tmp_path / "big.wav", MAX_RAW_FILE_BYTES + 1)
    with connect(server) as conn, pytest.raises(ConfigurationError) as info:
        conn.predict("m", audio=big)
    assert f"audio file {big} is over {MAX_RAW_FILE_BYTES} bytes" in str(info.value)


def test_the_clients_bound_is_the_servers_default() -> None:
    from blindai.client.connection import MAX_RAW_FILE_BYTES
    from blindai.server import ServerSettings

    assert ServerSettings.model_fields["max_request_bytes"].default == MAX_RAW_FILE_BYTES


def test_an_input_named_twice_is_refused(tmp_path: Path, x_file: Path) -> None:
    # --input x=a.npy --input x=b.npy: the second replaced the first, and the run went on
    other = tmp_path / "other.npy"
    np.save(other, np.zeros((3, 4), np.float32))
    r = cli("run", "m", "--input", f"x={x_file}", "--input", f"x={other}", *_nowhere())
    line = one_error_line(r, "ConfigurationError", 2)
    assert f"--input x is given twice ({x_file} and {other})" in line, line


def _named_output(name: str) -> bytes:
    """y = x for a float [?, 4] input, its output named ``name``."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, 4])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], [name])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


@pytest.mark.parametrize("name", ["o" * 240, "é" * 300], ids=["240-ascii", "300-two-byte"])
def test_an_output_whose_name_makes_too_long_a_file_name_is_written(
    server: ServerProcess, tmp_path: Path, x_file: Path, name: str
) -> None:
    # a model's output name (anyone's, for a public model) became the file name as it was:
    # past 255 bytes, 'cannot write ...: File name too long' after the run, the outputs lost
    with connect(server) as conn:
        uploaded = conn.upload_model(_named_output(name))
    out = tmp_path / "out"
    try:
        r = cli("run", uploaded.model_id, "--input", f"x={x_file}", "--output-dir", out,
                *target(server))  # fmt: skip
    finally:
        with connect(server) as conn:
            conn.delete_model(uploaded.model_id)
    ok(r)
    (written,) = os.listdir(out)
    assert written.endswith(".npy") and name.startswith(written[: -len(".npy")])
    assert len(written.encode()) <= 255
    np.testing.assert_array_equal(np.load(out / written), np.ones((3, 4), np.float32))


# --- upload --replicas -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A simulation server taking models of at most 1 MiB."""
    from tests._server import start_server

    proc = start_server(tmp_path_factory.mktemp("small"), "--max-model-bytes", str(MiB))
    yield proc
    proc.stop()


ADDRESS_SPACE = (
    "import os, resource\n"
    "os.environ.update(OPENBLAS_NUM_THREADS='1', OMP_NUM_THREADS='1', MALLOC_ARENA_MAX='2')\n"
    "resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))"
)
"""The command's memory capped at 3 GiB of address space (it needs some 170 MB; one thread
per math library, whatever the cores): a file of 4 GiB read whole cannot pass."""


def test_upload_to_replicas_streams_the_model_file(
    small_server: ServerProcess, tmp_path: Path
) -> None:
    # upload --replicas read the model whole into memory to send each replica the same bytes:
    # a 4 GiB (sparse) file took 4 GiB, here a MemoryError traceback, for each replica's 413
    huge = _sparse(tmp_path / "huge.onnx", 4 << 30)
    flags = target(small_server)
    flags[flags.index("--host") : flags.index("--host") + 2] = ["--replicas", small_server.host]
    r = cli("upload", huge, *flags, python_code=ADDRESS_SPACE, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    (line,) = r.stdout.splitlines()
    assert "error: PayloadTooLarge: 413" in line and "--max-model-bytes 1048576" in line, line


def test_upload_to_replicas_sends_each_the_same_bytes(
    server: ServerProcess, tmp_path: Path
) -> None:
    """The file is streamed to each replica; a replica that stored other bytes than the file
    held when the upload began (the file rewritten meanwhile) gets an error, not a model."""
    import hashlib

    from blindai.client.replicas import upload_to_replicas
    from blindai.errors import ConfigurationError

    model = tmp_path / "dense.onnx"
    first, second = models.matmul(4, 2, seed=7), models.matmul(4, 2, seed=8)
    assert len(first) == len(second) and first != second
    model.write_bytes(first)

    def connect_rewriting(address: str) -> blindai.Connection:
        if address == "second":
            model.write_bytes(second)  # between two replicas, the same size
        return connect(server)

    results = upload_to_replicas(["first", "second"], model, connect=connect_rewriting)
    with connect(server) as conn:
        held = [m.hash for m in conn.list_models()]
        for r in results:
            if r.model_id is not None:
                conn.delete_model(r.model_id)
    assert hashlib.sha256(second).digest() not in held  # deleted where it was stored
    assert results[0].ok and results[0].hash == hashlib.sha256(first).digest()
    assert isinstance(results[1].error, ConfigurationError), results[1]
    assert "changed while it was uploaded" in str(results[1].error)
    assert results[1].model_id is None


def test_an_npy_header_claiming_gigabytes_is_refused_unread(tmp_path: Path) -> None:
    # a .npy 2.0 header states its own length in 4 bytes: numpy read that many (4 GiB of a
    # sparse file, here a MemoryError traceback under the 3 GiB cap) before it refused them
    big = tmp_path / "header.npy"
    with big.open("wb") as f:
        f.write(b"\x93NUMPY\x02\x00" + (0xFFFFFFF0).to_bytes(4, "little"))
        f.truncate(4 << 30)
    r = cli("run", "m", "--input", f"x={big}", *_nowhere(), python_code=ADDRESS_SPACE)
    line = one_error_line(r, "ConfigurationError", 2)
    assert f"{big}: its .npy header claims {0xFFFFFFF0} bytes" in line, line


# --- pipeline folders ------------------------------------------------------------------------


def test_a_pipeline_folder_over_the_total_bound_is_refused_before_any_file_is_read(
    tmp_path: Path,
) -> None:
    # each file was read up to 32 MiB, one after the other (six names: 192 MiB read) and only
    # the server refused their total; the FIFO named first shows that nothing is read now
    folder = tmp_path / "pipe"
    folder.mkdir()
    os.mkfifo(folder / "tokenizer.json")  # read first; no writer ever opens it
    _sparse(folder / "labels.txt", 20 * MiB)
    _sparse(folder / "vocab.txt", 20 * MiB)
    (folder / "pipeline.toml").write_text(
        '[input]\nkind = "text"\ntokenizer = "tokenizer.json"\n'
        '[output]\nkind = "labels"\nlabels = "labels.txt"\nvocab = "vocab.txt"\n'
    )
    model = tmp_path / "m.onnx"
    model.write_bytes(models.matmul(4, 2))
    r = cli("upload", model, "--pipeline", folder, *_nowhere(), timeout=30)
    line = one_error_line(r, "PipelineError", 1)
    assert line == (
        f"PipelineError: pipeline folder {folder}: the pipeline files hold {40 * MiB} bytes "
        f"together; a pipeline holds at most {32 * MiB} (the server's default "
        "--max-pipeline-bytes)"
    ), line
