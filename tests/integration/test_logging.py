"""The server logs route, status, duration and model id, never data or client_info."""

from __future__ import annotations

import cbor2
import numpy as np
from onnx import TensorProto, helper

from blindai.client._transport import PinnedTlsTransport, PlainTransport
from tests.models import _model


def _marked_model() -> bytes:
    # a model whose bytes carry a recognisable marker (in the graph's doc string)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [x],
        [y],
        doc_string="MODEL-SECRET-MARKER",
    )
    return _model(graph)


def test_no_inputs_outputs_model_bytes_or_client_info_in_the_log(server):
    plain = PlainTransport(server.host, server.unattested_port, 10)
    cert = cbor2.loads(plain.request("GET", "/").body)
    plain.close()
    mgmt = PinnedTlsTransport(server.host, server.management_port, cert, 10)
    att = PinnedTlsTransport(server.host, server.attested_port, cert, 10)
    secret_info = {"uid": "CLIENT-SECRET-UID", "platform_name": "CLIENT-SECRET-OS"}
    model = _marked_model()
    reply = cbor2.loads(
        mgmt.request(
            "POST",
            "/upload",
            cbor2.dumps(
                {
                    "model": model,
                    "length": len(model),
                    "model_name": "logged-name",
                    "client_info": secret_info,
                }
            ),
        ).body
    )
    value = np.array([[1234.5678, 8765.4321, 3.14159265]], np.float32)
    run = {
        "model_id": reply["model_id"],
        "client_info": secret_info,
        "inputs": [
            {
                "info": {"fact": [1, 3], "datum_type": 0, "node_name": "x"},
                "bytes_data": value.tobytes(),
            }
        ],
    }
    assert att.request("POST", "/run", cbor2.dumps(run)).status == 200
    bad = dict(
        run,
        inputs=[
            {
                "info": {"fact": [1, 3], "datum_type": 0, "node_name": "INPUT-NAME"},
                "bytes_data": value.tobytes(),
            }
        ],
    )
    assert att.request("POST", "/run", cbor2.dumps(bad)).status == 400
    mgmt.close()
    att.close()
    log = server.wait_for_log("/run 400")
    assert "/run 200" in log and reply["model_id"] in log
    for secret in (
        "MODEL-SECRET-MARKER",
        "CLIENT-SECRET",
        "1234.5",
        "8765.4",
        "INPUT-NAME",
        value.tobytes().hex(),
    ):
        assert secret not in log, secret


def test_a_debug_log_holds_nothing_of_an_image_input(tmp_path):
    """--log-level debug made every library log at DEBUG: Pillow wrote the EXIF tags of a
    client's image (its description, camera, position) to the server's log."""
    import warnings

    from PIL import Image

    import blindai
    from blindai.pipeline import Pipeline
    from tests import models
    from tests._server import start_server
    from tests.unit.pipeline._factory import encode

    exif = Image.Exif()
    exif[0x010E] = "SECRET-7f3a-DESCRIPTION"  # ImageDescription
    exif[0x010F] = "SECRET-7f3a-CAMERA"  # Make
    image = encode(Image.new("RGB", (40, 30), (10, 20, 230)), "JPEG", exif=exif.tobytes())
    pipe = Pipeline(
        {"input": {"kind": "image", "resize": [16, 16]}, "output": {"kind": "labels"}}, {}
    )
    debug = start_server(tmp_path, "--log-level", "debug")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", blindai.SimulationModeWarning)
            conn = blindai.connect(debug.host, simulation_mode=True, **debug.ports)
        with conn:
            conn.upload_model(models.colour_classifier(16), model_name="c", pipeline=pipe)
            assert conn.predict("c", image=image).top.label == "2"
        log = debug.wait_for_log("/run 200")
    finally:
        debug.stop()
    assert "SECRET-7f3a" not in log


def test_pillows_warnings_about_a_clients_image_are_not_in_the_log(tmp_path):
    """Pillow warns of each EXIF tag whose data runs past the file (its number: up to 65535
    lines for one request) and of an image over its bomb threshold (its pixel count); the
    serve command printed every warning to stderr, which leaves the TEE."""
    import struct
    import warnings

    import pytest
    from PIL import Image

    import blindai
    from blindai.pipeline import Pipeline
    from tests import models
    from tests._server import start_server
    from tests.unit.pipeline._factory import encode, png_claiming

    count, data = 5, 8 + 2 + 12 * 5 + 4
    tags = b"".join(struct.pack("<HHII", 48000 + i, 7, 10**6, data) for i in range(count))
    exif = b"II*\x00" + struct.pack("<IH", 8, count) + tags + bytes(4)
    image = encode(Image.new("RGB", (40, 30), (10, 20, 230)), "PNG", exif=b"Exif\x00\x00" + exif)
    pipe = Pipeline(
        {"input": {"kind": "image", "resize": [16, 16]}, "output": {"kind": "labels"}}, {}
    )
    server = start_server(tmp_path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", blindai.SimulationModeWarning)
            conn = blindai.connect(server.host, simulation_mode=True, **server.ports)
        with conn:
            conn.upload_model(models.colour_classifier(16), model_name="c", pipeline=pipe)
            assert conn.predict("c", image=image).top.label == "2"
            with pytest.raises(blindai.errors.InvalidInput, match="10000x9000"):
                conn.predict("c", image=png_claiming(10000, 9000))  # 90 M pixels: a warning
        log = server.wait_for_log("/run 400")
    finally:
        server.stop()
    assert "4800" not in log and "Skipping tag" not in log and "90000000" not in log
