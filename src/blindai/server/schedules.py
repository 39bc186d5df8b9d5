"""How each model runs: its session's threads, its runs' policy and its share of the workers.

A model's :class:`Schedule` comes from the settings of its upload, each unset one taken from
the server's (:meth:`Schedules.schedule`). Identical bytes share one session
(``registry.share_key``), which runs with the schedule of the upload (or load) whose compile
made it; each model also keeps the schedule it was uploaded with, for a load that compiles it
again. :meth:`Schedules.slots` gives a session's share of the inference workers (its
``max_concurrent_runs``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from blindai.errors import InvalidInput
from blindai.server.batching import BatchPolicy
from blindai.server.registry import ModelEntry, ModelRegistry
from blindai.server.settings import ModelSettings, ServerSettings

__all__ = ["Schedule", "Schedules"]


@dataclass(frozen=True)
class Schedule:
    """How one model runs: its session's threads and its runs' policy."""

    intra_op_threads: int
    policy: BatchPolicy
    batch_asked: bool
    """Whether the upload itself asked for a batch size (then a model that cannot be batched
    is refused rather than run unbatched)."""
    optimize: bool = True
    """Whether the upload asked for onnxruntime's graph optimisations (a load compiles the
    model again as it was uploaded)."""


def _given(value: int | None, default: int) -> int:
    return default if value is None else value


class Schedules:
    """The schedule of each session and each model, and each session's run slots."""

    def __init__(self, settings: ServerSettings, registry: ModelRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self.by_share: dict[bytes, Schedule] = {}
        """How each session runs: the settings of the upload (or load) whose compile made it."""
        self.own: dict[str, Schedule] = {}
        """The settings each model was uploaded with (a load that compiles it uses them)."""
        self.model_slots: dict[bytes, asyncio.Semaphore] = {}
        """Each session's share of the inference workers (:meth:`slots`), made at its first
        run."""

    def schedule(self, asked: ModelSettings, *, optimize: bool = True) -> Schedule:
        """The upload's settings, each unset one taken from the server's; ``optimize``: the
        upload's own."""
        s = self.settings
        batch = _given(asked.max_batch_size, s.max_batch_size)
        default_runs = s.max_concurrent_runs
        if batch > 1 and "max_concurrent_runs" not in s.model_fields_set:
            default_runs = 1  # a batching model runs together what waits: one batch at a time
        # the server's default within --max-model-runs; a model's own ask beyond it is refused
        runs = _given(asked.max_concurrent_runs, min(default_runs, s.model_runs))
        if runs > s.model_runs:
            raise InvalidInput(
                f"max_concurrent_runs {runs} is more than this server lets one model run at "
                f"once ({s.model_runs}, --max-model-runs)"
            )
        policy = BatchPolicy(
            max_batch_size=batch,
            max_queue_delay_us=_given(asked.max_queue_delay_us, s.max_queue_delay_us),
            max_concurrent_runs=runs,
        )
        threads = _given(asked.intra_op_threads, s.intra_op_threads)
        return Schedule(threads, policy, asked.max_batch_size is not None, optimize)

    def adopt(self, share: bytes, schedule: Schedule) -> None:
        """The session for ``share`` now is one compiled with ``schedule``: its runs at once
        are that schedule's (the slots of a session released before go with it)."""
        self.by_share[share] = schedule
        self.model_slots.pop(share, None)

    def for_load(self, entry: ModelEntry) -> Schedule:
        """The schedule a load compiles ``entry`` again with: its upload's, else its session's,
        else the server's."""
        return (
            self.own.get(entry.model_id)
            or self.by_share.get(entry.share)
            or self.schedule(ModelSettings())
        )

    def forget_model(self, model_id: str) -> None:
        """Forget the schedule a deleted model was uploaded with."""
        self.own.pop(model_id, None)

    def forget_session(self, share: bytes) -> None:
        """Forget a session no model shares any more: its schedule and run slots."""
        self.model_slots.pop(share, None)
        self.by_share.pop(share, None)

    def slots(self, entry: ModelEntry) -> asyncio.Semaphore:
        """The model's share of the inference workers: its ``max_concurrent_runs``, at most
        ``ServerSettings.model_runs``."""
        slots = self.model_slots.get(entry.share)
        if slots is None:
            schedule = self.by_share.get(entry.share)
            runs = self.settings.model_runs
            if schedule is not None:  # the model's own max_concurrent_runs, within the cap
                runs = min(runs, schedule.policy.max_concurrent_runs)
            slots = asyncio.Semaphore(runs)
            # kept for a model still there only: a request that found its model before the
            # delete left slots behind, which the same bytes uploaded again then took (with
            # the server's runs, not those the new upload asked for)
            if self.registry.holds(entry.model_id):
                self.model_slots[entry.share] = slots
        return slots
