"""Start-up: attester, TLS identity, evidence, then three uvicorn servers on one event loop.

Each port's server applies the connection limits (``blindai.server.connections``); the process
caps onnxruntime's arena at ``max_run_memory`` and reserves file descriptors for
``max_connections`` on every port (docs/limits.md). SIGTERM and SIGINT stop every port at once
(``blindai.server.shutdown``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from blindai._malloc import keep_freed_memory
from blindai._version import __version__
from blindai.attestation.claims import EvidenceKind
from blindai.attestation.simulation import WARNING as SIMULATION_WARNING
from blindai.errors import ConfigurationError
from blindai.localfiles import open_regular
from blindai.server.access import AccessControl, AuditLog, KeyRing
from blindai.server.app import Apps, create_apps
from blindai.server.attesters.base import Attester
from blindai.server.attesters.nvidia_gpu import NvidiaGpuAttester
from blindai.server.connections import LimitedServer, reserve_file_descriptors
from blindai.server.dataplane import OPENED_CLOSED_STORE
from blindai.server.evidence import EvidenceService
from blindai.server.metrics import Metrics
from blindai.server.native_stderr import divert_native_stderr
from blindai.server.no_dumps import forbid_dumps, swap_warning
from blindai.server.registry import ModelRegistry
from blindai.server.run_guard import cap_arena
from blindai.server.runtime import check_device, check_environment
from blindai.server.settings import ServerSettings
from blindai.server.shutdown import GracefulStop
from blindai.server.store import KeySourcePaths, SealedStore, store_key_source
from blindai.server.tls import TlsIdentity, hardened_server_context

__all__ = [
    "INPUT_WARNINGS",
    "Built",
    "build",
    "http_listeners",
    "quiet_input_warnings",
    "serve",
    "set_log_level",
]

_log = logging.getLogger("blindai.server")
_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_BACKLOG = 2048
"""uvicorn's default listen backlog, which it sets again when it starts serving."""


_OWN_LOGGER = "blindai"
"""The one logger ``--log-level`` makes more verbose than WARNING: the server's own lines hold
no request data or model bytes. Every other library stays at WARNING or above: Pillow's DEBUG
lines quote the EXIF tags of a client's image (description, camera, position), and a library
that never promised otherwise may log what it parses."""


INPUT_WARNINGS = r"(PIL|blindai\.pipeline)(\.|$)"
"""Modules whose Python warnings are not shown: they decode what clients send, and their
warnings quote it. Pillow warns of each EXIF tag whose data runs past the file, by its number
(up to 65535 lines for one request), and of an image over its bomb threshold, by its pixel
count; the serve command printed each to stderr, which leaves the TEE."""


def quiet_input_warnings() -> None:
    """Ignore the warnings of :data:`INPUT_WARNINGS` modules, for the whole process (the
    inference workers are threads: ``warnings.catch_warnings`` is not thread-safe)."""
    warnings.filterwarnings("ignore", module=INPUT_WARNINGS)


def set_log_level(name: str) -> None:
    """Apply ``--log-level``: the server's loggers at ``name``, every other library's at
    ``name`` or WARNING, whichever is less verbose (ConfigurationError for an unknown name)."""
    level = logging.getLevelName(name.upper())
    if not isinstance(level, int):
        raise ConfigurationError(f"unknown log level {name!r}")
    logging.getLogger().setLevel(max(level, logging.WARNING))
    logging.getLogger(_OWN_LOGGER).setLevel(level)


@dataclass(frozen=True)
class Built:
    """Everything a running server holds."""

    settings: ServerSettings
    apps: Apps
    service: EvidenceService
    notes: tuple[tuple[int, str], ...] = ()
    """(level, message): what the banner says about the store and access control."""


def _attester(settings: ServerSettings) -> Attester:
    if settings.is_simulation:
        from blindai.server.attesters.simulation import SimulationAttester

        given = settings.simulation_measurement
        return SimulationAttester(measurement=bytes.fromhex(given) if given else None)
    try:
        from blindai.server.attesters.select import AttesterPaths, select_attester
    except ImportError as exc:  # pragma: no cover - providers ship with the server
        raise ConfigurationError("no TEE evidence provider is installed") from exc
    paths = AttesterPaths.from_settings(settings)
    return select_attester(settings.tee, paths=paths, pccs_url=settings.pccs_url)


