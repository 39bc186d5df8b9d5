"""serve, upload, run and delete."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.lib import format as npy_format

from blindai.cli._terminal import shown
from blindai.errors import ConfigurationError
from blindai.localfiles import open_regular, read_small

__all__ = [
    "MAX_NPY_HEADER_BYTES",
    "add_client_commands",
    "add_serve_command",
    "connect_from_args",
    "connection_args",
    "load_npy",
    "seconds",
]

SERVE_DESCRIPTION = (
    "Run the BlindAI server: 9923 unattested (certificate, evidence), 9924 attested inference, "
    "9925 attested model management, 9926 the Open Inference Protocol over gRPC (attested "
    "TLS). Without TEE hardware, --simulation is required (it protects nothing)."
)
SERVE_EPILOG = (
    "Every option can also be set by an environment variable BLINDAI_<OPTION> "
    "(e.g. BLINDAI_PCCS_URL); a flag given on the command line wins."
)
SERVER_EXTRA = "blindai serve needs the server extra: pip install 'blindai[server]'"


def add_serve_command(sub: Any) -> None:
    """``blindai serve``: its flags come from ServerSettings, read when it runs.

    Its arguments are taken as they are (no option is parsed here), so that the other commands
    and ``--help`` never import the server's dependencies.
    """
    p = sub.add_parser(
        "serve", help="run the server", description=SERVE_DESCRIPTION, add_help=False,
        prefix_chars="\0",
    )  # fmt: skip
    p.add_argument("serve_args", nargs="*", help=argparse.SUPPRESS)
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    try:
        from blindai.server import ServerSettings, serve
        from blindai.server.main import set_log_level
        from blindai.server.settings import unknown_variables
    except ImportError as exc:
        missing = f" ({exc.name} is missing)" if exc.name else ""
        raise ConfigurationError(SERVER_EXTRA.replace(":", f"{missing}:", 1)) from None
    parser = argparse.ArgumentParser(
        prog="blindai serve", description=SERVE_DESCRIPTION, epilog=SERVE_EPILOG
    )
    settings = ServerSettings.from_command_line(args.serve_args, parser=parser)
    set_log_level(settings.log_level)
    for warning in unknown_variables(os.environ):
        logging.getLogger("blindai.server").warning("%s", warning)
    serve(settings)
    return 0


def connection_args(p: argparse.ArgumentParser, *, host: bool = True) -> None:
    """The flags every command that connects to a server takes."""
    if host:
        p.add_argument("--host", default=None, help="server address (default localhost)")
    p.add_argument("--unattested-port", type=int, default=9923)
    p.add_argument("--attested-port", type=int, default=9924)
    p.add_argument("--management-port", type=int, default=9925)
    p.add_argument(
        "--policy",
        type=Path,
        default=None,
        help="TOML attestation policy (required outside simulation)",
    )
    p.add_argument(
        "--simulation",
        action="store_true",
        help="accept a simulation server: UNSAFE, protects nothing",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="ask each server for evidence made now, over a random nonce of this client "
        "(refuses replayed evidence; costs the server a new quote or report per connection)",
    )
    p.add_argument(
        "--timeout",
        type=seconds,
        default=300.0,
        metavar="SECONDS",
        help="longest wait for connecting and for each answer (plus one second per 64 KiB "
        "received); default 300",
    )
    p.add_argument(
        "--api-key",
        default=None,
        help="API key for a server with access control (default: $BLINDAI_API_KEY; the "
        "variable keeps it out of the process list); sent over attested TLS only",
    )


def connect_from_args(args: argparse.Namespace, *, host: str | None = None) -> Any:
    """Open an attested connection from the common flags (to ``host`` instead of --host); the
    API key from ``--api-key``, else ``BLINDAI_API_KEY``."""
    from blindai.client import connect

    api_key = _api_key(args)
    return connect(
        host or args.host or "localhost",
        unattested_server_port=args.unattested_port,
        attested_server_port=args.attested_port,
        model_management_port=args.management_port,
        hazmat_manifest_path=args.policy,
        simulation_mode=args.simulation,
        simulation_option="--simulation",
        nonce=args.fresh,
        api_key=api_key,
        timeout=args.timeout,
    )


def _api_key(args: argparse.Namespace) -> str | None:
    """``--api-key``, else ``BLINDAI_API_KEY``, without the white space around it (a key read
    from a file with its line ending, CRLF included, was refused); a key that is still unusable
    is refused naming where it came from, never showing it."""
    source = "--api-key" if args.api_key else "BLINDAI_API_KEY"
    key = (args.api_key or os.environ.get("BLINDAI_API_KEY") or "").strip(" \t\r\n")
    if not key:
        return None
    from blindai.protocol.apikeys import API_KEY

    if not API_KEY.fullmatch(key):
        raise ConfigurationError(
            f"the API key in {source} is not one a server gives (letters, digits and "
            f"-._~+/=; it has {len(key)} characters, not shown)"
        )
    return key


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not positive")
    return value


def seconds(text: str) -> float:
    """A ``--timeout``: a positive, finite number of seconds (argparse's type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < 1e9:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def add_client_commands(sub: Any) -> None:
    """``blindai upload | run | delete``."""
    p = sub.add_parser(
        "upload",
        help="upload an ONNX model",
        description="Verify the server, then upload an ONNX model; prints its id and SHA-256.",
    )
    p.add_argument("model", type=Path, help="the .onnx file")
    p.add_argument("--name", default=None, help="a name to run the model by")
    p.add_argument("--no-optimize", action="store_true", help="disable graph optimisations")
    p.add_argument(
        "--pipeline",
        type=Path,
        default=None,
        metavar="DIR",
        help="a folder with pipeline.toml (and the files it names): the model then takes "
        "raw text, images or audio (blindai run --text/--image/--audio)",
    )
    p.add_argument(
        "--replicas",
        metavar="ADDR[,ADDR...]",
        help="upload to each of these replicas (addresses, or a name resolving to several, "
        "such as a Kubernetes headless Service), each verified first; instead of --host",
    )
    for flag, text in _RUN_SETTINGS.items():
        p.add_argument(flag, type=int, default=None, metavar="N", help=text)
    p.add_argument(
        "--public",
        action="store_true",
        help="every valid API key may run the model (only its uploader may delete it)",
    )
    connection_args(p)
    p.set_defaults(func=_upload)

    p = sub.add_parser(
        "run",
        help="run a model on .npy inputs, or on text, an image or audio",
        description="Verify the server, run a model on inputs from .npy files, "
        "and save each output as OUTPUT_NAME.npy (values are never printed). For a model "
        "uploaded with a pipeline, give --text, --image or --audio instead: labels and "
        "transcripts are printed, embeddings saved as embedding.npy.",
    )
    p.add_argument("model", help="model id or name")
    raw = p.add_mutually_exclusive_group()
    raw.add_argument("--text", help="text for a model with a text pipeline")
    raw.add_argument("--image", type=Path, metavar="FILE", help="a PNG or JPEG file")
    raw.add_argument("--audio", type=Path, metavar="FILE", help="a PCM WAV file")
    p.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=FILE.npy",
        help="an input by name (repeat for several); FILE.npy alone for position",
    )
    p.add_argument(
        "--output-dir",
        type=Path,
        default=Path("."),
        help="where to write outputs (default: current directory)",
    )
    p.add_argument(
        "--max-input-bytes",
        type=_positive_int,
        default=None,
        metavar="N",
        help="largest --image or --audio file, and most data of all --input arrays together, "
        "read and sent; default: the server's default --max-request-bytes (64 MiB)",
    )
    connection_args(p)
    p.set_defaults(func=_run)

    p = sub.add_parser(
        "delete",
        help="delete a model",
        description="Delete a model by id, or by name (the newest upload with that name).",
    )
    p.add_argument("model_id", metavar="model", help="model id or name")
    connection_args(p)
    p.set_defaults(func=_delete)

    from blindai.cli._replicas import add_sync_command

    add_sync_command(sub, connection_args)


