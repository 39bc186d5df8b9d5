"""The compile guard: checks and a trial compile in a limited child process."""

from __future__ import annotations

import dataclasses
import os

import pytest
from onnx import TensorProto, helper

from blindai.errors import InvalidInput
from blindai.server.admission import AdmissionLimits
from blindai.server.compile_guard import CompileGuard, CompileLimits
from tests import attacks
from tests.models import identity

ADMISSION = AdmissionLimits(max_nodes=10**6, max_subgraph_depth=8, max_tensor_bytes=1 << 30)


def _limits(timeout_s: float = 20, memory_bytes: int = 256 << 20, **admission) -> CompileLimits:
    return CompileLimits(
        timeout_s=timeout_s,
        memory_bytes=memory_bytes,
        admission=dataclasses.replace(ADMISSION, **admission),
    )


@pytest.fixture
def guard():
    # no shape inference: the constant-folding case below must reach onnxruntime
    g = CompileGuard(limits=_limits(shape_inference=False))
    g.warm()
    yield g
    g.close()


def test_a_good_model_compiles_and_reports_what_it_cost(guard):
    report = guard.check(identity(TensorProto.FLOAT), optimize=True)
    assert report.seconds is not None and report.seconds < 20
    assert report.peak_bytes is not None and report.peak_bytes > 10 << 20


def test_admission_runs_in_the_child(guard):
    with pytest.raises(InvalidInput, match="external data"):
        guard.check(attacks.external_initializer("secret.bin"), optimize=True)


def test_a_compile_past_the_memory_limit_is_refused():
    # 3000 Ifs: about 90 MB to compile. Where malloc fails decides how the child ends: a
    # MemoryError or std::bad_alloc it reports, or a SIGSEGV in onnxruntime code that does not
    # check (which of the two varies from run to run). Either way the upload is refused, the
    # message names --compile-memory, and the guard serves the next check.
    g = CompileGuard(limits=_limits(memory_bytes=16 << 20))
    try:
        with pytest.raises(
            InvalidInput,
            match=r"(more memory than this server allows|onnxruntime crashed).*--compile-memory",
        ):
            g.check(attacks.wide_ifs(3000), optimize=True)
        g.limits = _limits()
        assert g.check(identity(TensorProto.FLOAT), optimize=True).seconds
    finally:
        g.close()


def test_constant_folding_past_the_memory_limit_is_skipped_not_fatal(guard):
    # onnxruntime gives up folding a 1 GiB constant when the allocation fails; the run-time
    # arena cap deals with it
    assert guard.check(attacks.static_constant_of_shape(1 << 28), optimize=True).seconds


def test_garbage_is_refused_by_onnxruntime_or_the_parser(guard):
    with pytest.raises(InvalidInput):
        guard.check(b"\x08\x07" + b"\x00" * 64, optimize=True)


def test_a_compile_past_the_timeout_is_killed():
    g = CompileGuard(limits=_limits(timeout_s=0.5))
    try:
        with pytest.raises(InvalidInput, match="--compile-timeout"):
            g.check(attacks.wide_ifs(20000), optimize=True)
        # the guard is usable afterwards
        g.limits = _limits()
        assert g.check(identity(TensorProto.FLOAT), optimize=True).seconds
    finally:
        g.close()


def test_without_the_child_admission_still_runs():
    g = CompileGuard(limits=_limits(), enabled=False)
    try:
        with pytest.raises(InvalidInput, match="external data"):
            g.check(attacks.external_initializer("x"), optimize=True)
        assert g.check(identity(TensorProto.FLOAT), optimize=True).seconds is None
    finally:
        g.close()


_ADDRESS_SPACE_CHILD = """
import json, sys
from blindai.server import _compile_worker as worker
worker._warm_up()
from blindai.server._child_side import vm_status
start = vm_status("VmSize")
worker._compile(sys.stdin.buffer.read(), {"optimize": True, "intra_op_threads": 4})
print(json.dumps({"grown": vm_status("VmPeak") - start}))
"""


def test_the_childs_address_space_holds_no_per_thread_malloc_arenas():
    """The flaky integer-array upload of tests/integration/test_limits.py: RLIMIT_AS counts
    reserved address space, and each onnxruntime pool thread that allocated first got a
    malloc arena reserving 64 MiB (128 MiB while it is made), whether or not a race let it:
    a 6 MiB model under a 64 MiB budget compiled or not with the machine's load. The child's
    environment keeps one arena, so its address space is what the compile uses."""
    import json
    import subprocess
    import sys

    from blindai.server.compile_guard import _child_env

    done = subprocess.run(
        [sys.executable, "-c", _ADDRESS_SPACE_CHILD],
        input=identity(TensorProto.FLOAT),
        env=_child_env(),  # the compile guard's own child environment
        capture_output=True,
        check=True,
        timeout=120,
    )
    grown = json.loads(done.stdout)["grown"]
    # 4 pool threads' stacks and the session: about 16 MiB; one arena alone reserves 64
    assert grown < 48 << 20, f"the compile reserved {grown >> 20} MiB of address space"


