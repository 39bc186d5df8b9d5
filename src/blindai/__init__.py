"""BlindAI: confidential AI inference. ONNX models served from inside a TEE, verified first.

Example::

    import blindai
    with blindai.connect("localhost", simulation_mode=True) as conn:
        model = conn.upload_model("model.onnx")
        print(conn.predict(model.model_id, {"input": x}))
"""

from __future__ import annotations

__version__ = "1.0.0a1"
