"""The ``blindai`` command given bad local input and put in bad circumstances: files that are
no files (a FIFO, a device, a directory), files whose size lies, a server that refuses a
request before it has read it, an output folder that cannot be written, an interrupt.

Each must end in one readable line on stderr and the documented exit status (docs/cli.md),
never a hang, a traceback or a read without end (see tests/integration/_cli.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._server import REPO, ServerProcess, free_ports, start_server
from tests.integration._cli import cli, one_error_line, serve_ports, target
from tests.models import matmul

MiB = 1 << 20


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A simulation server taking models of at most 1 MiB."""
    proc = start_server(tmp_path_factory.mktemp("small"), "--max-model-bytes", str(MiB))
    yield proc
    proc.stop()


def test_upload_far_over_the_limit_gets_the_servers_413(
    small_server: ServerProcess, tmp_path: Path
) -> None:
    # the server answers 413 from the headers and closes while the client is still sending:
    # its answer, not the broken socket, is what the user must read
    huge = tmp_path / "huge.onnx"
    with huge.open("wb") as f:
        f.truncate(4 << 30)  # sparse: no disk used
    r = cli("upload", huge, *target(small_server), timeout=120)
    line = one_error_line(r, "PayloadTooLarge", 1)
    assert "413" in line and "--max-model-bytes 1048576" in line
    assert ok_model(small_server, tmp_path)  # and the server serves on


def ok_model(server: ServerProcess, tmp_path: Path) -> bool:
    model = tmp_path / "dense.onnx"
    model.write_bytes(matmul(4, 2))
    r = cli("upload", model, *target(server))
    return r.returncode == 0 and r.stdout.startswith("model_id ")


NOT_FILES = {
    "fifo": lambda tmp: _fifo(tmp / "fifo"),
    "device": lambda tmp: Path("/dev/zero"),  # read without end, before
    "directory": lambda tmp: tmp,
}


def _fifo(path: Path) -> Path:
    os.mkfifo(path)  # no writer ever opens it: a blocking open waits forever
    return path


def _commands(server: ServerProcess, bad: Path, evidence: Path) -> dict[str, list[str | Path]]:
    """Each place a command reads a file the user names, given ``bad``."""
    sim, real = target(server), target(server, simulation=False)
    sev = ["attest", "verify", "--kind", "sev-snp", "--evidence"]
    return {
        "upload MODEL": ["upload", bad, *sim],
        "run --input": ["run", "m", "--input", f"x={bad}", *sim],
        "run --image": ["run", "m", "--image", bad, *sim],
        "run --audio": ["run", "m", "--audio", bad, *sim],
        "--policy": ["models", "--policy", bad, *real],
        "attest --policy": ["attest", server.host, "--policy", bad],
        "attest verify --evidence": [*sev, bad],
        "attest verify --certs": [*sev, evidence, "--certs", bad],
        "attest verify --collateral": ["attest", "verify", "--kind", "sgx", "--evidence",
                                       evidence, "--collateral", bad],
        "attest verify --policy": [*sev, evidence, "--policy", bad],
    }  # fmt: skip


WHAT = {
    "upload MODEL": "model file",
    "run --input": "input",
    "run --image": "image file",
    "run --audio": "audio file",
    "--policy": "policy file",
    "attest --policy": "policy file",
    "attest verify --evidence": "evidence",
    "attest verify --certs": "certificate",
    "attest verify --collateral": "collateral",
    "attest verify --policy": "policy file",
}


@pytest.mark.parametrize("kind", NOT_FILES)
@pytest.mark.parametrize("place", WHAT)
def test_a_fifo_device_or_directory_is_refused_not_read(
    server: ServerProcess, tmp_path: Path, place: str, kind: str
) -> None:
    if kind == "device" and not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    bad = NOT_FILES[kind](tmp_path)
    evidence = tmp_path / "evidence.bin"
    evidence.write_bytes(b"\0" * 64)
    r = cli(*_commands(server, bad, evidence)[place], timeout=30)
    line = one_error_line(r, "ConfigurationError", 2)
    assert f"cannot read {WHAT[place]} " in line and "not a regular file" in line, line


