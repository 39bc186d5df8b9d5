"""Pipeline bundles: reading a folder, wire shape and size limits, file names."""

from __future__ import annotations

import json

import pytest

from blindai.errors import PipelineError
from blindai.pipeline import Pipeline, PipelineLimits
from blindai.pipeline.bundle import check_file_name

TOML = b"""
version = 1
[input]
kind = "text"
tokenizer = "tokenizer.json"
max_length = 8
[output]
kind = "labels"
labels = "labels.txt"
"""


def test_from_dir_reads_the_spec_and_only_the_files_it_names(tmp_path):
    (tmp_path / "pipeline.toml").write_bytes(TOML)
    (tmp_path / "tokenizer.json").write_bytes(b"{}")
    (tmp_path / "labels.txt").write_bytes(b"a\nb\n")
    (tmp_path / "secret.key").write_bytes(b"not for the server")
    pipe = Pipeline.from_dir(tmp_path)
    assert pipe.spec["input"]["max_length"] == 8
    assert dict(pipe.files) == {"tokenizer.json": b"{}", "labels.txt": b"a\nb\n"}
    assert pipe.to_wire() == {"spec": dict(pipe.spec), "files": dict(pipe.files)}


def test_from_dir_json_spec(tmp_path):
    spec = {"input": {"kind": "image"}}
    (tmp_path / "pipeline.json").write_text(json.dumps(spec))
    assert Pipeline.from_dir(tmp_path) == Pipeline(spec, {})


def test_from_dir_errors(tmp_path):
    with pytest.raises(PipelineError, match=r"holds no pipeline.toml or pipeline.json"):
        Pipeline.from_dir(tmp_path)
    (tmp_path / "pipeline.toml").write_bytes(TOML)
    with pytest.raises(PipelineError, match=r"cannot read .*tokenizer\.json"):
        Pipeline.from_dir(tmp_path)
    (tmp_path / "pipeline.toml").write_bytes(b"[input\n")
    with pytest.raises(PipelineError, match=r"pipeline\.toml is not valid TOML"):
        Pipeline.from_dir(tmp_path)
    (tmp_path / "pipeline.toml").write_bytes(b"a = " + b"[" * 30_000)  # nested too deeply
    with pytest.raises(PipelineError, match=r"pipeline\.toml is not valid TOML: .* nests deeper"):
        Pipeline.from_dir(tmp_path)
    (tmp_path / "pipeline.toml").write_bytes(b'[input]\nkind = "text"\ntokenizer = "../x"\n')
    with pytest.raises(PipelineError, match=r"pipeline file name '\.\./x'"):
        Pipeline.from_dir(tmp_path)


def test_from_dir_refuses_big_files(tmp_path):
    (tmp_path / "pipeline.toml").write_bytes(TOML)
    (tmp_path / "tokenizer.json").write_bytes(b"x" * 200)
    (tmp_path / "labels.txt").write_bytes(b"a\n")
    with pytest.raises(
        PipelineError, match="files hold 202 bytes together; a pipeline holds at most 100"
    ):
        Pipeline.from_dir(tmp_path, limits=PipelineLimits(max_files_bytes=100))


def test_from_dir_bounds_the_files_together_before_reading_any(tmp_path):
    # each file was read up to the whole bound: two of 60 bytes, under 100 each, passed
    (tmp_path / "pipeline.toml").write_bytes(TOML)
    (tmp_path / "tokenizer.json").write_bytes(b"x" * 60)
    (tmp_path / "labels.txt").write_bytes(b"a\n" * 30)
    with pytest.raises(PipelineError, match=r"pipeline folder .*: the pipeline files hold 120 "):
        Pipeline.from_dir(tmp_path, limits=PipelineLimits(max_files_bytes=100))
    with pytest.raises(PipelineError, match=r"Pipeline.from_files: the pipeline files hold 120 "):
        Pipeline.from_files(
            {},
            {"a": tmp_path / "tokenizer.json", "b": tmp_path / "labels.txt", "c": b""},
            limits=PipelineLimits(max_files_bytes=100),
        )
    pipe = Pipeline.from_dir(tmp_path, limits=PipelineLimits(max_files_bytes=120))
    assert len(pipe.files["tokenizer.json"]) == 60


def test_from_files_takes_bytes_and_paths(tmp_path):
    (tmp_path / "labels.txt").write_bytes(b"x\n")
    pipe = Pipeline.from_files(
        {"input": {"kind": "image"}, "output": {"kind": "labels", "labels": "labels.txt"}},
        {"labels.txt": tmp_path / "labels.txt", "extra.txt": b"y"},
    )
    assert dict(pipe.files) == {"labels.txt": b"x\n", "extra.txt": b"y"}
    with pytest.raises(PipelineError, match="file name"):
        Pipeline.from_files({}, {"a/b": b""})


@pytest.mark.parametrize("name", ["ok.json", "tokenizer-v2_1.json", "A"])
def test_good_file_names(name):
    assert check_file_name(name) == name


@pytest.mark.parametrize("name", ["", ".hidden", "../x", "a/b", "a\\b", "x" * 129, "é", 3, None])
def test_bad_file_names(name):
    with pytest.raises(PipelineError):
        check_file_name(name)


LIMITS = PipelineLimits(max_files_bytes=100, max_files=2)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("spec", "must be a map with keys spec and files"),
        ({"spec": {}, "code": b""}, "must be a map with keys spec and files"),
        ({"files": {}}, "spec must be a map"),
        ({"spec": {1: 2}}, "spec must be a map with text keys"),
        ({"spec": {}, "files": []}, "files must be a map"),
        ({"spec": {}, "files": {"a": "text"}}, "'a' must be a byte string"),
        ({"spec": {}, "files": {"../a": b""}}, "file name '../a'"),
        ({"spec": {}, "files": {"a": b"", "b": b"", "c": b""}}, "at most 2 files"),
        ({"spec": {}, "files": {"a": b"x" * 60, "b": b"x" * 41}}, "101 bytes; this server"),
    ],
)
def test_from_wire_refuses(value, fragment):
    with pytest.raises(PipelineError) as info:
        Pipeline.from_wire(value, limits=LIMITS)
    assert fragment in str(info.value)


def test_from_wire_round_trip():
    pipe = Pipeline({"input": {"kind": "image"}}, {"a": b"1"})
    assert Pipeline.from_wire(pipe.to_wire(), limits=LIMITS) == pipe
