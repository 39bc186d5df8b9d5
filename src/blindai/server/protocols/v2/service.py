"""The Open Inference Protocol's semantics, shared by its REST and gRPC encodings.

:class:`OipService` answers in plain data (dicts shaped as the REST JSON, which is also the
shape of the gRPC messages' fields) and numpy arrays; the REST routes write them as JSON, the
gRPC servicer parses them into protobuf messages. It calls only the data plane.

Models and versions (as Triton): a model is addressed by its name or its id; the uploads of a
name are its versions ``"1"``, ``"2"``, ... (a version may also be given as the model's id);
without a version, the newest upload. The repository index lists every version with its state,
``READY`` or ``UNAVAILABLE`` (reason ``unloaded``).

Access control: every lookup names its caller (a :class:`~blindai.server.access.Principal`,
authenticated from ``Authorization: Bearer KEY`` by the REST middleware or the gRPC servicer)
and goes through the data plane: lookups, the index and statistics see only the models the
caller may run (or list); loading and unloading need the models' owner or the admin key;
another key's private model is a 404, exactly as a missing one.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from blindai._version import __version__
from blindai.errors import InvalidInput, ModelNotFound
from blindai.server._shown import shown_names
from blindai.server.access import Principal
from blindai.server.dataplane import DataPlane, listable, runnable
from blindai.server.protocols.classification import (
    check_classified_size,
    classified_count,
    classify,
    labels_from_metadata,
)
from blindai.server.protocols.v2.datatypes import datatype_for
from blindai.server.registry import ModelEntry, ModelRef
from blindai.server.runtime import TensorSpec
from blindai.server.statistics import PHASES, Duration, Snapshot, Timing

__all__ = [
    "CLASSIFY_ON_LOOP",
    "EXTENSIONS",
    "RESULT_OUTPUT",
    "OipService",
    "Wanted",
    "audited_model",
]

RESULT_OUTPUT = "result"
"""The BYTES output holding a pipeline's result as JSON text."""

EXTENSIONS = ["classification", "model_repository", "statistics", "binary_tensor_data"]
"""The protocol extensions this server supports (server metadata)."""

CLASSIFY_ON_LOOP = 1024
"""A classification of fewer elements is made on the event loop; a larger one in a worker."""

# Triton's statistics fields for each of our phases
_TRITON_PHASES = {
    "decode": "compute_input",
    "queue": "queue",
    "infer": "compute_infer",
    "encode": "compute_output",
}


@dataclass(frozen=True)
class Wanted:
    """An output a request asks for; ``classification``: its top-k count, if asked."""

    name: str
    classification: int | None = None


def _describe(spec: TensorSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "datatype": datatype_for(spec.dtype, spec.onnx_type),
        "shape": [-1 if d is None else d for d in spec.shape],
    }


def _duration(d: Duration) -> dict[str, int]:
    return {"count": d.count, "ns": d.ns}


def _model_stats(entry: ModelEntry, snap: Snapshot) -> dict[str, Any]:
    stats = {"success": _duration(snap.success), "fail": _duration(snap.fail)}
    for phase in PHASES:
        stats[_TRITON_PHASES[phase]] = _duration(snap.phases[phase])
    stats["cache_hit"] = stats["cache_miss"] = _duration(Duration())
    return {
        "name": entry.label,
        "version": str(entry.version),
        "last_inference": snap.last_inference_ms,
        "inference_count": snap.inference_count,
        "execution_count": snap.inference_count,
        "inference_stats": stats,
        "batch_stats": [],
    }


