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
