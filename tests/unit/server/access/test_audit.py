"""AuditLog: the exact line, files opened 0600 for appending, failures never raised."""

from __future__ import annotations

import io
import json
import logging
import stat
from pathlib import Path

import pytest

from blindai.server.access import AuditAction, AuditLog, Principal

T = 1_751_371_200.123456  # 2025-07-01T12:00:00.123Z


def test_the_line_holds_exactly_the_documented_fields():
    out = io.StringIO()
    log = AuditLog(out, clock=lambda: T)
    alice = Principal("tenant", "k_0123456789abcdef", "alice")
    log.record(caller=alice, action=AuditAction.RUN, model="0f-id", status=200, duration_s=0.00184)
    log.record(caller=None, action=AuditAction.UPLOAD, model=None, status=401, duration_s=0.0)
    admin = Principal("admin", "admin", "admin")
    log.record(
        caller=admin,
        action=AuditAction.KEY_REVOKE,
        model=None,
        status=200,
        duration_s=0.0,
        target_key="k_0123456789abcdef",
    )
    first, second, third = out.getvalue().splitlines()
    assert first == (
        '{"time": "2025-07-01T12:00:00.123Z", "key": "alice", "key_id": "k_0123456789abcdef", '
        '"action": "run", "model": "0f-id", "target_key": null, "status": 200, '
        '"duration_ms": 1.84}'
    )
    assert json.loads(second) == {
        "time": "2025-07-01T12:00:00.123Z",
        "key": None,
        "key_id": None,
        "action": "upload",
        "model": None,
        "target_key": None,
        "status": 401,
        "duration_ms": 0.0,
    }
    assert json.loads(third)["target_key"] == "k_0123456789abcdef"


def test_only_known_actions():
    with pytest.raises(ValueError):
        AuditLog(io.StringIO()).record(
            caller=None,
            action="exfiltrate",  # type: ignore[arg-type]
            model=None,
            status=200,
            duration_s=0,
        )


def test_a_file_is_0600_and_appended(tmp_path: Path):
    path = tmp_path / "audit.jsonl"
    for status in (200, 404):
        log = AuditLog.open(path)
        log.record(caller=None, action=AuditAction.DELETE, model="m", status=status, duration_s=0.1)
        log.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [json.loads(line)["status"] for line in path.read_text().splitlines()] == [200, 404]


def test_stderr_by_default(capsys: pytest.CaptureFixture[str]):
    log = AuditLog.open(None)
    log.record(caller=None, action=AuditAction.LIST, model=None, status=200, duration_s=0)
    log.close()  # stderr stays open
    assert json.loads(capsys.readouterr().err)["action"] == "list"
    log.record(caller=None, action=AuditAction.LIST, model=None, status=200, duration_s=0)


def test_a_broken_stream_is_reported_once_per_outage(caplog: pytest.LogCaptureFixture):
    stream = io.StringIO()
    stream.close()
    log = AuditLog(stream)
    with caplog.at_level(logging.ERROR, logger="blindai.server"):
        for _ in range(3):
            log.record(caller=None, action=AuditAction.RUN, model=None, status=200, duration_s=0)
    assert [r.getMessage() for r in caplog.records] == [
        "the audit log cannot be written: ValueError; its lines are lost until it can"
    ]


def test_the_time_field_follows_the_clock_across_seconds():
    """The date text is kept per second: each line still shows its own time, to the ms."""
    from datetime import datetime, timezone

    times = [T, T + 0.5, T + 1.0005, T + 86_400 * 366 + 0.999, T + 0.001]
    clock = iter(times)
    out = io.StringIO()
    log = AuditLog(out, clock=lambda: next(clock))
    for _ in times:
        odd = Principal("tenant", 'k_"\n', 'a"b\n')
        log.record(caller=odd, action=AuditAction.RUN, model=None, status=200, duration_s=1.5)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    for t, line in zip(times, lines, strict=True):
        moment = datetime.fromtimestamp(t, tz=timezone.utc)
        assert line["time"] == moment.strftime("%Y-%m-%dT%H:%M:%S.") + (
            f"{moment.microsecond // 1000:03d}Z"
        )
        assert line["key"] == 'a"b\n' and line["key_id"] == 'k_"\n'
        assert line["duration_ms"] == 1500.0


def test_a_closed_file_writes_nowhere(tmp_path: Path):
    """The file is written with os.write on its descriptor: once closed, that number may be
    another file's, and a late line (a request finishing at shutdown) must not land there."""
    log = AuditLog.open(tmp_path / "audit.jsonl")
    log.close()
    other = tmp_path / "other"
    with other.open("w") as taken:  # most likely the number the audit log had
        log.record(caller=None, action=AuditAction.RUN, model=None, status=200, duration_s=0)
        taken.flush()
    assert other.read_text() == ""
    assert (tmp_path / "audit.jsonl").read_text() == ""


def test_an_outage_still_going_at_the_close_is_reported_with_its_lost_lines(
    caplog: pytest.LogCaptureFixture,
):
    """The count of lost lines was logged when writing worked again, and only then: a full
    disk until the server stopped never said how many lines it lost. /dev/full refuses every
    write (ENOSPC), as a full disk does."""
    log = AuditLog.open(Path("/dev/full"))
    with caplog.at_level(logging.WARNING, logger="blindai.server"):
        for _ in range(3):
            log.record(caller=None, action=AuditAction.RUN, model=None, status=200, duration_s=0)
        log.close()
        log.close()  # once
    assert [r.getMessage() for r in caplog.records] == [
        "the audit log cannot be written: OSError; its lines are lost until it can",
        "the audit log is closed; 3 lines were lost",
    ]


_FILLED = """
import resource, sys
from pathlib import Path
from blindai.server.access import AuditAction, AuditLog
path = Path(sys.argv[1])
log = AuditLog.open(path)
def line(status):
    log.record(caller=None, action=AuditAction.RUN, model="m", status=status, duration_s=0)
line(200)
# the file may grow 100 bytes more: the next line is cut there (the kernel writes what fits,
# then refuses the rest with EFBIG, as a disk filled in the middle of a line does)
resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size + 100, resource.RLIM_INFINITY))
line(201)
line(202)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
line(203)
log.close()
"""


def test_a_line_the_file_took_only_part_of_is_taken_back(tmp_path: Path):
    """A line the file system takes only part of (a disk full in its middle; here the file
    size limit, which cuts a write the same way) left its fragment in the log, a line of its
    own that no reader can parse, among whole lines. The fragment is now truncated away: the
    file holds whole lines only, and the lines lost are counted."""
    import subprocess
    import sys

    path = tmp_path / "audit.jsonl"
    done = subprocess.run(
        [sys.executable, "-c", _FILLED, str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "2 lines were lost" in done.stderr
    assert [json.loads(line)["status"] for line in path.read_text().splitlines()] == [200, 203]
