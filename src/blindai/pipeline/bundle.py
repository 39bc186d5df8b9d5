"""Pipeline: a spec document plus its named files, as the client sends them and the server
receives them. Reading a pipeline needs no tokenizer, image or audio library.

The spec is data (a TOML or JSON document, parsed to a mapping); the files are bytes keyed by a
plain file name. The server never opens a path: file names are only keys into ``files``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from blindai._documents import loads_json, loads_toml
from blindai.errors import ConfigurationError, PipelineError
from blindai.localfiles import read_small
from blindai.pipeline.limits import PipelineLimits

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["FILE_KEYS", "SPEC_NAMES", "Pipeline", "check_file_name", "parse_spec_document"]

#: the spec document a pipeline folder holds (the first one found)
SPEC_NAMES = ("pipeline.toml", "pipeline.json")
#: keys of the ``input`` and ``output`` tables whose value names a file of the pipeline
FILE_KEYS = ("tokenizer", "labels", "vocab")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_MAX_SPEC_BYTES = 64 << 10


def check_file_name(name: object) -> str:
    """A pipeline file name: letters, digits, ``._-``, no path; PipelineError otherwise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise PipelineError(
            f"pipeline file name {name!r} must be 1-128 of A-Z a-z 0-9 . _ - "
            "(no path, not starting with a dot)"
        )
    return name


def parse_spec_document(text: bytes | str, *, name: str) -> dict[str, Any]:
    """Parse a TOML (``*.toml``) or JSON document into the spec mapping."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PipelineError(f"{name} is not UTF-8") from exc
    try:
        doc = loads_toml(text) if name.endswith(".toml") else loads_json(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        kind = "TOML" if name.endswith(".toml") else "JSON"
        raise PipelineError(f"{name} is not valid {kind}: {exc}") from None
    if not isinstance(doc, dict):
        raise PipelineError(f"{name} must hold a table (an object)")
    return doc


def _referenced(spec: Mapping[str, Any]) -> list[str]:
    names: list[str] = []
    for section in ("input", "output"):
        table = spec.get(section)
        if isinstance(table, Mapping):
            names += [table[k] for k in FILE_KEYS if isinstance(table.get(k), str)]
    return names


def _read(path: Path, limit: int) -> bytes:
    """A regular file of at most ``limit`` bytes (a FIFO waited for a writer for ever, and
    ``/dev/zero``, of size 0, was read without end)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise PipelineError(f"cannot read {path}: {exc.strerror}") from exc
    if size > limit:
        raise PipelineError(f"{path} is {size} bytes; pipelines hold at most {limit}")
    try:
        return read_small(path, "pipeline file", limit=limit)
    except ConfigurationError as exc:
        raise PipelineError(str(exc)) from exc


def _read_within(paths: Mapping[str, Path], limit: int, where: str) -> dict[str, bytes]:
    """The files ``paths``, by name, refused (PipelineError naming ``where`` and ``limit``)
    when their sizes add up to more than ``limit`` before any is read (each was read up to the
    whole limit: six files named by a spec, 32 MiB each, were read before the server refused
    them); each is then read within what the others leave, should one grow meanwhile."""
    sizes: dict[str, int] = {}
    for name, path in paths.items():
        try:
            sizes[name] = path.stat().st_size  # a FIFO's is 0: refused, unwaited, when read
        except OSError as exc:
            raise PipelineError(f"cannot read {path}: {exc.strerror}") from exc
    total = sum(sizes.values())
    if total > limit:
        default = limit == PipelineLimits().max_files_bytes
        raise PipelineError(
            f"{where}: the pipeline files hold {total} bytes together; a pipeline holds at most "
            f"{limit}" + (" (the server's default --max-pipeline-bytes)" if default else "")
        )
    read: dict[str, bytes] = {}
    for name, path in paths.items():
        read[name] = _read(path, limit - sum(len(data) for data in read.values()))
    return read