def test_a_policy_file_over_the_bound_is_refused(server: ServerProcess, tmp_path: Path) -> None:
    from blindai.attestation.policy import MAX_POLICY_BYTES

    policy = tmp_path / "policy.toml"
    policy.write_text("# comment\n" * (MAX_POLICY_BYTES // 10 + 1))
    r = cli("models", "--policy", policy, *target(server, simulation=False))
    assert f"over {MAX_POLICY_BYTES} bytes" in one_error_line(r, "ConfigurationError", 2)


def _npy_header(path: Path, shape: tuple[int, ...], data: bytes) -> Path:
    from numpy.lib import format as npy_format

    with path.open("wb") as f:
        npy_format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": shape}
        )
        f.write(data)
    return path


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        # numpy allocates what the header says before reading: 4 TB, a MemoryError traceback
        (lambda p: _npy_header(p, (1_000_000, 1_000_000), b"\0" * 64), "header promises"),
        (lambda p: _npy_header(p, (100_000, 16), b"\0" * 64), "header promises"),
        # an .npz archive went on to the client, which said 'dtypes: a flat list needs ...'
        (lambda p: _savez(p), "is not a .npy file"),
    ],
    ids=["4TB-header", "6MB-header", "npz"],
)
def test_run_input_whose_contents_lie(
    server: ServerProcess, tmp_path: Path, make: Any, needle: str
) -> None:
    bad = make(tmp_path / "bad.npy")
    r = cli("run", "m", "--input", f"x={bad}", *target(server))
    assert needle in one_error_line(r, "ConfigurationError", 2)


def _savez(path: Path) -> Path:
    import numpy as np

    with path.open("wb") as f:
        np.savez(f, x=np.ones((3, 16), np.float32))
    return path


@pytest.fixture
def x_file(tmp_path: Path) -> Path:
    import numpy as np

    path = tmp_path / "x.npy"
    np.save(path, np.ones((3, 4), np.float32))
    return path


def test_an_unusable_output_dir_is_refused_before_connecting(tmp_path: Path, x_file: Path) -> None:
    # no server listens there: the output folder's fault must be found first (it was found
    # after the run, the outputs computed and lost, as 'error: File exists', status 1)
    (port,) = free_ports(1)
    flags = ["--host", "127.0.0.1", "--attested-port", str(port), "--simulation"]
    r = cli("run", "m", "--input", f"x={x_file}", "--output-dir", x_file, *flags)
    line = one_error_line(r, "ConfigurationError", 2)
    assert f"--output-dir {x_file}: " in line


def test_an_output_that_cannot_be_written_is_named(
    small_server: ServerProcess, tmp_path: Path, x_file: Path
) -> None:
    model = tmp_path / "dense.onnx"
    model.write_bytes(matmul(4, 2))
    model_id = cli("upload", model, *target(small_server)).stdout.split()[1]
    out = tmp_path / "out"
    (out / "y.npy").mkdir(parents=True)  # where the output 'y' goes
    r = cli("run", model_id, "--input", f"x={x_file}", "--output-dir", out, *target(small_server))
    line = one_error_line(r, "ConfigurationError", 2)
    assert f"cannot write {out / 'y.npy'}: Is a directory" in line


@pytest.mark.parametrize("command", ["upload", "models", "attest"])
def test_sigint_is_status_130_and_one_line(tmp_path: Path, command: str) -> None:
    # a listener that never answers: the command waits in the TLS handshake when interrupted
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = str(silent.getsockname()[1])
        model = tmp_path / "m.onnx"
        model.write_bytes(matmul(4, 2))
        args = {
            "upload": ["upload", model, "--host", "127.0.0.1"],
            "models": ["models", "--host", "127.0.0.1"],
            "attest": ["attest", "127.0.0.1"],
        }[command]
        ports = ["--attested-port", port, "--unattested-port", port]
        if command != "attest":
            ports += ["--management-port", port]
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
        argv = [sys.executable, "-m", "blindai", *map(str, args), *ports, "--simulation"]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        time.sleep(4)  # past the imports, into the handshake
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    result = subprocess.CompletedProcess(argv, proc.returncode, out.decode(), err.decode())
    assert "stopped before it finished" in one_error_line(result, "Interrupted", 130)
    assert result.stdout == ""


