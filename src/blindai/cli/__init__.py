"""The ``blindai`` command: a thin layer over the public API.

Every error ends in one readable line on stderr and a non-zero exit; never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from blindai import __version__
from blindai.cli._access import add_access_commands
from blindai.cli._commands import add_client_commands, add_serve_command
from blindai.errors import BlindAIError, ConfigurationError, EvidenceError, VerificationError
from blindai.escape import escaped

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blindai",
        description="BlindAI: confidential inference. Serve ONNX models from a TEE; upload and "
        "run them after verifying the server by remote attestation.",
    )
    parser.add_argument("--version", action="version", version=f"blindai {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_serve_command(sub)
    add_client_commands(sub)
    add_access_commands(sub)
    try:
        from blindai.cli._attest import add_attest_command
    except ImportError:  # pragma: no cover
        pass
    else:
        add_attest_command(sub)
    return parser


def _show_warning(
    message: Warning | str, category: type[Warning], *_: object, **__: object
) -> None:
    print(f"WARNING: {message}", file=sys.stderr)


def _escape_unencodable() -> None:
    """Characters the output's encoding lacks are written as their escapes (``\\u6a21``): a
    server's model name in another script made print() raise UnicodeEncodeError, a traceback,
    wherever stdout is not UTF-8 (a latin-1 locale, a file on Windows, PYTHONIOENCODING)."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


class _Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP in a client command, raised where SIGINT raises KeyboardInterrupt (and
    handled as it is: a partial output removed, one line, status 128 + the signal)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, _frame: object) -> None:
    for sig in _STOPPING:  # a second signal, should the clean-up hang, ends the process
        signal.signal(sig, signal.SIG_DFL)
    raise _Stopped(signum)


_STOPPING = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def _stop_on_signals(command: str) -> Iterator[None]:
    """SIGTERM and SIGHUP stop a client command as SIGINT does: they ended the process where it
    stood, and a ``blindai run`` killed while writing an output left its ``.blindai-*.tmp``
    file in the output folder. A signal the parent made ignored (``nohup``) stays ignored, and
    the handlers before are back afterwards (``main`` may run inside another program). Not for
    ``blindai serve``, whose event loop takes SIGTERM itself (``blindai.server.shutdown``)."""
    taken: dict[int, Any] = {}
    if command != "serve" and threading.current_thread() is threading.main_thread():
        for sig in _STOPPING:
            if signal.getsignal(sig) is signal.SIG_DFL:
                taken[sig] = signal.signal(sig, _raise_stopped)
    try:
        yield
    finally:
        for sig, before in taken.items():
            signal.signal(sig, before)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if sys.stdout is None and args.command != "serve":  # started with file descriptor 1 closed
        # print() to None writes nothing: `keys create` made a key that nobody ever saw, exit 0
        print(
            "ConfigurationError: standard output is closed: nowhere to show the result",
            file=sys.stderr,
        )
        return 2
    _escape_unencodable()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.showwarning = _show_warning  # one line, no source excerpt
    # the simulation verifier both warns and logs: the CLI shows the warning once
    logging.getLogger("blindai.attestation.simulation").setLevel(logging.ERROR)
    # a refused connection is logged for library users; the CLI prints the error itself
    logging.getLogger("blindai.client").setLevel(logging.ERROR)
    try:
        with _stop_on_signals(args.command):
            return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:  # one line, as every other way a command ends early
        signum = exc.signum if isinstance(exc, _Stopped) else signal.SIGINT
        name = signal.Signals(signum).name
        print(f"Interrupted: stopped before it finished ({name})", file=sys.stderr)
        return 128 + signum
    except (ConfigurationError, EvidenceError) as exc:
        print(exc.diagnostics(), file=sys.stderr)
        return 2
    except VerificationError as exc:
        print(exc.diagnostics(), file=sys.stderr)
        return 1
    except BlindAIError as exc:
        print(exc.diagnostics(), file=sys.stderr)
        return 1
    except OSError as exc:  # writing the output, mostly: a closed pipe, a full disk
        if isinstance(exc, BrokenPipeError):  # no second error when Python flushes at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        where = f": {exc.filename}" if exc.filename is not None else ""
        print(f"{type(exc).__name__}: {escaped(f'{exc.strerror or exc}{where}')}", file=sys.stderr)
        return 1