_RUN_SETTINGS = {
    "--max-batch-size": "rows of waiting requests run as one batch (refused for a model that "
    "cannot be batched); default: the server's",
    "--max-queue-delay-us": "longest a request waits for batch partners; default: the server's",
    "--max-concurrent-runs": "runs of this model at once; default: the server's",
    "--intra-op-threads": "onnxruntime threads per run (0: one per core); default: the server's",
}
"""How the model runs (``upload_model``'s keywords of the same names)."""


def _upload(args: argparse.Namespace) -> int:
    open_regular(args.model, "model file").close()  # before connecting: a bad path is status 2
    pipeline = None
    if args.pipeline is not None:
        from blindai.pipeline import Pipeline

        pipeline = Pipeline.from_dir(args.pipeline)
    if args.replicas is not None:
        if args.host is not None:  # it was ignored: the model went to the replicas only
            raise ConfigurationError("give --host or --replicas, not both")
        from blindai.cli._replicas import upload_to_each

        return upload_to_each(args, pipeline)
    with connect_from_args(args) as conn:
        reply = conn.upload_model(
            args.model,
            model_name=args.name,
            optimize=not args.no_optimize,
            pipeline=pipeline,
            max_batch_size=args.max_batch_size,
            max_queue_delay_us=args.max_queue_delay_us,
            max_concurrent_runs=args.max_concurrent_runs,
            intra_op_threads=args.intra_op_threads,
            public=args.public,
        )
    print(f"model_id {shown(reply.model_id)}")
    print(f"sha256   {reply.hash.hex()}")
    return 0