class OipService:
    """Health, metadata, inference, repository and statistics over the data plane."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    def versions(self, name: str, *, caller: Principal) -> list[ModelEntry]:
        """Every version of ``name`` (a model id: that model), oldest first; 404 if none."""
        found = self.plane.versions(name, caller=caller)
        if not found:
            raise ModelNotFound(f"no model with id or name {name!r}")
        return found

    def model(self, name: str, version: str = "", *, caller: Principal) -> ModelEntry:
        """The model a (name, version) pair means: the newest version when none is given."""
        found = [e for e in self.versions(name, caller=caller) if e.has_version(version)]
        if not found:
            raise ModelNotFound(f"model {name!r} has no version {version!r}")
        return found[-1]

    def ready_model(self, name: str, version: str = "", *, caller: Principal) -> ModelEntry:
        """:meth:`model` through the data plane's lookup: ModelNotReady (503) when unloaded.

        An empty name is no model (as for :meth:`model`): the data plane's lookup reads it as
        "the newest model", which the 0.6 run-without-id means, not the Open Inference
        Protocol (gRPC's ``model_name`` may be left empty)."""
        if not name:
            raise ModelNotFound(f"no model with id or name {name!r}")
        return self.plane.model(ModelRef(key=name, version=version or None), caller=caller)

    def missing_models(self) -> int:
        """How many models the server must still hold (and have loaded) to be ready; 0: ready
        (``--require-models``, ``--require-model-count``)."""
        return self.plane.missing_models()

    def is_ready(self, name: str, version: str = "", *, caller: Principal) -> bool:
        """Whether the model exists and is loaded."""
        return self.plane.is_ready(self.model(name, version, caller=caller))

    def server_metadata(self) -> dict[str, Any]:
        """Name, version and supported extensions."""
        return {"name": "blindai", "version": __version__, "extensions": EXTENSIONS}

    def model_metadata(self, name: str, version: str = "", *, caller: Principal) -> dict[str, Any]:
        """Name, versions, platform and tensors of a loaded model."""
        entry = self.ready_model(name, version, caller=caller)
        return {
            "name": entry.label,
            "versions": [str(e.version) for e in self.versions(name, caller=caller)],
            "platform": "onnxruntime_onnx",
            "inputs": [_describe(s) for s in entry.model.inputs],
            "outputs": [_describe(s) for s in entry.model.outputs],
        }

    async def infer(
        self,
        entry: ModelEntry,
        inputs: Sequence[tuple[str | None, np.ndarray]],
        wanted: Sequence[Wanted] | None,
        timing: Timing,
        *,
        caller: Principal,
        disconnected: Callable[[], Awaitable[object]] | None = None,
    ) -> list[tuple[str, np.ndarray]]:
        """Run a model found by :meth:`ready_model` (not looked up again) for ``caller``;
        returns the outputs asked for (all when None), classified if asked. ``disconnected()``
        completes when the client goes away (the run is then stopped)."""
        names = None if wanted is None else [w.name for w in wanted]
        done = await self.plane.run(
            entry, inputs, caller=caller, outputs=names, timing=timing, disconnected=disconnected
        )
        if done.result is not None:  # a pipeline's typed result, as JSON text
            if names is not None and names != [RESULT_OUTPUT]:
                raise InvalidInput(
                    f"a raw input is answered with one output, {RESULT_OUTPUT!r}; the request "
                    f"asks for {len(names)} output(s)"
                )
            text = json.dumps(done.result.to_wire(), separators=(",", ":"))
            return [(RESULT_OUTPUT, np.array([text.encode()], dtype=object))]
        outputs = done.outputs if names is None else _asked(done.outputs, names)
        if wanted is None or all(w.classification is None for w in wanted):
            return outputs
        with timing.phase("encode"):
            labels = labels_from_metadata(entry.model.metadata)
            most = self.plane.settings.max_response_bytes
            found: list[tuple[str, np.ndarray]] = []
            for w, (_, array) in zip(wanted, outputs, strict=True):
                k = w.classification
                if k is None:
                    found.append((w.name, array))
                    continue
                check_classified_size(array, k, w.name, limit=most)
                if classified_count(array, k) >= CLASSIFY_ON_LOOP:
                    found.append(
                        (w.name, await self.plane.offload(classify, array, k, w.name, labels))
                    )
                else:
                    found.append((w.name, classify(array, k, w.name, labels)))
            return found

    def record(
        self, entry: ModelEntry, timing: Timing, *, success: bool, protocol: str, caller: Principal
    ) -> None:
        """Account one request of ``caller`` in the model's statistics and the server's
        metrics."""
        self.plane.record(entry, timing, success=success, protocol=protocol, caller=caller)

    def index(self, *, ready_only: bool = False, caller: Principal) -> list[dict[str, str]]:
        """Every model version ``caller`` may list, with its state (READY or UNAVAILABLE),
        oldest first."""
        rows = []
        for entry in self.plane.entries(listable(caller)):
            ready = self.plane.is_ready(entry)
            if ready_only and not ready:
                continue
            row = {"name": entry.label, "version": str(entry.version)}
            row["state"] = "READY" if ready else "UNAVAILABLE"
            if not ready:
                row["reason"] = "unloaded"
            rows.append(row)
        return rows

    def managed(self, name: str, *, caller: Principal) -> list[ModelEntry]:
        """The versions of ``name`` that ``caller`` may load and unload (its own; any: the
        admin); ModelNotFound when none."""
        return self.plane.managed_versions(name, caller=caller)

    async def load(self, versions: list[ModelEntry], *, caller: Principal) -> None:
        """Load those of ``versions`` (from :meth:`managed`) that are unloaded."""
        await self.plane.load(versions, caller=caller)

    def unload(self, versions: list[ModelEntry]) -> None:
        """Unload ``versions`` (from :meth:`managed`; the bytes stay for :meth:`load`)."""
        self.plane.unload(versions)

    def statistics(
        self, name: str = "", version: str = "", *, caller: Principal
    ) -> tuple[dict[str, Any], str | None]:
        """Triton's statistics document for the versions of ``name`` that ``version`` means
        (ModelNotFound when none), or with no name for every model ``caller`` may run (a
        tenant's key reads its own requests', ``DataPlane.snapshot``); and the audit line's
        model: :func:`audited_model` of a name's versions, None for every model's, even when
        there is one."""
        if name:
            entries = [e for e in self.versions(name, caller=caller) if e.has_version(version)]
            if not entries:
                raise ModelNotFound(f"model {name!r} has no version {version!r}")
        else:
            entries = self.plane.entries(runnable(caller))
        plane = self.plane
        stats = [_model_stats(e, plane.snapshot(e, caller=caller)) for e in entries]
        return {"model_stats": stats}, audited_model(entries) if name else None


def audited_model(entries: Sequence[ModelEntry]) -> str | None:
    """The audit line's model for a request that acted on ``entries`` (the versions of one
    name, loaded, unloaded or read together): the id when it is one model, else None (the
    line has room for one id, and the request's name is the caller's, never written)."""
    return entries[0].model_id if len(entries) == 1 else None


def _asked(outputs: list[tuple[str, np.ndarray]], names: list[str]) -> list[tuple[str, np.ndarray]]:
    """``outputs`` in the order ``names`` asks for them: a raw input to a pipeline without an
    output step runs for all of its model's outputs; a tensor run's are already these."""
    found = dict(outputs)
    unknown = [name for name in names if name not in found]
    if unknown:
        raise InvalidInput(
            f"the model has no output named {shown_names(unknown)[1:-1]}; its outputs: "
            f"{shown_names(found)}"
        )
    return [(name, found[name]) for name in names]