_Notes = list[tuple[int, str]]


def _open_store(settings: ServerSettings, kind: EvidenceKind, notes: _Notes) -> SealedStore | None:
    if settings.store is None:
        notes.append(
            (logging.INFO, "store: none, models and API keys go when the server stops (--store)")
        )
        return None
    paths = KeySourcePaths(
        store_dir=settings.store,
        attestation_dir=settings.attestation_dir,
        sev_guest_device=settings.sev_guest_device,
    )
    source = store_key_source(kind, paths=paths, key_file=settings.store_key_file)
    # an entry holds a model and its pipeline: within what one upload may carry
    most = settings.max_model_bytes + settings.max_pipeline_bytes + (1 << 20)
    store = SealedStore(
        settings.store,
        key_material=source.material(),
        max_entry_bytes=most,
        rebuild_manifest=settings.store_rebuild_manifest,
    )
    notes.append((logging.INFO, f"store: {settings.store}, key: {source.description}"))
    if not source.protects:
        notes.append(
            (logging.WARNING, "*** the store protects nothing: its key lies beside it ***")
        )
    return store


def _access(settings: ServerSettings, store: SealedStore | None, notes: _Notes) -> AccessControl:
    records = store.load_keys() if store is not None else []
    secret = store.api_key_secret if store is not None else os.urandom(32)
    if records and settings.admin_digest is None:
        raise ConfigurationError(OPENED_CLOSED_STORE.format(what="API-key records written"))
    if store is not None and settings.admin_digest is not None:
        before = store.serve_under(settings.admin_digest)
        if before and settings.admin_digest.hex() not in before:
            notes.append(
                (
                    logging.WARNING,
                    f"store: served before under {len(before)} other admin key(s); the store "
                    "keeps every admin key's hash and states them to clients "
                    "(store_admin_keys), whose policy may refuse it",
                )
            )
    keyring = KeyRing(
        admin_key_sha256=settings.admin_digest,
        secret=secret,
        store=store,
        records=records,
        revoked=store.revoked_keys if store is not None else (),
    )
    if keyring.enabled:
        notes.append((logging.INFO, f"access control: on ({len(records)} API keys)"))
    else:
        notes.append(
            (
                logging.WARNING,
                "access control: OFF, anyone who reaches the attested ports may upload, run, "
                "list and delete every model (--admin-key-sha256 turns it on)",
            )
        )
    return AccessControl(keyring, AuditLog.open(settings.audit_log))


def _gpu_attester(settings: ServerSettings) -> NvidiaGpuAttester | None:
    """Outside simulation, models on a GPU need its evidence: NVML, or refuse to start."""
    if settings.device != "cuda":
        return None
    if settings.is_simulation:
        _log.warning("simulation on --device cuda: no GPU evidence is served")
        return None
    return NvidiaGpuAttester.open(settings.gpu_index)