def test_a_model_file_reaches_the_child_as_a_descriptor(guard):
    from blindai.server.model_file import ModelFile

    with ModelFile.holding(attacks.external_initializer("secret.bin")) as hostile:
        with pytest.raises(InvalidInput, match="external data"):
            guard.check(hostile, optimize=True)
    with ModelFile.holding(identity(TensorProto.FLOAT)) as good:
        assert guard.check(good, optimize=True).seconds
        assert good.read() == identity(TensorProto.FLOAT)  # the file is the server's still


def test_one_dimensional_weights_do_not_run_the_shape_check_out_of_memory():
    """The shape check used to declare each large weight a graph input, and onnx spells out
    a one-dimensional input's values as one placeholder each (about 70 bytes per element):
    under the child's address-space cap the inference ran out of memory and the check was
    skipped without a word. 8 Mi float32 (32 MiB) took about 550 MiB; the cap here is 416."""
    g = CompileGuard(limits=_limits(memory_bytes=256 << 20, max_tensor_bytes=16 << 20))
    try:
        with pytest.raises(InvalidInput, match="static shape of 33554432 bytes"):
            g.check(attacks.doubled_weight("initializer", 8 << 20), optimize=True)
    finally:
        g.close()


def test_the_next_spare_is_started_by_the_caller_once_its_compile_is_done(guard, monkeypatch):
    """Forking the next spare before handing the job over put its start-up on every upload's
    path; started while the child worked, its start-up (0.35 s of CPU) took a core from the
    check (a 500 MB model's check: 1.12-1.36 s, 0.81-0.96 s without it, on 2 cores). The
    check starts none; ``replenish`` does, and leaves a spare that is there alone."""
    import socket

    from blindai.server import compile_guard

    events: list[str] = []
    spawn, send_fds = guard._spawn, socket.send_fds
    monkeypatch.setattr(guard, "_spawn", lambda: events.append("spawn") or spawn())
    monkeypatch.setattr(
        compile_guard.socket, "send_fds", lambda *a: events.append("send") or send_fds(*a)
    )
    assert guard.check(identity(TensorProto.FLOAT), optimize=True).seconds
    assert events == ["send"]
    assert guard._spare is None
    guard.replenish()
    guard.replenish()  # one spare: a second call finds it
    assert events == ["send", "spawn"]
    assert guard._spare is not None and guard._spare.process.poll() is None


def test_a_model_file_on_storage_is_checked_through_a_read_only_descriptor(guard, tmp_path):
    """``--upload-dir``: the unlinked private file cannot be sealed; the child reads it
    through a descriptor opened read-only, never through a path."""
    from blindai.server.model_file import ModelFile

    model = identity(TensorProto.FLOAT)
    with ModelFile(len(model), directory=tmp_path) as file:
        file.write([model])
        assert not file.in_memory and not file.sealed and list(tmp_path.iterdir()) == []
        assert guard.check(file, optimize=True).seconds
        reader = file.reader()
        try:
            with pytest.raises(OSError):
                os.write(reader, b"x")
        finally:
            os.close(reader)


def test_a_child_that_crashes_is_not_reported_as_out_of_memory(guard, caplog):
    """A fault (SIGSEGV) was answered "needs more memory than this server allows": the user
    raised --compile-memory for a model that crashes onnxruntime. A real child is made to
    fault (as onnxruntime faulting in it would) and its exit status is reported."""
    import signal

    from blindai.server.compile_guard import _discard, _report

    child = guard._spawn()
    try:
        os.kill(child.process.pid, signal.SIGSEGV)
        status = child.process.wait(30)
    finally:
        _discard(child)
    assert status == -signal.SIGSEGV
    crashed = r"onnxruntime crashed while compiling the model \(SIGSEGV\)"
    with pytest.raises(InvalidInput, match=crashed):
        _report(status, b"", guard.limits)
    assert "onnxruntime crashed on an upload (SIGSEGV)" in caplog.text
    with pytest.raises(InvalidInput, match="more memory than this server allows"):
        _report(-signal.SIGKILL, b"", guard.limits)  # the kernel's answer to memory
    assert "refused for memory (the child ended on SIGKILL)" in caplog.text  # how, logged