@pytest.mark.parametrize("command", ["models", "attest"])
def test_timeout_bounds_the_wait_for_a_silent_server(command: str) -> None:
    # a listener that never answers held every command 300 s (attest: 60 s), with no flag
    # to say less
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = str(silent.getsockname()[1])
        args = ["models", "--host", "127.0.0.1"] if command == "models" else ["attest", "127.0.0.1"]
        started = time.monotonic()
        r = cli(*args, "--attested-port", port, "--simulation", "--timeout", "2", timeout=60)
        took = time.monotonic() - started
    assert "did not answer in time" in one_error_line(r, "RequestTimeout", 1)
    assert took < 30


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_timeout_must_be_a_positive_number(value: str) -> None:
    r = cli("models", "--timeout", value)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.splitlines()[-1].startswith("blindai models: error: argument --timeout")


@pytest.mark.parametrize("command", ["keys generate-admin", "models"])
def test_stdout_closed_is_one_line(server: ServerProcess, command: str) -> None:
    # `blindai ... | head -c1` once head has gone: the line was 'error: Broken pipe', not in
    # the 'Kind: message' form every other error line has
    read, write = os.pipe()
    os.close(read)
    args = command.split() + ([] if command.startswith("keys") else target(server))
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    argv = [sys.executable, "-m", "blindai", *map(str, args)]
    try:
        r = subprocess.run(
            argv, stdout=write, stderr=subprocess.PIPE, text=True, env=env, timeout=60
        )
    finally:
        os.close(write)
    result = subprocess.CompletedProcess(argv, r.returncode, "", r.stderr)
    assert one_error_line(result, "BrokenPipeError", 1) == "BrokenPipeError: Broken pipe"
    assert "Exception ignored" not in r.stderr


def test_started_with_stdout_closed_does_nothing(server: ServerProcess) -> None:
    # fd 1 closed: Python's sys.stdout is None and print() wrote nothing, so `keys
    # generate-admin` (or `keys create`, whose key the server then holds) exited 0, the key
    # shown nowhere
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    argv = [sys.executable, "-m", "blindai", "keys", "generate-admin"]
    r = subprocess.run(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        timeout=60,
        preexec_fn=lambda: os.close(1),
    )
    result = subprocess.CompletedProcess(argv, r.returncode, "", r.stderr)
    assert "standard output is closed" in one_error_line(result, "ConfigurationError", 2)


def test_an_output_dir_named_with_escapes_is_shown_escaped(
    small_server: ServerProcess, tmp_path: Path, x_file: Path
) -> None:
    # the folder's name went raw into the 'y: float32 [3, 2] -> DIR/y.npy' line: an ESC
    # sequence there is run by the terminal
    model = tmp_path / "dense.onnx"
    model.write_bytes(matmul(4, 2))
    model_id = cli("upload", model, *target(small_server)).stdout.split()[1]
    out = tmp_path / "out\x1b]0;owned\x07"
    r = cli("run", model_id, "--input", f"x={x_file}", "--output-dir", out, *target(small_server))
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "out\\x1b]0;owned\\x07" in r.stdout
    assert (out / "y.npy").is_file()


def test_upload_to_replicas_keeps_the_run_settings(server: ServerProcess, tmp_path: Path) -> None:
    # --replicas dropped --max-batch-size and the other run settings: each replica took the
    # model with its own defaults, and the command said nothing
    from tests.models import mixes_rows

    mixing = tmp_path / "mix.onnx"
    mixing.write_bytes(mixes_rows())
    flags = target(server)
    flags[flags.index("--host") : flags.index("--host") + 2] = ["--replicas", server.host]
    r = cli("upload", mixing, "--max-batch-size", "8", *flags)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "error: InvalidInput: 400: upload:" in r.stdout and "cannot be batched" in r.stdout


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--kind", "sev-snp", "--evidence", "{f}"], "--kind"),
        (["--evidence", "{f}"], "--evidence"),
        (["--certs", "{f}"], "--certs"),
        (["--collateral", "{f}"], "--collateral"),
    ],
)
def test_attest_host_refuses_the_flags_of_attest_verify(
    server: ServerProcess, tmp_path: Path, argv: list[str], flag: str
) -> None:
    # they were ignored: 'attest HOST --evidence q.bin' verified the server, not q.bin, and
    # exit 0 read as if the file had passed
    f = tmp_path / "q.bin"
    f.write_bytes(b"\0" * 64)
    ports = ["--attested-port", str(server.attested_port), "--simulation"]
    r = cli("attest", server.host, *ports, *[a.format(f=f) for a in argv])
    assert f"{flag} applies to attest verify" in one_error_line(r, "ConfigurationError", 2)


