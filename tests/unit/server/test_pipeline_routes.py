"""Pipelines through the routes in process: raw images in, typed results out, refusals as 400s."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

import cbor2
import numpy as np
import pytest
from PIL import Image

from blindai.pipeline import Pipeline
from blindai.protocol import codec
from blindai.protocol.messages import WireTensor
from blindai.protocol.names import ERROR_HEADER
from blindai.server.protocols.v2.codec import HEADER_LENGTH
from tests import models
from tests.unit.pipeline._factory import encode
from tests.unit.server._inprocess import InProcess, in_process

PIPELINE = Pipeline(
    {
        "input": {"kind": "image", "resize": [16, 16]},
        "output": {"kind": "labels", "labels": "labels.txt", "top_k": 2},
    },
    {"labels.txt": b"red\ngreen\nblue\n"},
)
BLUE = encode(Image.new("RGB", (20, 20), (0, 0, 255)), "PNG")


@pytest.fixture(scope="module")
def server() -> Iterator[InProcess]:
    with in_process() as s:
        s.upload(models.colour_classifier(16), model_name="colours", pipeline=PIPELINE.to_wire())
        s.upload(models.colour_classifier(16), model_name="plain")
        yield s


def run(server: InProcess, **body: Any) -> tuple[int, Any, str | None]:
    resp = server.attested.post("/run", content=cbor2.dumps(body))
    return resp.status_code, cbor2.loads(resp.content), resp.headers.get(ERROR_HEADER)


def test_an_image_gets_labels(server: InProcess) -> None:
    status, reply, _ = run(server, model_id="colours", image=BLUE)
    assert status == 200, reply
    assert reply["result"]["labels"][0]["label"] == "blue"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"model_id": "colours", "text": "a blue square"}, "takes image, not text"),
        ({"model_id": "plain", "image": BLUE}, "has no pipeline: send tensors"),
        ({"model_id": "colours", "image": BLUE, "inputs": []}, "give one of"),
        ({"model_id": "colours", "text": b"bytes"}, "text must be a string"),
        ({"model_id": "colours", "image": "a path"}, "image must be a byte string"),
        ({"model_id": "colours", "image": b"not an image"}, "image"),
    ],
)
def test_raw_inputs_that_do_not_fit_are_invalid_input(
    server: InProcess, body: dict[str, Any], fragment: str
) -> None:
    status, message, kind = run(server, **body)
    assert (status, kind) == (400, "InvalidInput")
    assert fragment in message


def test_a_pipeline_that_does_not_fit_is_refused_at_upload(server: InProcess) -> None:
    bad = {"spec": {"input": {"kind": "image", "resize": [16, 16]}, "extra": 1}, "files": {}}
    body = {"model": models.colour_classifier(16), "pipeline": bad}
    resp = server.management.post("/upload", content=cbor2.dumps(body))
    assert (resp.status_code, resp.headers[ERROR_HEADER]) == (400, "InvalidInput")


def _v2_image(server: InProcess, elements: list[bytes]) -> Any:
    blob = b"".join(struct.pack("<I", len(e)) + e for e in elements)
    head = json.dumps({
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(elements)],
                    "parameters": {"binary_data_size": len(blob)}}],
    }).encode()  # fmt: skip
    return server.attested.post(
        "/v2/models/colours/infer", content=head + blob, headers={HEADER_LENGTH: str(len(head))}
    )


def test_v2_takes_the_raw_input_as_one_bytes_element_and_answers_json(server: InProcess) -> None:
    (out,) = _v2_image(server, [BLUE]).json()["outputs"]
    assert out["name"] == "result" and out["datatype"] == "BYTES"
    assert json.loads(out["data"][0])["labels"][0]["label"] == "blue"
    refused = _v2_image(server, [BLUE, BLUE])
    assert (refused.status_code, refused.json()["type"]) == (400, "InvalidInput")
    assert "one BYTES element" in refused.json()["error"]


# -- every inference counts: statistics (v2 stats) and phase metrics, whatever the protocol ---


def _stats(server: InProcess, name: str) -> dict[str, Any]:
    resp = server.attested.get(f"/v2/models/{name}/stats")
    assert resp.status_code == 200, resp.text
    (stats,) = resp.json()["model_stats"]
    return stats  # type: ignore[no-any-return]


def _phase_counts(server: InProcess) -> dict[tuple[str, str], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = server.management.get("/metrics").text
    return {
        (s.labels["protocol"], s.labels["phase"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "blindai_inference_phase_duration_seconds_count"
    }


def test_pipeline_and_v06_inferences_count_in_statistics_and_metrics() -> None:
    with in_process() as server:
        server.upload(
            models.colour_classifier(16), model_name="colours", pipeline=PIPELINE.to_wire()
        )
        server.upload(models.colour_classifier(16), model_name="plain")
        assert run(server, model_id="colours", image=BLUE)[0] == 200  # 0.6, raw image
        assert _v2_image(server, [BLUE]).status_code == 200  # v2, raw image
        pixels = np.full((1, 3, 16, 16), 0.5, np.float32)
        tensor = codec.encode_tensor(WireTensor.from_numpy(pixels, "pixels"))
        status, reply, _ = run(server, model_id="plain", inputs=[tensor])  # 0.6, tensors
        assert status == 200, reply
        assert run(server, model_id="colours", image=b"not an image")[0] == 400

        colours = _stats(server, "colours")
        assert colours["inference_count"] == 2
        phases = colours["inference_stats"]
        for key in ("queue", "compute_input", "compute_infer", "compute_output"):
            assert phases[key]["count"] == 2, key
        assert phases["compute_infer"]["ns"] > 0
        assert phases["fail"]["count"] == 1
        plain = _stats(server, "plain")
        assert plain["inference_count"] == 1
        assert plain["inference_stats"]["compute_infer"]["count"] == 1

        counts = _phase_counts(server)
        for phase in ("decode", "queue", "infer", "encode"):
            assert counts[("v06", phase)] == 2, phase
            assert counts[("rest", phase)] == 1, phase


def test_an_image_that_does_not_fit_the_preprocessing_budget_now_is_503(server) -> None:
    """Another request's preprocessing holds the budget: this one is refused at once, and
    served once it is given back."""
    budget = server.apps.plane.preprocess_budget
    with budget.holding(budget.total - 1000):
        status, message, kind = run(server, model_id="colours", image=BLUE)
        assert (status, kind) == (503, "ServerBusy")
        assert "--max-preprocess-memory" in message
    assert budget.held == 0
    status, reply, _ = run(server, model_id="colours", image=BLUE)
    assert status == 200, reply


def test_an_image_that_could_never_fit_the_preprocessing_budget_is_400() -> None:
    """A 64 KB PNG of 4000x4000 pixels would take about 256 MB to preprocess."""
    big = encode(Image.new("RGB", (4000, 4000), (0, 0, 255)), "PNG")
    assert len(big) < 128 << 10
    with in_process(max_preprocess_memory=64 << 20) as s:
        s.upload(models.colour_classifier(16), model_name="colours", pipeline=PIPELINE.to_wire())
        status, message, kind = run(s, model_id="colours", image=big)
        assert (status, kind) == (400, "InvalidInput")
        assert "--max-preprocess-memory" in message
        assert s.apps.plane.preprocess_budget.held == 0
        status, reply, _ = run(s, model_id="colours", image=BLUE)
        assert status == 200, reply
