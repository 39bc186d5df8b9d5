"""Images in: ResNet18 classification (RANDOM weights) and MTCNN face detection (REAL weights).

The server decodes the PNG, resizes, centre-crops, normalises and lays out the tensor; the
client sends the file's bytes. ResNet18's labels are meaningless (random weights). The MTCNN
cascade (P-, R- and O-Net in one graph, examples/_mtcnn.py) finds the face in scikit-image's
``astronaut.png`` and ``camera.png`` and finds none in ``coffee.png``; its pipeline has no
output step, so the box and score come back as tensors.
"""

from __future__ import annotations

import struct

from _common import Pipeline, connected, ensure, wheel_file

FACE_THRESHOLD = 0.7  # MTCNN's O-Net threshold


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's header: the client needs no image library."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def main() -> None:
    """Upload both models with their pipelines; classify a photo, then look for faces."""
    resnet, mtcnn = ensure("resnet18"), ensure("mtcnn")
    cat = wheel_file("scikit-image", "skimage/data/chelsea.png")
    with connected() as conn:
        conn.upload_model(
            resnet / "model.onnx",
            model_name="resnet18",
            pipeline=Pipeline.from_dir(resnet / "pipeline"),
        )
        conn.upload_model(
            mtcnn / "model.onnx", model_name="faces", pipeline=Pipeline.from_dir(mtcnn / "pipeline")
        )
        top = conn.predict("resnet18", image=cat).labels
        shown = ", ".join(f"{x.label} {x.score:.4f}" for x in top)
        print(f"resnet18 on chelsea.png (RANDOM weights, labels meaningless): {shown}")
        for name in ("astronaut.png", "camera.png", "coffee.png"):
            png = wheel_file("scikit-image", f"skimage/data/{name}").read_bytes()
            found = conn.predict("faces", image=png)
            score = float(found["score"][0])
            if score < FACE_THRESHOLD:
                print(f"mtcnn on {name:<13}: no face (best candidate {score:.3f})")
                continue
            width, height = png_size(png)
            x1, y1, x2, y2 = found["box"][0] * [width, height, width, height]
            print(
                f"mtcnn on {name:<13}: face at x {x1:.0f}-{x2:.0f}, y {y1:.0f}-{y2:.0f} "
                f"of {width}x{height}, probability {score:.3f}"
            )


if __name__ == "__main__":
    main()