@pytest.mark.parametrize("flag", ["--simulation", "--fresh"])
def test_attest_verify_refuses_the_flags_of_attest_host(tmp_path: Path, flag: str) -> None:
    f = tmp_path / "q.bin"
    f.write_bytes(b"\0" * 64)
    r = cli("attest", "verify", "--kind", "nitro", "--evidence", f, flag)
    assert f"{flag} applies to attest HOST" in one_error_line(r, "ConfigurationError", 2)


def test_upload_refuses_host_with_replicas(server: ServerProcess, tmp_path: Path) -> None:
    # --host was ignored beside --replicas: the model went to the replicas only, exit 0
    model = tmp_path / "dense.onnx"
    model.write_bytes(matmul(4, 2))
    r = cli("upload", model, "--replicas", server.host, *target(server))
    assert "--host or --replicas" in one_error_line(r, "ConfigurationError", 2)


@pytest.mark.parametrize(
    ("kind", "fetch"),
    [("sgx", ["--pccs-url", "http://127.0.0.1:1"]), ("sev-snp", ["--kds", "http://127.0.0.1:1"])],
)
def test_malformed_evidence_is_status_2_with_a_collateral_source_too(
    tmp_path: Path, kind: str, fetch: list[str]
) -> None:
    # without --pccs-url/--kds: 'EvidenceError: ...', 2; with: 'CollateralUnavailable: no PCK
    # chain in the quote: ...', 1: the same file read as refused rather than malformed
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 4)
    plain = one_error_line(
        cli("attest", "verify", "--kind", kind, "--evidence", junk), "EvidenceError", 2
    )
    r = cli("attest", "verify", "--kind", kind, "--evidence", junk, *fetch)
    assert one_error_line(r, "EvidenceError", 2) == plain


SERVE_FILES = {
    "--require-models": ["--require-models"],
    "--store-key-file": ["--store", "STORE", "--store-key-file"],
    "--unattested-tls-cert": ["--unattested-tls-key", "KEY", "--unattested-tls-cert"],
    "--unattested-tls-key": ["--unattested-tls-cert", "KEY", "--unattested-tls-key"],
}
"""The files ``serve`` reads at start, each given a FIFO (it waited for a writer for ever,
with no word) or a device (read without end, or handed to OpenSSL)."""


@pytest.mark.parametrize("kind", ["fifo", "device"])
@pytest.mark.parametrize("flag", SERVE_FILES)
def test_serve_refuses_a_fifo_or_device_named_as_a_start_up_file(
    tmp_path: Path, flag: str, kind: str
) -> None:
    bad = NOT_FILES[kind](tmp_path)
    key = tmp_path / "key.pem"
    key.write_text("not a key\n")
    argv = [str(tmp_path / "store") if a == "STORE" else str(key) if a == "KEY" else a
            for a in SERVE_FILES[flag]]  # fmt: skip
    r = cli("serve", "--simulation", *serve_ports(), *argv, bad, timeout=60)
    line = one_error_line(r, "ConfigurationError", 2)
    assert "not a regular file" in line, line


def test_serve_refuses_an_upload_dir_it_cannot_make_files_in(tmp_path: Path) -> None:
    """Before, a file given as --upload-dir was taken, and every upload then got a 500."""
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    r = cli("serve", "--simulation", *serve_ports(), "--upload-dir", not_a_dir, timeout=60)
    line = one_error_line(r, "ConfigurationError", 2)
    assert "--upload-dir" in line and "cannot make a file there" in line, line


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_pipeline_file_that_is_no_file_is_refused_not_read(
    server: ServerProcess, tmp_path: Path, kind: str
) -> None:
    """A pipeline folder's file given as a FIFO waited for a writer for ever; /dev/zero (size
    0, so within the size check) was read without end."""
    folder = tmp_path / "pipe"
    folder.mkdir()
    bad = NOT_FILES[kind](tmp_path)
    (folder / "tokenizer.json").symlink_to(bad)
    (folder / "pipeline.toml").write_text('[input]\nkind = "text"\ntokenizer = "tokenizer.json"\n')
    model = tmp_path / "m.onnx"
    model.write_bytes(matmul(4, 2))
    r = cli("upload", model, "--pipeline", folder, *target(server), timeout=30)
    line = one_error_line(r, "PipelineError", 1)  # as a pipeline folder missing a file
    assert "not a regular file" in line, line