def build(
    settings: ServerSettings,
    *,
    attester: Attester | None = None,
    gpu_attester: NvidiaGpuAttester | None = None,
) -> Built:
    """Check the environment and the device, create the identity, collect the first evidence
    (fail early), open the store, restore its models and keys, build.

    ``gpu_attester`` replaces the NVML one ``device = "cuda"`` chooses (tests give a double).
    """
    check_environment(os.environ)
    check_device(settings.device, settings.gpu_index)
    _check_upload_dir(settings.upload_dir)
    if settings.is_simulation:
        _log.warning("*** %s ***", SIMULATION_WARNING)
    chosen = attester or _attester(settings)
    gpu = gpu_attester or _gpu_attester(settings)
    service = EvidenceService(TlsIdentity.generate(), chosen, gpu, Metrics())
    service.evidence()
    service.gpu_evidence()
    cap_arena(settings.max_run_memory)
    notes: _Notes = []
    if not settings.empty_kernel_proofs:
        ended = (
            "its own model's process (--run-isolation process)"
            if settings.run_isolation == "process"
            else "this server's process for everyone"
        )
        notes.append(
            (
                logging.WARNING,
                "--no-empty-kernel-proofs: a tenant's model built to make an empty tensor "
                f"before LSTM, GRU or a contrib kernel that fails on one can end {ended} "
                "(docs/limits.md)",
            )
        )
    if settings.run_isolation == "process":
        notes.append(
            (
                logging.INFO,
                "run isolation: each model runs in a process of its own, --max-run-memory "
                "for each (docs/limits.md)",
            )
        )
    store = _open_store(settings, chosen.kind, notes)
    access = _access(settings, store, notes)
    registry = ModelRegistry(max_models=settings.max_models)
    apps = create_apps(settings, registry, service, access=access, store=store)
    apps.plane.compile_guard.warm()
    if apps.plane.hosts is not None:
        apps.plane.hosts.warm()  # the first model's host then skips the interpreter's start
    if store is not None:
        restored = apps.plane.restore()
        refused = f", {len(store.refused)} entries refused" if store.refused else ""
        notes.append((logging.INFO, f"store: {restored} models restored{refused}"))
    return Built(settings, apps, service, tuple(notes))


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say TCP
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted sockets
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    # listening from now on: a client that reached one port (readiness probes ask the
    # unattested one) is queued on the others until their server starts, never refused
    sock.listen(_BACKLOG)
    sock.set_inheritable(True)
    return sock


def _check_upload_dir(directory: Path | None) -> None:
    """ConfigurationError unless ``--upload-dir`` (when given) is a directory this server can
    make files in: else every upload would be a 500."""
    if directory is None:
        return
    try:
        with tempfile.TemporaryFile(prefix="blindai-model-", dir=directory):
            pass  # as an upload's file is made there (mode 0600, unlinked)
    except OSError as exc:
        raise ConfigurationError(
            f"--upload-dir {directory}: cannot make a file there ({exc.strerror})"
        ) from exc


def _unattested_tls(settings: ServerSettings) -> ssl.SSLContext | None:
    """HTTPS for the unattested port with an ordinary certificate, when configured."""
    cert, key = settings.unattested_tls_cert, settings.unattested_tls_key
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigurationError("give both --unattested-tls-cert and --unattested-tls-key")
    for path, what in ((cert, "--unattested-tls-cert"), (key, "--unattested-tls-key")):
        open_regular(path, what).close()  # a FIFO would hang the start in load_cert_chain
    ctx = hardened_server_context()
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"cannot load the unattested-port certificate: {exc}") from exc
    return ctx


_AUDITED_PORTS = frozenset({"attested", "management"})
"""The HTTP ports whose requests the access middleware checks and writes to the audit log."""


def http_listeners(settings: ServerSettings) -> list[tuple[str, str, int]]:
    """The HTTP ports to open, as (role, host, port): the three on ``--host``, and the plain
    metrics port (when set) on 127.0.0.1 only, whatever ``--host`` says."""
    s = settings
    listeners = [
        ("unattested", s.listen_host, s.unattested_port),
        ("attested", s.listen_host, s.attested_port),
        ("management", s.listen_host, s.management_port),
    ]
    if s.metrics_port:
        listeners.append(("metrics", "127.0.0.1", s.metrics_port))
    return listeners


