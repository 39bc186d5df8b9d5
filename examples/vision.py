"""Images in: ResNet18 classification (RANDOM weights) and MTCNN's face classifier (REAL weights).

The server decodes the PNG, resizes, centre-crops, normalises and lays out the tensor; the
client sends the file's bytes. ResNet18's labels are meaningless (random weights). The real
ONet tells the astronaut's face (scikit-image's ``astronaut.png``) from the background.
"""

from __future__ import annotations

import io

from _common import Pipeline, connected, ensure, wheel_file
from PIL import Image

FACE_BOX = (165, 55, 275, 165)  # Eileen Collins' face in astronaut.png
BACKGROUND_BOX = (300, 10, 380, 90)


def crop_png(path: str, box: tuple[int, int, int, int]) -> bytes:
    """A crop of an image, as PNG bytes (the client's only image work: choosing the region)."""
    buf = io.BytesIO()
    Image.open(path).convert("RGB").crop(box).save(buf, format="PNG")
    return buf.getvalue()


def main() -> None:
    """Upload both models with their pipelines; classify a photo, then face vs background."""
    resnet, onet = ensure("resnet18"), ensure("mtcnn_onet")
    astronaut = str(wheel_file("scikit-image", "skimage/data/astronaut.png"))
    cat = wheel_file("scikit-image", "skimage/data/chelsea.png")
    with connected() as conn:
        conn.upload_model(
            resnet / "model.onnx",
            model_name="resnet18",
            pipeline=Pipeline.from_dir(resnet / "pipeline"),
        )
        conn.upload_model(
            onet / "model.onnx", model_name="face", pipeline=Pipeline.from_dir(onet / "pipeline")
        )
        top = conn.predict("resnet18", image=cat).labels
        shown = ", ".join(f"{x.label} {x.score:.4f}" for x in top)
        print(f"resnet18 on chelsea.png (RANDOM weights, labels meaningless): {shown}")
        for label, box in (("face crop", FACE_BOX), ("background crop", BACKGROUND_BOX)):
            scores = {
                x.label: x.score
                for x in conn.predict("face", image=crop_png(astronaut, box)).labels
            }
            print(f"mtcnn onet on astronaut.png {label:<15}: face probability {scores['face']:.3f}")


if __name__ == "__main__":
    main()