def test_an_abandoned_check_kills_its_child(guard):
    """The client of an upload went away while its model was checked (this one takes about a
    minute to compile): the child is killed at once and the check raises ClientGone."""
    import signal
    import threading

    from blindai.server.abandon import Abandon, ClientGone

    children: list = []

    class Watched(Abandon):
        def stopping(self, stop):
            children.append(stop.__self__)  # the child's Popen (stop is its kill)
            return super().stopping(stop)

    abandon = Watched()

    def leave() -> None:
        for _ in range(6000):  # the child has the job, then the client leaves
            if children:
                break
            threading.Event().wait(0.01)
        abandon.set()

    leaving = threading.Thread(target=leave)
    leaving.start()
    try:
        with pytest.raises(ClientGone):
            guard.check(attacks.wide_ifs(20000), optimize=True, abandon=abandon)
    finally:
        leaving.join()
    assert children and children[0].returncode == -signal.SIGKILL
    assert guard.check(identity(TensorProto.FLOAT), optimize=True).seconds  # usable after


def test_the_compile_timeout_counts_from_the_job_not_the_childs_start():
    """Without a spare (``--no-spare-processes``, or two uploads at once) each check starts its
    own child: an interpreter, onnx and onnxruntime (about 0.3 s here; over 1 s on a busy
    machine). The timeout bounds the model's work only: a tiny model checks within 0.25 s
    though its child takes longer than that to start (refused before: the clock counted it)."""
    guard = CompileGuard(limits=_limits(timeout_s=0.25), spare=False)
    try:
        for _ in range(2):
            assert guard.check(identity(TensorProto.FLOAT), optimize=True).seconds is not None
    finally:
        guard.close()


def test_a_child_that_never_starts_fails_the_check_clearly(monkeypatch):
    """A child that ends before it is set up is no fault of the model's: here it exits with the
    status a child out of memory uses (3), which was reported as the model's need for memory
    when the child ended after the job was sent. And no wait for the start-up bound."""
    import subprocess
    import time

    real = subprocess.Popen

    def broken(args, **kwargs):
        return real([args[0], "-c", "raise SystemExit(3)"], **kwargs)

    guard = CompileGuard(limits=_limits(), spare=False)
    monkeypatch.setattr(subprocess, "Popen", broken)
    started = time.monotonic()
    try:
        with pytest.raises(InvalidInput, match="could not be checked"):
            guard.check(identity(TensorProto.FLOAT), optimize=True)
    finally:
        guard.close()
    assert time.monotonic() - started < 30


def test_a_check_abandoned_before_it_starts_never_runs(guard):
    from blindai.server.abandon import Abandon, ClientGone

    abandon = Abandon()
    abandon.set()
    with pytest.raises(ClientGone):
        guard.check(identity(TensorProto.FLOAT), optimize=True, abandon=abandon)


@pytest.mark.parametrize("isolated", [True, False])
def test_the_report_names_operators_that_end_the_process_on_an_empty_tensor(isolated):
    """The data plane refuses empty inputs for a model with LSTM or GRU (onnxruntime ends its
    process on them): the check, in the child or not, says which the model has."""
    guard = CompileGuard(limits=_limits(), enabled=isolated)
    try:
        assert guard.check(attacks.recurrent("GRU"), optimize=True).empty_unsafe == ("GRU",)
        assert guard.check(identity(TensorProto.FLOAT), optimize=True).empty_unsafe == ()
    finally:
        guard.close()


_FAULTS_CHILD = """
import dataclasses, io, json, resource, sys
from blindai.server import _compile_worker as worker
from blindai.server.model_file import ModelFile
from blindai.server.settings import ServerSettings
worker._prepare()  # the child's own set-up, as it waits for a job
file = ModelFile.holding(sys.stdin.buffer.read())
limits = ServerSettings().compile_limits()
job = {"size": file.size, "optimize": True, "memory_bytes": limits.memory_bytes,
       "intra_op_threads": 1, "admission": dataclasses.asdict(limits.admission)}
out = io.BytesIO()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
worker._run(job, file.reader(), out)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"faults": faults, "answer": json.loads(out.getvalue())}))
"""


