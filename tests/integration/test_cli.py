"""The ``blindai`` command end to end, in subprocesses, against the session's simulation server.

Every error must end in one readable line on stderr (``Kind: message``) and a non-zero exit,
never a traceback (see tests/integration/_cli.py).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import blindai
from tests._server import ServerProcess, free_ports
from tests.integration._cli import cli, ok, one_error_line, serve_ports, target
from tests.models import matmul, two_in_two_out

COMMANDS = ["serve", "upload", "run", "delete", "attest"]


def upload(server: ServerProcess, model: Path, *extra: str) -> tuple[str, str]:
    out = ok(cli("upload", model, *extra, *target(server)))
    found = re.fullmatch(r"model_id (\S+)\nsha256   ([0-9a-f]{64})\n", out)
    assert found, out
    return found[1], found[2]


@pytest.fixture
def dense(tmp_path: Path) -> Path:
    path = tmp_path / "dense.onnx"
    path.write_bytes(matmul(16, 4))
    return path


@pytest.fixture
def x_file(tmp_path: Path) -> Path:
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32))
    return path


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help(command: str | None) -> None:
    out = ok(cli(*([command] if command else []), "--help"))
    assert out.startswith("usage: blindai" + (f" {command}" if command else ""))
    if command in ("upload", "run", "delete"):
        assert "--simulation" in out and "--policy" in out


def test_upload_run_delete(
    server: ServerProcess, dense: Path, x_file: Path, tmp_path: Path
) -> None:
    model_id, sha = upload(server, dense, "--name", "cli-dense")
    assert sha == hashlib.sha256(dense.read_bytes()).hexdigest()

    outdir = tmp_path / "out"
    out = ok(
        cli("run", model_id, "--input", f"x={x_file}", "--output-dir", outdir, *target(server))
    )
    assert out == f"y: float32 [3, 4] -> {outdir / 'y.npy'}\n"  # shapes only, never values
    session = ort.InferenceSession(str(dense), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"x": np.load(x_file)})
    np.testing.assert_allclose(np.load(outdir / "y.npy"), expected, rtol=1e-5, atol=1e-5)

    by_name = tmp_path / "by-name"
    ok(cli("run", "cli-dense", "--input", x_file, "--output-dir", by_name, *target(server)))
    np.testing.assert_array_equal(np.load(by_name / "y.npy"), np.load(outdir / "y.npy"))

    assert ok(cli("delete", model_id, *target(server))) == f"deleted {model_id}\n"
    gone = cli("run", model_id, "--input", f"x={x_file}", "--output-dir", outdir, *target(server))
    assert model_id in one_error_line(gone, "ModelNotFound", 1)


def test_run_two_named_inputs_two_outputs(server: ServerProcess, tmp_path: Path) -> None:
    model = tmp_path / "two.onnx"
    model.write_bytes(two_in_two_out())
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(a, np.array([[1, 5, 2, 0]], dtype=np.float32))
    np.save(b, np.array([[1, 1, 1, 1]], dtype=np.float32))
    model_id, _ = upload(server, model)
    try:
        out = ok(
            cli(
                "run",
                model_id,
                "--input",
                f"b={b}",
                "--input",
                f"a={a}",
                "--output-dir",
                tmp_path,
                *target(server),
            )
        )
    finally:
        ok(cli("delete", model_id, *target(server)))
    assert "sum: float32 [1, 4]" in out and "idx: int64 [1, 1]" in out
    np.testing.assert_array_equal(np.load(tmp_path / "sum.npy"), [[2, 6, 3, 1]])
    np.testing.assert_array_equal(np.load(tmp_path / "idx.npy"), [[1]])


@pytest.fixture
def uploaded(server: ServerProcess, dense: Path, conn: blindai.Connection) -> Iterator[str]:
    """A model uploaded with the CLI, deleted afterwards with the client."""
    model_id, _ = upload(server, dense)
    yield model_id
    conn.delete_model(model_id)


def test_run_wrong_input_name(server: ServerProcess, uploaded: str, x_file: Path) -> None:
    r = cli("run", uploaded, "--input", f"nope={x_file}", *target(server))
    assert "nope" in one_error_line(r, "InvalidInput", 1)


def test_run_wrong_dtype(server: ServerProcess, uploaded: str, tmp_path: Path) -> None:
    x = tmp_path / "ints.npy"
    np.save(x, np.ones((1, 16), dtype=np.int64))
    one_error_line(cli("run", uploaded, "--input", f"x={x}", *target(server)), "InvalidInput", 1)


def test_run_unknown_model(server: ServerProcess, x_file: Path) -> None:
    r = cli("run", "no-such-model", "--input", f"x={x_file}", *target(server))
    assert "no-such-model" in one_error_line(r, "ModelNotFound", 1)


def test_delete_unknown_model(server: ServerProcess) -> None:
    one_error_line(cli("delete", "no-such-model", *target(server)), "ModelNotFound", 1)


def test_upload_missing_file(server: ServerProcess, tmp_path: Path) -> None:
    r = cli("upload", tmp_path / "absent.onnx", *target(server))
    assert "absent.onnx" in one_error_line(r, "ConfigurationError", 2)


def test_upload_not_onnx(server: ServerProcess, tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a model")
    r = cli("upload", junk, *target(server))
    one_error_line(r, "InvalidInput", 1)


@pytest.mark.parametrize(
    ("inputs", "needle"),
    [
        ([], "--input"),
        (["x={missing}"], "missing.npy"),
        (["x={text}"], "text.npy"),
        (["x={x}", "{x}"], "by name"),
    ],
    ids=["none", "missing-file", "not-npy", "mixed-named-positional"],
)
def test_run_bad_inputs(
    server: ServerProcess,
    uploaded: str,
    x_file: Path,
    tmp_path: Path,
    inputs: list[str],
    needle: str,
) -> None:
    text = tmp_path / "text.npy"
    text.write_text("1, 2, 3")
    paths = {"missing": tmp_path / "missing.npy", "text": text, "x": x_file}
    args = [a for spec in inputs for a in ("--input", spec.format(**paths))]
    r = cli("run", uploaded, *args, *target(server))
    assert needle in one_error_line(r, "ConfigurationError", 2)


def test_simulation_server_refused_without_flag(server: ServerProcess, dense: Path) -> None:
    r = cli("upload", dense, *target(server, simulation=False))
    line = one_error_line(r, "VerificationError", 1)
    assert "SIMULATION" in line and "Pass --simulation only" in line
    assert "simulation_mode" not in line
    assert "WARNING" not in r.stderr


def test_a_port_flag_naming_another_port(server: ServerProcess, dense: Path) -> None:
    flags = target(server)
    flags[flags.index("--management-port") + 1] = str(server.unattested_port)
    r = cli("upload", dense, *flags)
    line = one_error_line(r, "WrongPort", 2)
    assert f"port {server.unattested_port}, given as the management port, speaks plain" in line
    assert "the management port is usually 9925" in line


def test_version_without_server_modules() -> None:
    # -X importtime lists every module imported: none of the server's may be among them
    r = cli("--version", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert (r.returncode, r.stdout) == (0, f"blindai {blindai.__version__}\n")
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines()}
    assert "blindai.cli" in imported
    server_side = ("blindai.server", "onnxruntime", "onnx", "uvicorn", "starlette", "pydantic")
    assert not {m for m in imported if m.split(".")[0] in server_side or m.startswith(server_side)}


def test_missing_policy_file(server: ServerProcess, dense: Path, tmp_path: Path) -> None:
    r = cli(
        "upload", dense, "--policy", tmp_path / "absent.toml", *target(server, simulation=False)
    )
    assert "absent.toml" in one_error_line(r, "ConfigurationError", 2)


def test_unreachable_server(dense: Path) -> None:
    (port,) = free_ports(1)
    r = cli("upload", dense, "--host", "127.0.0.1", "--attested-port", str(port), "--simulation")
    line = one_error_line(r, "NetworkError", 1)
    assert "cannot reach the attested port" in line and "status 0" not in line


def test_serve_simulation_contradicts_tee() -> None:
    r = cli("serve", "--simulation", "--tee", "tdx", timeout=30)
    assert "contradicts" in one_error_line(r, "ConfigurationError", 2)


def test_serve_port_in_use(server: ServerProcess) -> None:
    a, m = free_ports(2)
    r = cli(
        "serve",
        "--simulation",
        "--host",
        "127.0.0.1",
        "--unattested-port",
        str(server.unattested_port),
        "--attested-port",
        str(a),
        "--management-port",
        str(m),
        timeout=30,
    )
    assert "cannot listen" in one_error_line(r, "ConfigurationError", 2)


@pytest.mark.parametrize("argv", [["run"], ["frobnicate"], ["upload", "m.onnx", "--port", "1"]])
def test_usage_errors(argv: list[str]) -> None:
    r = cli(*argv)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("usage: blindai")
    assert r.stderr.splitlines()[-1].startswith("blindai")


def test_serve_without_tee_refuses_to_start(tmp_path: Path) -> None:
    absent = tmp_path / "absent"
    r = cli(
        "serve",
        *serve_ports(),
        "--attestation-dir",
        absent / "attestation",
        "--tsm-report-dir",
        absent / "tsm",
        "--nsm-device",
        absent / "nsm",
        timeout=30,
    )
    assert "no TEE" in one_error_line(r, "ConfigurationError", 2)


def test_upload_with_run_settings(server: ServerProcess, dense: Path, tmp_path: Path) -> None:
    from tests.models import mixes_rows

    model_id, _ = upload(server, dense, "--max-batch-size", "8", "--max-concurrent-runs", "1")
    assert model_id
    mixing = tmp_path / "mix.onnx"
    mixing.write_bytes(mixes_rows())
    r = cli("upload", mixing, "--max-batch-size", "8", *target(server))
    assert "cannot be batched" in one_error_line(r, "InvalidInput", 1)
