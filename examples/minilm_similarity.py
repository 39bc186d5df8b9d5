"""Sentence similarity with all-MiniLM-L6-v2 (REAL weights): raw text in, embeddings out.

The server tokenizes (tokenizer.json), runs the model, mean-pools and L2-normalises inside the
TEE; the client sends plain strings and needs neither torch nor a tokenizer.
"""

from __future__ import annotations

from _common import Pipeline, connected, ensure

PAIRS = [
    ("paraphrase", "A man is eating food.", "A man is eating a piece of bread."),
    ("paraphrase", "The new movie is awesome.", "The new movie is so great."),
    ("paraphrase", "How do I reset my password?", "I forgot my password, how can I change it?"),
    ("unrelated", "A man is eating food.", "The stock market fell sharply on Monday."),
    ("unrelated", "The new movie is awesome.", "Photosynthesis takes place in chloroplasts."),
    ("unrelated", "How do I reset my password?", "A cheetah runs faster than a horse."),
]


def main() -> None:
    """Upload with the pipeline, embed each sentence on the server, compare."""
    folder = ensure("minilm")
    with connected() as conn:
        pipe = Pipeline.from_dir(folder / "pipeline")
        conn.upload_model(folder / "model.onnx", model_name="minilm", pipeline=pipe)
        for kind, a, b in PAIRS:
            score = conn.predict("minilm", text=a).cosine(conn.predict("minilm", text=b))
            print(f"{kind:<10} {score:6.3f}  {a!r} ~ {b!r}")


if __name__ == "__main__":
    main()
