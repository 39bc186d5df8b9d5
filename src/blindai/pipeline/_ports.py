"""What a pipeline needs to know of a model: its inputs and outputs (name, dtype, shape)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from blindai.errors import PipelineError
from blindai.server._shown import shown, shown_names

__all__ = ["Port", "Prepared", "pick_port", "require_file"]


class Port(Protocol):
    """A model input or output; the server's ``TensorSpec`` is one."""

    @property
    def name(self) -> str: ...

    @property
    def dtype(self) -> np.dtype[Any] | None: ...

    @property
    def shape(self) -> tuple[int | None, ...]: ...


@dataclass(frozen=True)
class Prepared:
    """The model feeds made from one raw input, plus the token mask for output steps."""

    feeds: Mapping[str, np.ndarray]
    mask: np.ndarray | None = field(default=None, repr=False)


def pick_port(ports: Sequence[Port], name: str | None, what: str) -> Port:
    """The port called ``name``, or the model's only (input) / first (output) one."""
    if name is None:
        if what == "input" and len(ports) != 1:
            raise PipelineError(
                f"the model has {len(ports)} inputs {shown_names(p.name for p in ports)}; "
                "name the one this step feeds (input = ...)"
            )
        return ports[0]
    for port in ports:
        if port.name == name:
            return port
    raise PipelineError(
        f"the model has no {what} named {shown(name)}; {what}s: "
        f"{shown_names(p.name for p in ports)}"
    )


def require_file(files: Mapping[str, bytes], name: str, what: str) -> bytes:
    """A file of the pipeline that the spec names."""
    data = files.get(name)
    if data is None:
        raise PipelineError(f"the spec names {what} {name!r}, but the pipeline has no such file")
    return data


def dims_fit(want: tuple[int | None, ...], got: tuple[int | None, ...]) -> bool:
    """Whether a shape the step makes (None: varies) fits a model port's shape."""
    return len(want) == len(got) and all(
        w is None or g is None or w == g for w, g in zip(want, got, strict=True)
    )
