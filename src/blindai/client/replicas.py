"""Models on every replica: find the replicas behind a name, upload to each, bring one up to date.

A load balancer hides its replicas; uploading through it reaches one of them. The model owner
therefore uploads to each replica directly (:func:`upload_to_replicas`), after verifying each
one: its addresses come from :func:`resolve_replicas`, e.g. the DNS name of a Kubernetes
headless Service, which resolves to every replica's address. :func:`sync_models` copies the
models a replica holds to another one, through the client, after verifying both ends (each
:class:`~blindai.client.Connection` verifies its replica): a replica never receives a model
from anyone but a verified client, and a model leaves a replica only to the owner or an admin
through its management port (``/export``, off unless the server allows it).

Example::

    from functools import partial
    addresses = resolve_replicas(["blindai-replicas.blindai.svc.cluster.local"])
    results = upload_to_replicas(
        addresses, "model.onnx", connect=partial(blindai.connect, policy=policy),
        model_name="clf",
    )
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from blindai.client._transport import check_host
from blindai.client.connection import Connection
from blindai.errors import (
    BlindAIError,
    ConfigurationError,
    InvalidInput,
    NetworkError,
    PayloadTooLarge,
    ProtocolError,
)
from blindai.pipeline.bundle import Pipeline
from blindai.pipeline.limits import PipelineLimits

__all__ = [
    "Connect",
    "ReplicaResult",
    "SyncReport",
    "resolve_replicas",
    "sync_models",
    "upload_to_replicas",
]

Connect = Callable[[str], Connection]
"""``connect(address)``: an attested connection to one replica (the same policy for all)."""


def _addresses(name: str) -> list[str]:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return [name]
    check_host(name)
    try:
        found = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NetworkError(f"cannot resolve {name!r}: {exc.strerror}") from exc
    v4 = [str(info[4][0]) for info in found if info[0] == socket.AF_INET]
    v6 = [str(info[4][0]) for info in found if info[0] == socket.AF_INET6]
    return v4 or v6


def resolve_replicas(names: Sequence[str]) -> list[str]:
    """Every replica address behind ``names`` (IP addresses, or DNS names resolving to one or
    more addresses, such as a headless Service's), in order, without duplicates.

    A name with IPv4 addresses gives those only (a dual-stack Service lists each replica
    twice, once per family); otherwise its IPv6 ones.
    """
    if not names:
        raise ConfigurationError("name at least one replica")
    found: list[str] = []
    for name in names:
        name = name.strip()
        if not name:
            raise ConfigurationError("an empty replica address")
        for address in _addresses(name.strip("[]")):
            if address not in found:
                found.append(address)
    return found


@dataclass(frozen=True)
class ReplicaResult:
    """What happened on one replica: the model's id and hash there, or the error."""

    address: str
    model_id: str | None = None
    hash: bytes | None = None
    error: BlindAIError | None = None

    @property
    def ok(self) -> bool:
        """Whether the upload succeeded."""
        return self.error is None


def upload_to_replicas(
    addresses: Sequence[str],
    model: Any,
    *,
    connect: Connect,
    model_name: str | None = None,
    optimize: bool = True,
    pipeline: Any = None,
    public: bool = False,
    max_batch_size: int | None = None,
    max_queue_delay_us: int | None = None,
    max_concurrent_runs: int | None = None,
    intra_op_threads: int | None = None,
) -> list[ReplicaResult]:
    """Verify each replica and upload ``model`` to it; one result per address, in order.

    A replica that cannot be verified or refuses the model gets an error result; the others
    still receive the model. Each replica gives the model its own id: run it by name or hash.
    The keywords are :meth:`Connection.upload_model <blindai.Connection.upload_model>`'s,
    the same for every replica.

    A path is streamed to each replica from the file, never read into memory whole (a
    multi-GB file was); its SHA-256 is taken first, and a replica that stored other bytes
    (the file rewritten meanwhile) has the model deleted and gets a ConfigurationError: every
    replica that succeeds holds the same bytes.
    """
    expected = None
    if isinstance(model, str | os.PathLike):
        from blindai.client._upload import model_digest

        expected = model_digest(model)
    results = []
    for address in addresses:
        try:
            with connect(address) as conn:
                reply = conn.upload_model(
                    model,
                    model_name=model_name,
                    optimize=optimize,
                    pipeline=pipeline,
                    public=public,
                    max_batch_size=max_batch_size,
                    max_queue_delay_us=max_queue_delay_us,
                    max_concurrent_runs=max_concurrent_runs,
                    intra_op_threads=intra_op_threads,
                )
                if expected is not None and reply.hash != expected:
                    conn.delete_model(reply.model_id)
                    raise ConfigurationError(
                        f"model file {model} changed while it was uploaded: this replica "
                        "stored other bytes than the file held at first (deleted there)"
                    )
        except BlindAIError as exc:
            results.append(ReplicaResult(address, error=exc))
        else:
            results.append(ReplicaResult(address, reply.model_id, reply.hash))
    return results


@dataclass(frozen=True)
class SyncReport:
    """What :func:`sync_models` copied (source model ids), and what was there already."""

    copied: tuple[str, ...] = ()
    present: tuple[str, ...] = ()
    errors: tuple[tuple[str, BlindAIError], ...] = field(default=())


def sync_models(source: Connection, target: Connection) -> SyncReport:
    """Copy to ``target`` every model of ``source`` it lacks (same bytes and name).

    Both connections are verified already (each by its own policy check). Each model is
    exported from the source's management port (owner or admin only; the server must allow
    export) and uploaded to the target with its name, pipeline and optimisation setting. A
    model the target refuses because its pipeline's image step names a ``dtype`` the model
    input is not (that check's InvalidInput, and no other refusal: the same bytes would be sent
    again for nothing) is uploaded once more without it (:func:`_without_image_dtype`): a
    replica restores and exports a model it took before uploads checked that dtype against the
    model input, and the step makes the input's own type whatever it says, so the copy runs as
    the source's.
    """
    have = {(m.hash, m.name) for m in target.list_models()}
    copied: list[str] = []
    present: list[str] = []
    errors: list[tuple[str, BlindAIError]] = []
    for info in source.list_models():
        if (info.hash, info.name) in have:
            present.append(info.model_id)
            continue
        try:
            exported = source.export_model(info.model_id)
            if exported.hash != info.hash:
                raise ProtocolError("the source exported other bytes than it listed")
            pipeline = None
            if exported.pipeline is not None:
                pipeline = Pipeline.from_wire(exported.pipeline, limits=PipelineLimits())
            try:
                reply = target.upload_model(
                    exported.model,
                    model_name=exported.name,
                    optimize=exported.optimize,
                    pipeline=pipeline,
                )
            except InvalidInput as exc:
                relaxed = None if pipeline is None else _without_image_dtype(pipeline, exc)
                if relaxed is None:
                    raise
                reply = target.upload_model(
                    exported.model,
                    model_name=exported.name,
                    optimize=exported.optimize,
                    pipeline=relaxed,
                )
            if reply.hash != info.hash:
                raise ProtocolError("the target stored other bytes than were sent")
        except BlindAIError as exc:
            errors.append((info.model_id, exc))
            continue
        have.add((info.hash, info.name))
        copied.append(info.model_id)
    return SyncReport(tuple(copied), tuple(present), tuple(errors))


_DTYPE_REFUSAL = "the image step says dtype {dtype};"
"""How a server's upload refusal for an image step's dtype begins (``PipelineError`` in
``blindai.pipeline._image.compile_image``), with the dtype the step names."""


def _without_image_dtype(pipeline: Pipeline, refusal: InvalidInput) -> Pipeline | None:
    """``pipeline`` without its image step's ``dtype``, when ``refusal`` is the server's
    refusal of that dtype (None otherwise: a 413, or a refusal for any other reason, would
    only be answered again): only an upload checks it against the model input, which the step
    feeds its own type whatever it says (as the server's restore does:
    ``blindai.server.restore._stored_as_run``)."""
    step = pipeline.spec.get("input")
    if not isinstance(step, Mapping) or step.get("kind") != "image" or "dtype" not in step:
        return None
    if isinstance(refusal, PayloadTooLarge) or (
        _DTYPE_REFUSAL.format(dtype=step["dtype"]) not in str(refusal)
    ):
        return None
    unchecked = {key: value for key, value in step.items() if key != "dtype"}
    return Pipeline({**pipeline.spec, "input": unchecked}, pipeline.files)