@dataclass(frozen=True)
class Pipeline:
    """A pipeline to upload with a model: the spec mapping and the files it names.

    Example::

        pipe = Pipeline.from_dir("minilm-pipeline/")   # pipeline.toml + tokenizer.json
        conn.upload_model("minilm.onnx", model_name="minilm", pipeline=pipe)
        conn.predict("minilm", text="A man is eating food.")
    """

    spec: Mapping[str, Any]
    files: Mapping[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", MappingProxyType(dict(self.files)))

    @classmethod
    def from_dir(
        cls, path: str | os.PathLike[str], *, limits: PipelineLimits | None = None
    ) -> Pipeline:
        """Read ``pipeline.toml`` (or ``pipeline.json``) and the files its spec names, at most
        ``limits.max_files_bytes`` of them together, counted before any is read. Symbolic links
        in the folder are followed (a Hugging Face cache folder is made of them): the file a
        link names, wherever it is, is what is read and uploaded."""
        limits = limits or PipelineLimits()
        folder = Path(path)
        for spec_name in SPEC_NAMES:
            if (folder / spec_name).is_file():
                break
        else:
            raise PipelineError(f"{folder} holds no {' or '.join(SPEC_NAMES)}")
        spec = parse_spec_document(_read(folder / spec_name, _MAX_SPEC_BYTES), name=spec_name)
        paths = {name: folder / check_file_name(name) for name in _referenced(spec)}
        return cls(spec, _read_within(paths, limits.max_files_bytes, f"pipeline folder {folder}"))

    @classmethod
    def from_files(
        cls,
        spec: Mapping[str, Any] | str | os.PathLike[str],
        files: Mapping[str, bytes | str | os.PathLike[str]] | None = None,
        *,
        limits: PipelineLimits | None = None,
    ) -> Pipeline:
        """A spec (mapping, or path to a TOML/JSON file) and files (bytes, or paths), by name."""
        limits = limits or PipelineLimits()
        if not isinstance(spec, Mapping):
            spec_path = Path(spec)
            spec = parse_spec_document(_read(spec_path, _MAX_SPEC_BYTES), name=spec_path.name)
        given: dict[str, bytes] = {}
        paths: dict[str, Path] = {}
        for name, value in (files or {}).items():
            check_file_name(name)
            if isinstance(value, bytes | bytearray):
                given[name] = bytes(value)
            else:
                paths[name] = Path(value)
        read = _read_within(paths, limits.max_files_bytes, "Pipeline.from_files")
        return cls(dict(spec), {n: given[n] if n in given else read[n] for n in files or {}})

    def to_wire(self) -> dict[str, Any]:
        """The ``pipeline`` value of a 0.6 ``/upload``: ``{"spec": map, "files": {name: bytes}}``"""
        return {"spec": dict(self.spec), "files": dict(self.files)}

    @classmethod
    def from_wire(cls, value: object, *, limits: PipelineLimits) -> Pipeline:
        """Validate the shape and sizes of an uploaded pipeline (not yet its content).

        The spec's own size is bounded by the request body limit, its content by the schema.
        """
        if not isinstance(value, Mapping) or set(value) - {"spec", "files"}:
            raise PipelineError("pipeline must be a map with keys spec and files")
        spec, files = value.get("spec"), value.get("files", {})
        if not isinstance(spec, Mapping) or not all(isinstance(k, str) for k in spec):
            raise PipelineError("pipeline spec must be a map with text keys")
        if not isinstance(files, Mapping):
            raise PipelineError("pipeline files must be a map of file name to bytes")
        if len(files) > limits.max_files:
            raise PipelineError(f"a pipeline holds at most {limits.max_files} files")
        total = 0
        for name, data in files.items():
            check_file_name(name)
            if not isinstance(data, bytes):
                raise PipelineError(f"pipeline file {name!r} must be a byte string")
            total += len(data)
        if total > limits.max_files_bytes:
            raise PipelineError(
                f"pipeline files are {total} bytes; this server accepts at most "
                f"{limits.max_files_bytes}"
            )
        return cls(dict(spec), dict(files))
