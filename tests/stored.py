"""Writing a model straight into a sealed store, as an older server would have stored it.

For tests of what a server does at restart, or exports to a replica, with a stored model an
upload would no longer take (uploads check more than restarts do).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from tests.models import colour_classifier

COLOUR_LABELS = {"labels.txt": b"red\ngreen\nblue\n"}


def store_colour_classifier(store: Path, model_id: str, image_step: dict[str, Any]) -> bytes:
    """Seal the 16x16 colour classifier named "colours" into ``store`` (made by a server run
    before, with its simulation key) with the image input step ``image_step`` and a top-1
    labels output; return the model's bytes."""
    from blindai.pipeline import Pipeline
    from blindai.protocol import codec
    from blindai.server.store import SealedStore, SimulationKeyFile, StoredModel

    spec = {
        "input": {"kind": "image", **image_step},
        "output": {"kind": "labels", "labels": "labels.txt", "top_k": 1},
    }
    model = colour_classifier(16)
    sealed = SealedStore(store, key_material=SimulationKeyFile(store).material())
    try:
        sealed.put_model(
            StoredModel(
                model_id=model_id,
                name="colours",
                owner=None,
                public=False,
                hash=hashlib.sha256(model).digest(),
                uploaded_ns=1_700_000_000_000_000_000,
                optimize=True,
                model=model,
                pipeline=codec.dumps(Pipeline(spec, COLOUR_LABELS).to_wire()),
            )
        )
    finally:
        sealed.close()
    return model
