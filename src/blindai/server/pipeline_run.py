"""A pipeline's run in a worker thread: preprocess, run, postprocess (:mod:`blindai.pipeline`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from blindai.errors import InferenceFailed, InvalidInput, PipelineError
from blindai.pipeline.results import PipelineResult
from blindai.server.inputs import match_inputs
from blindai.server.preprocess_budget import PreprocessBudget
from blindai.server.registry import ModelEntry
from blindai.server.statistics import Timing

__all__ = ["Inference", "invalid_input", "run_pipeline"]


@dataclass(frozen=True)
class Inference:
    """The model that ran, and its outputs as (name, array), in the order asked for."""

    entry: ModelEntry
    outputs: list[tuple[str, np.ndarray]]
    result: PipelineResult | None = None
    """The pipeline's typed result, for a raw input to a pipeline with an output step."""


@contextmanager
def invalid_input() -> Iterator[None]:
    """A pipeline error caused by what the request sent is InvalidInput (400)."""
    try:
        yield
    except PipelineError as exc:
        raise InvalidInput(str(exc)) from exc


def run_pipeline(
    entry: ModelEntry,
    raw: bytes | str,
    budget: PreprocessBudget,
    key: str | None,
    caller: str | None,
    timing: Timing,
    submitted: int,
    run_options: ort.RunOptions,
) -> Inference:
    """Preprocess (``decode``), run (``infer``), postprocess (``encode``), in a worker thread
    that started after ``submitted`` (``queue``, from :func:`time.perf_counter_ns`); the
    preprocessing's worst case is held in ``budget`` (for the tenant's ``key``) until the run
    is over. ``caller``: the key id that sent ``raw`` (None: an open server's caller)."""
    timing.add("queue", time.perf_counter_ns() - submitted)
    pipe = entry.pipeline
    assert pipe is not None
    with timing.phase("decode"), invalid_input():
        cost = pipe.preprocess_cost(raw)
    with budget.holding(cost, key):
        with timing.phase("decode"):
            with invalid_input():
                prepared = pipe.preprocess(raw, stop=lambda: run_options.terminate)
            feeds = match_inputs(
                entry.model.inputs,
                list(prepared.feeds.items()),
                empty_unsafe=entry.model.empty_unsafe,
            )
        with timing.phase("infer"):
            outputs = entry.model.predict(feeds, run_options=run_options, caller=caller)
        with timing.phase("encode"):
            try:
                result = pipe.postprocess(dict(outputs), prepared)
            except PipelineError as exc:
                raise InferenceFailed(f"the pipeline failed on the model's outputs: {exc}") from exc
    return Inference(entry, outputs, result)