async def _serve(built: Built) -> None:
    s = built.settings
    tls = built.service.identity.server_context()
    apps: dict[str, tuple[ASGIApp, ssl.SSLContext | None]] = {
        "unattested": (built.apps.unattested, _unattested_tls(s)),
        "attested": (built.apps.attested, tls),
        "management": (built.apps.management, tls),
        "metrics": (built.apps.metrics_only, None),
    }
    listeners = http_listeners(s)
    ports = len(listeners) + (1 if s.grpc_port else 0)  # gRPC's cap is max_connections too
    reserve_file_descriptors(ports * s.max_connections)
    limits = s.connection_limits()
    servers = []
    sockets = []
    for label, host, port in listeners:
        app, ctx = apps[label]
        sock = _bind(host, port)
        sockets.append(sock)
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            server_header=False,
            lifespan="off",
        )
        config.load()
        server = LimitedServer(
            config,
            limits=limits,
            tls=ctx,
            budget=built.apps.body_budget,
            # the ports whose requests are audited: a head refused unread gets its line too
            unread=built.apps.access.audit.unread if label in _AUDITED_PORTS else None,
        )
        built.apps.metrics.count_connections(label, _open_connections(server))
        servers.append((server, sock))
    grpc_server = None
    if s.grpc_port:
        from blindai.server.protocols.grpc.server import start_grpc_server

        grpc_server, _ = await start_grpc_server(
            built.apps.oip,
            access=built.apps.access,
            identity=built.service.identity,
            host=s.listen_host,
            port=s.grpc_port,
            settings=s,
            budget=built.apps.body_budget,
        )
    stop = GracefulStop(
        [srv for srv, _ in servers], timeout_s=s.shutdown_timeout, grpc_server=grpc_server
    )
    stop.install()
    _log.info("%s", _banner(built))
    for level, note in built.notes:
        _log.log(level, "%s", note)
    try:
        await asyncio.gather(*(srv.serve(sockets=[sock]) for srv, sock in servers))
    finally:
        await stop.finish()


def _open_connections(server: uvicorn.Server) -> Callable[[], int]:
    return lambda: len(server.server_state.connections)


def _banner(built: Built) -> str:
    """The start-up line: what runs, where, and whether a simulation is reachable from afar."""
    s = built.settings
    host = s.listen_host
    what = "SIMULATION (mock, no TEE)" if s.is_simulation else built.service.attester.kind.value
    gpu = " (GPU evidence served)" if built.service.gpu is not None else ""
    line = (
        f"BlindAI {__version__} {what} on {s.device}{gpu}: "
        f"unattested {'https' if s.unattested_tls_cert else 'http'}"
        f"://{host}:{s.unattested_port}, attested https://{host}:{s.attested_port}, "
        f"management https://{host}:{s.management_port}"
    )
    if s.grpc_port:
        line += f", gRPC (attested TLS) {host}:{s.grpc_port}"
    if s.metrics_port:
        line += f", plain-HTTP metrics on http://127.0.0.1:{s.metrics_port}/metrics"
    if s.is_simulation and host not in _LOOPBACK:
        line += f"; this simulation is EXPOSED on {host}: reachable by other machines"
    elif s.is_simulation:
        line += "; this simulation listens on loopback only (--host 0.0.0.0 exposes it)"
    return line


def serve(
    settings: ServerSettings,
    *,
    attester: Attester | None = None,
    gpu_attester: NvidiaGpuAttester | None = None,
) -> None:
    """Run the server until interrupted (its memory never in a core file: ``no_dumps``; what
    native libraries write to stderr counted, not shown: ``native_stderr``; the warnings of the
    libraries that decode raw inputs not shown: :func:`quiet_input_warnings`)."""
    diverted = divert_native_stderr()
    quiet_input_warnings()
    try:
        _serve_until_stopped(settings, attester=attester, gpu_attester=gpu_attester)
    finally:
        if diverted is not None:
            diverted.restore()


def _serve_until_stopped(
    settings: ServerSettings,
    *,
    attester: Attester | None,
    gpu_attester: NvidiaGpuAttester | None,
) -> None:
    for problem in forbid_dumps().problems:
        _log.warning(
            "%s: outside an SGX enclave, a crash may write tenants' data to disk "
            "(docs/server.md#memory)",
            problem,
        )
    swapping = swap_warning()
    if swapping is not None:
        _log.warning("%s", swapping)
    built = build(settings, attester=attester, gpu_attester=gpu_attester)
    # three uvicorn servers would each say "Started server process": the banner says it once
    uvicorn_log = logging.getLogger("uvicorn.error")
    if not uvicorn_log.isEnabledFor(logging.DEBUG):
        uvicorn_log.setLevel(logging.WARNING)
    keep_freed_memory(settings.keep_freed_memory)
    try:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvicorn[standard] brings it on Linux
            asyncio.run(_serve(built))
        else:
            uvloop.run(_serve(built))
    finally:
        built.apps.close()
    _log.info("stopped")
