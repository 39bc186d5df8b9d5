"""Native writes to descriptor 2 are counted, not shown; Python's stderr and logging still
reach the real stderr. Each case runs in a child process (pytest captures descriptor 2)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from blindai.server.native_stderr import REPORT_EVERY_S


def _run(body: str) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(
        """
        import logging, os, sys, time
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        from blindai.server.native_stderr import divert_native_stderr
        """
    ) + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )


def test_native_bytes_are_counted_and_python_lines_are_shown() -> None:
    done = _run(
        """
        diverted = divert_native_stderr()
        os.write(2, b"PATIENT-7731 native text\\n")  # as C++ or Rust code writes
        print("a print to sys.stderr", file=sys.stderr)
        logging.getLogger("blindai.server").warning("a logged line")
        time.sleep(0.8)  # the burst ends: its line is logged
        diverted.restore()
        os.write(2, b"after restore\\n")
        print("dropped", diverted.dropped)
        """
    )
    err = done.stderr
    assert "PATIENT-7731" not in err
    assert "a print to sys.stderr" in err and "WARNING blindai.server: a logged line" in err
    assert "wrote 25 bytes to stderr; they are not shown" in err
    assert err.count("bytes to stderr") == 1
    assert "after restore" in err
    assert done.stdout.strip() == "dropped 25"


def test_a_tokenizers_panic_is_not_shown() -> None:
    done = _run(
        """
        from blindai.errors import PipelineError
        from blindai.pipeline._text import load_tokenizer
        from tests.integration.test_pipelines import PANICKING_TOKENIZER
        diverted = divert_native_stderr()
        try:
            load_tokenizer(PANICKING_TOKENIZER, "tokenizer.json")
        except PipelineError as exc:
            print("refused:", exc, file=sys.stderr)
        diverted.restore()
        """
    )
    assert "panicked at" not in done.stderr and "stack backtrace" not in done.stderr
    assert "refused: tokenizer.json is not a valid tokenizer.json" in done.stderr
    assert "bytes to stderr; they are not shown" in done.stderr


def test_a_flood_is_reported_at_most_every_period() -> None:
    done = _run(
        """
        diverted = divert_native_stderr(report_every_s=0.3)
        for _ in range(40):  # 1.2 s of writes, never quiet for 0.5 s
            os.write(2, b"x" * 1000)
            time.sleep(0.03)
        diverted.restore()
        print("dropped", diverted.dropped)
        """
    )
    lines = [line for line in done.stderr.splitlines() if "bytes to stderr" in line]
    assert 2 <= len(lines) <= 5, lines  # not one a write, not one at the end only
    counted = sum(int(line.split(" wrote ")[1].split()[0]) for line in lines)
    assert counted == 40_000 and done.stdout.strip() == "dropped 40000"
    assert REPORT_EVERY_S >= 1


def test_nothing_is_diverted_when_sys_stderr_is_not_descriptor_2() -> None:
    done = _run(
        """
        import io
        sys.stderr = io.StringIO()
        print(divert_native_stderr() is None)
        """
    )
    assert done.stdout.strip() == "True"