def _load_inputs(specs: list[str], limit: int) -> dict[str, np.ndarray] | list[np.ndarray]:
    """The arrays of the ``--input`` flags, holding at most ``limit`` bytes of data together."""
    if not specs:
        raise ConfigurationError("give at least one --input NAME=FILE.npy")
    named: dict[str, np.ndarray] = {}
    positional: list[np.ndarray] = []
    files: dict[str, str] = {}
    for spec in specs:
        name, sep, file = spec.rpartition("=") if "=" in spec else ("", "", spec)
        if sep and name in files:  # the second replaced the first, and the run went on
            raise ConfigurationError(
                f"--input {name} is given twice ({files[name]} and {file}): give each input once"
            )
        files[name] = file
        before = sum(a.nbytes for a in [*named.values(), *positional])
        array = load_npy(file, limit=limit, before=before)
        if sep:
            named[name] = array
        else:
            positional.append(array)
    if named and positional:
        raise ConfigurationError("give every --input by name, or none")
    return named or positional


_NPY_HEADER_LENGTH = {(1, 0): 2, (2, 0): 4}
"""Bytes of the header length after the magic, per .npy version read."""
MAX_NPY_HEADER_BYTES = 10_000
"""Longest .npy header read: numpy's own ``max_header_size``, which it applies only once it
has read the header (a 2.0 header may claim 4 GiB)."""


def _check_header_length(f: BinaryIO, file: str, size: int) -> None:
    """Refuse a header longer than MAX_NPY_HEADER_BYTES from its length field, before numpy
    reads that many bytes (a 2.0 header claiming 1 GiB over a sparse file: 2.1 GB of memory
    and 13 s, for numpy's refusal); the file is left where it was."""
    where = f.tell()
    claimed = int.from_bytes(f.read(size), "little")
    f.seek(where)
    if claimed > MAX_NPY_HEADER_BYTES:
        raise ConfigurationError(
            f"{file}: its .npy header claims {claimed} bytes: it is not read (at most "
            f"{MAX_NPY_HEADER_BYTES})"
        )


