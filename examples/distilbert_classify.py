"""DistilBERT sequence classification, text in, label out, at sequence lengths 8 and 128.

RANDOM WEIGHTS: no fine-tuned DistilBERT can be had offline, so the labels are meaningless;
this shows the flow (server-side tokenization, padding/truncation, softmax, labels) and the cost.
"""

from __future__ import annotations

import time

from _common import Pipeline, connected, ensure

SENTENCE = "I love AI and privacy!"


def main() -> None:
    """One model, two pipelines (max_length 8 and 128); the server shares one session."""
    folder = ensure("distilbert")
    print("DistilBERT with RANDOM weights: the labels below mean nothing.")
    with connected() as conn:
        for length in (8, 128):
            name = f"distilbert-{length}"
            pipe = Pipeline.from_dir(folder / f"pipeline-{length}" / "pipeline")
            conn.upload_model(folder / "model.onnx", model_name=name, pipeline=pipe)
            conn.predict(name, text=SENTENCE)  # warm-up
            start = time.perf_counter()
            result = conn.predict(name, text=SENTENCE)
            ms = (time.perf_counter() - start) * 1000
            labels = ", ".join(f"{x.label} {x.score:.3f}" for x in result.labels)
            print(f"seq {length:>3}: {labels}  ({ms:.1f} ms round trip)")


if __name__ == "__main__":
    main()