def test_the_childs_session_reuses_the_memory_of_the_models_bytes_and_protobuf():
    """The upload of a 500 MB model spent more of its time in page faults than anywhere else:
    the child reads the model (1x), parses it (1x), frees both, then onnxruntime loads it
    (1.2x) into fresh pages that each cost a fault and zeroing. The child keeps what it frees
    in its heap, so onnxruntime's session reuses the pages the bytes and protobuf had."""
    import json
    import subprocess
    import sys

    import numpy as np
    from onnx import helper, numpy_helper

    from blindai.server.compile_guard import _child_env

    n = 16 << 20  # float32: a 64 MiB weight, 16384 pages, as scripts/_realmodels.big_model
    graph = helper.make_graph(
        [helper.make_node("Gather", ["w", "i"], ["g"]), helper.make_node("Add", ["x", "g"], ["y"])],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        initializer=[
            numpy_helper.from_array(np.ones(n, np.float32), "w"),
            numpy_helper.from_array(np.array([0], np.int64), "i"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data = model.SerializeToString()
    done = subprocess.run(
        [sys.executable, "-c", _FAULTS_CHILD],
        input=data,
        env=_child_env(),
        capture_output=True,
        check=True,
        timeout=120,
    )
    got = json.loads(done.stdout)
    assert got["answer"]["ok"] is True
    pages = len(data) // os.sysconf("SC_PAGE_SIZE")
    # measured: 2.0x the model's pages (the bytes 1x, the protobuf 1x; onnxruntime's session
    # reuses them), 5.75x without (its file read, strings and tensors in fresh pages)
    assert got["faults"] < 4 * pages, f"{got['faults']} page faults for {pages} pages"


def test_a_long_one_dimensional_input_does_not_run_the_shape_check_out_of_memory():
    """onnx's data propagation reads a one-dimensional input of static length N reaching
    ``Add`` as N placeholders (about 220 bytes each): ``y = x + x`` with 4 Mi floats took
    about 650 MiB, over the cap here (16 Mi floats, a 64 MiB request: 3.6 GB, refused at the
    default --compile-memory). Such an input is no shape: the check infers without it."""
    n = 4 << 20
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])],
        "long",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    g = CompileGuard(limits=_limits(memory_bytes=256 << 20))
    strict = CompileGuard(limits=_limits(max_tensor_bytes=8 << 20), enabled=False)
    try:
        g.check(model.SerializeToString(), optimize=True)
        # the static check still sees the output's size without data propagation
        with pytest.raises(InvalidInput, match="static shape of 16777216 bytes"):
            strict.check(model.SerializeToString(), optimize=True)
    finally:
        g.close()
        strict.close()


_DYING_SERVER = """
import sys
from pathlib import Path
from blindai.server.admission import AdmissionLimits
from blindai.server.compile_guard import CompileGuard, CompileLimits
admission = AdmissionLimits(max_nodes=10**6, max_subgraph_depth=8, max_tensor_bytes=1 << 30)
limits = CompileLimits(timeout_s=600, memory_bytes=4 << 30, admission=admission)
CompileGuard(limits=limits, spare=False).check(Path(sys.argv[1]).read_bytes(), optimize=True)
"""


def _holds_a_model(pid: int) -> bool:
    """Whether process ``pid`` holds a model's file (the job's descriptor: it is compiling)."""
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return False
    return any("blindai-model" in link for link in links)


def _running(pid: int) -> bool:
    """Whether ``pid`` is a process that has not ended (an ended orphan may stay a zombie
    where nothing reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _cpu_s(pid: int) -> float:
    """The CPU seconds process ``pid`` has used (user and system)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_child_compiling_when_its_server_dies_ends_with_it(tmp_path):
    """The compile timeout is the server's to enforce: a server killed (SIGKILL, a crash, the
    OOM killer) while its child compiled left the child compiling a tenant's model, for as
    long as that took (this one, minutes; a hostile one, without end) and with its memory,
    nobody waiting for the answer. The child is now ended by the kernel once its socket's other
    end closes, also while native code holds the GIL (a watching thread did not run then)."""
    import signal
    import subprocess
    import sys
    import time

    from tests._procs import children
    from tests._server import REPO

    model = tmp_path / "slow.onnx"
    model.write_bytes(attacks.wide_ifs(20000))
    server = subprocess.Popen(
        [sys.executable, "-c", _DYING_SERVER, str(model)],
        env=dict(os.environ, PYTHONPATH=str(REPO / "src")),
    )
    found: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while not (found := {c for c in children(server.pid) if _holds_a_model(c)}):
            assert server.poll() is None and time.monotonic() < deadline, "no child compiled"
            time.sleep(0.05)
        # well into the checks: 3 s of CPU is inside onnx's shape inference of this model
        # (about a minute, the GIL held throughout: no Python code of the child runs then)
        while not all(_cpu_s(c) >= 3 for c in found):
            assert time.monotonic() < deadline, "the child did not work"
            time.sleep(0.05)
        assert all(_running(c) for c in found), "the compile ended by itself: too short"
        server.send_signal(signal.SIGKILL)
        server.wait(30)
        deadline = time.monotonic() + 10
        while any(_running(c) for c in found) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_running(c) for c in found), "the child compiles on without its server"
    finally:
        server.kill()
        server.wait()
        for c in found:
            if _running(c):
                os.kill(c, signal.SIGKILL)
