"""The spec schema: strict keys and types, bounds from PipelineLimits, all problems at once."""

from __future__ import annotations

import pytest

from blindai.errors import PipelineError
from blindai.pipeline.limits import PipelineLimits
from blindai.pipeline.spec import ImageInput, LabelsOutput, TextInput, parse_spec

LIMITS = PipelineLimits()
TEXT = {"kind": "text", "tokenizer": "tokenizer.json", "max_length": 16}


def test_text_spec_with_defaults():
    spec = parse_spec({"version": 1, "input": TEXT, "output": {"kind": "labels"}}, limits=LIMITS)
    assert isinstance(spec.input, TextInput) and spec.input.padding == "max_length"
    assert isinstance(spec.output, LabelsOutput) and spec.output.top_k == 5
    assert spec.output.activation == "softmax"


def test_image_spec_lists_become_tuples():
    spec = parse_spec(
        {"input": {"kind": "image", "resize_shorter": 256, "crop": [224, 224],
                   "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}},
        limits=LIMITS,
    )  # fmt: skip
    assert isinstance(spec.input, ImageInput)
    assert spec.input.crop == (224, 224) and spec.input.std == (0.229, 0.224, 0.225)


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"input": {**TEXT, "colour": "red"}}, "input.colour: Extra inputs are not permitted"),
        ({"input": TEXT, "code": "import os"}, "code: Extra inputs are not permitted"),
        ({"input": {**TEXT, "max_length": "16"}}, "input.max_length: Input should be a valid"),
        ({"input": {**TEXT, "max_length": True}}, "input.max_length: Input should be a valid"),
        ({"input": {**TEXT, "max_length": 0}}, "input.max_length: Input should be greater"),
        ({"input": {**TEXT, "tokenizer": "../etc/passwd"}}, "input.tokenizer: String should"),
        ({"input": {**TEXT, "tokenizer": "/abs.json"}}, "input.tokenizer: String should"),
        ({"input": {"kind": "video"}}, "does not match any of the expected tags"),
        ({"input": TEXT, "version": 2}, "version: Input should be 1"),
        ({"output": {"kind": "labels"}}, "input: Field required"),
        ({"input": {"kind": "image", "scale": "1"}}, "input.scale: Input should be a valid"),
        ({"input": {"kind": "image", "scale": float("nan")}}, "input.scale: Input should be"),
        ({"input": {"kind": "image", "crop": [1, 2, 3]}}, "input.crop: Tuple should have"),
        ({"input": {"kind": "image", "layout": "CHWN"}}, "input.layout: Input should be"),
        ({"input": {"kind": "image", "formats": ["gif"]}}, "input.formats.0: Input should be"),
        ({"input": {"kind": "audio", "sample_rate": 16000}}, "input.max_seconds: Field required"),
        ({"input": TEXT, "output": {"kind": "ctc"}}, "output.vocab: Field required"),
    ],
)
def test_malformed_specs_are_refused_with_the_field(doc, fragment):
    with pytest.raises(PipelineError) as info:
        parse_spec(doc, limits=LIMITS)
    assert fragment in str(info.value)


def test_every_problem_is_reported_at_once():
    doc = {"input": {**TEXT, "max_length": -1, "extra": 1}, "output": {"kind": "labels", "x": 2}}
    with pytest.raises(PipelineError) as info:
        parse_spec(doc, limits=LIMITS)
    message = str(info.value)
    assert "input.max_length" in message and "input.extra" in message and "output.x" in message


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"input": {**TEXT, "max_length": 513}}, "input.max_length: at most 512"),
        ({"input": {"kind": "image", "resize": [64, 65]}}, "input.resize: sides of at most 64"),
        ({"input": {"kind": "image", "crop": [65, 8]}}, "input.crop: sides of at most 64"),
        ({"input": {"kind": "image", "resize_shorter": 99}}, "input.resize_shorter: at most 64"),
        (
            {"input": {"kind": "audio", "sample_rate": 16000, "max_seconds": 31}},
            "input.max_seconds: at most 30",
        ),
        ({"input": TEXT, "output": {"kind": "labels", "top_k": 11}}, "output.top_k: at most 10"),
    ],
)
def test_limits_bound_sizes(doc, fragment):
    limits = PipelineLimits(
        max_sequence_length=512, max_image_side=64, max_audio_seconds=30, max_top_k=10
    )
    with pytest.raises(PipelineError) as info:
        parse_spec(doc, limits=limits)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"input": {"kind": "image", "resize": [8, 8], "resize_shorter": 8}}, "not both"),
        ({"input": {"kind": "image", "mean": [0.5, 0.5]}}, "input.mean: 1 or 3 values"),
        (
            {"input": {"kind": "image", "channels": "L", "std": [1, 1, 1]}},
            "input.std: 1 value for L",
        ),
        ({"input": {"kind": "image", "std": [0.0]}}, "input.std: must not be zero"),
        (
            {"input": {"kind": "image"}, "output": {"kind": "next_token"}},
            "next_token needs a text input",
        ),
        (
            {"input": {"kind": "image"}, "output": {"kind": "embedding"}},
            "mean pooling needs a text input",
        ),
    ],
)
def test_inconsistent_specs_are_refused(doc, fragment):
    with pytest.raises(PipelineError) as info:
        parse_spec(doc, limits=LIMITS)
    assert fragment in str(info.value)


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="max_image_pixels"):
        PipelineLimits(max_image_pixels=0)
