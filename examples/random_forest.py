"""A random forest on scikit-learn's bundled breast-cancer data (real, trained at build time).

Tabular data needs no pipeline: the client sends the feature rows as a tensor and reads the
class probabilities back; accuracy is computed on the held-out rows.
"""

from __future__ import annotations

import numpy as np
from _common import connected, ensure


def main() -> None:
    """Upload, predict the held-out rows in one request, report accuracy."""
    folder = ensure("random_forest")
    test = np.load(folder / "test.npz")
    with connected() as conn:
        conn.upload_model(folder / "model.onnx", model_name="forest")
        out = conn.predict("forest", test["x"])
    predicted = out["probabilities"].argmax(axis=1)
    accuracy = float((predicted == test["y"]).mean())
    print(f"random forest: accuracy {accuracy:.3f} on {len(test['y'])} held-out patients")


if __name__ == "__main__":
    main()