def load_npy(file: str, *, limit: int | None = None, before: int = 0) -> np.ndarray:
    """The array in the .npy file ``file``, read with ``allow_pickle=False``: a regular file
    only (a FIFO or a device is refused, not waited on or read without end), whose header
    promises no more data than the file holds (numpy allocates what the header says first: a
    64-byte file claiming a 4 TiB array ended in a MemoryError traceback), and, given a
    ``limit``, no more than ``limit`` bytes of data with the ``before`` bytes of the arrays
    read before it (``--max-input-bytes``: a sparse 4 TiB file whose header told the truth
    went to numpy as well)."""
    with open_regular(file, "input") as f:
        try:
            try:
                version = npy_format.read_magic(f)
            except ValueError:
                raise ConfigurationError(f"{file} is not a .npy file") from None
            if version not in _NPY_HEADER_LENGTH:
                raise ConfigurationError(f"{file}: .npy version {version} is not read")
            _check_header_length(f, file, _NPY_HEADER_LENGTH[version])
            if version == (1, 0):
                shape, _, dtype = npy_format.read_array_header_1_0(f)
            else:
                shape, _, dtype = npy_format.read_array_header_2_0(f)
            if dtype.hasobject:
                raise ConfigurationError(f"{file} holds objects, not numbers: it is not read")
            need = math.prod(shape) * dtype.itemsize
            left = os.fstat(f.fileno()).st_size - f.tell()
            if left < need:
                raise ConfigurationError(
                    f"{file} is truncated: its header promises {need} bytes of data, "
                    f"the file holds {left}"
                )
            if limit is not None and before + need > limit:
                others = f"; with the inputs before it, {before + need}" if before else ""
                raise ConfigurationError(
                    f"input {file} holds {need} bytes of data{others}: over {limit} bytes "
                    "(--max-input-bytes)"
                )
            f.seek(0)
            array: np.ndarray = np.load(f, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot read {file} as a .npy array: {exc}") from None
    return array


def _run(args: argparse.Namespace) -> int:
    raw = {k: getattr(args, k) for k in ("text", "image", "audio") if getattr(args, k)}
    if raw and args.input:
        raise ConfigurationError("give --input, or one of --text, --image and --audio")
    from blindai.client.connection import MAX_RAW_FILE_BYTES

    limit = args.max_input_bytes or MAX_RAW_FILE_BYTES
    for key in ("image", "audio"):
        if key in raw:  # before connecting: a bad path, or a file too large, is status 2
            raw[key] = read_small(
                raw[key],
                f"{key} file",
                limit=limit,
                reason="more than --max-input-bytes (the default: the server's default "
                "--max-request-bytes)",
            )
    inputs = None if raw else _load_inputs(args.input, limit)
    if inputs is not None:  # before the run: its outputs must have somewhere to go
        _output_dir(args.output_dir)
    with connect_from_args(args) as conn:
        outputs = conn.predict(args.model, inputs, **raw)
    if not isinstance(outputs, Mapping):
        _show_result(outputs, args.output_dir)
        return 0
    _save_outputs(outputs, args.output_dir)
    return 0


def _output_dir(path: Path) -> Path:
    """``path``, made a directory if it is none yet; ConfigurationError naming it if it cannot
    be (it was a bare ``error: File exists``, after the run, naming no path)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"cannot use --output-dir {path}: {exc.strerror}") from None
    if not path.is_dir():
        raise ConfigurationError(f"cannot use --output-dir {path}: not a directory")
    return path


_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
_NEW_FILE |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def _keep_mode(path: Path, fd: int) -> None:
    """Give ``fd`` the permissions of the regular file ``path``, if there is one."""
    try:
        replaced = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISREG(replaced.st_mode) and hasattr(os, "fchmod"):  # not on Windows before 3.13
        os.fchmod(fd, stat.S_IMODE(replaced.st_mode) & 0o777)


def _save(path: Path, array: np.ndarray) -> None:
    """``array`` as the .npy file ``path``, never through a symbolic link: a link there is
    refused (``y.npy -> ~/.bashrc`` planted in the output folder had np.save overwrite the file
    it named), and the array goes to a new file beside ``path`` (``O_EXCL | O_NOFOLLOW``),
    renamed over it once whole, so that a link planted after that check is replaced, not
    followed, and a failed write leaves no partial output. A regular file replaced keeps its
    permissions (a y.npy made 0600 stays so); a new one has the umask's, as np.save's had."""
    if os.path.islink(path):  # False, not an error, for a name the system refuses
        raise ConfigurationError(f"cannot write {path}: it is a symbolic link (not followed)")
    temporary = path.with_name(f".blindai-{secrets.token_hex(8)}.tmp")  # short: any name fits
    try:
        fd = os.open(temporary, _NEW_FILE, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                _keep_mode(path, f.fileno())
                np.save(f, array)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError as exc:
        raise ConfigurationError(f"cannot write {path}: {exc.strerror}") from None


def _show_result(result: Any, output_dir: Path) -> None:
    from blindai.pipeline import Classification, Embedding

    if isinstance(result, Classification):
        for label in result.labels:
            print(f"{label.score:.4f}  {shown(label.label)}")
    elif isinstance(result, Embedding):
        path = _output_dir(output_dir) / "embedding.npy"
        _save(path, np.asarray(result.vector, dtype=np.float32))
        print(f"embedding: {len(result.vector)} values -> {shown(path)}")
    else:
        print(shown(result.text, keep="\n\t"))


_MAX_STEM_BYTES = 200
"""Most UTF-8 bytes of an output's file name before ``-N.npy`` (file names: 255 at most)."""


def _save_outputs(outputs: Mapping[str, np.ndarray], output_dir: Path) -> None:
    """Each output as NAME.npy, its name made a file name (of at most :data:`_MAX_STEM_BYTES`
    before ``.npy``: a model's output name of any length became the file's, and past 255 bytes
    the run ended in 'File name too long', its outputs lost); names that become the same file
    name (``a/b`` and ``a_b``, or ``A`` and ``a`` on a case-insensitive disk) get ``-2``,
    ``-3``..., so that no output overwrites another."""
    _output_dir(output_dir)
    taken: set[str] = set()
    for name, array in outputs.items():
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "output"
        safe = safe.encode()[:_MAX_STEM_BYTES].decode(errors="ignore")  # whole characters
        stem, count = safe, 1
        while stem.casefold() in taken:
            count += 1
            stem = f"{safe}-{count}"
        taken.add(stem.casefold())
        path = output_dir / f"{stem}.npy"
        _save(path, array)
        print(f"{shown(name)}: {array.dtype} {list(array.shape)} -> {shown(path)}")


def _delete(args: argparse.Namespace) -> int:
    with connect_from_args(args) as conn:
        conn.delete_model(args.model_id)
    print(f"deleted {args.model_id}")
    return 0
