"""GPT2 next-token prediction: text in, the five likeliest next tokens out.

RANDOM WEIGHTS (no GPT2 checkpoint can be had offline), and MiniLM's WordPiece vocabulary in
place of GPT2's BPE: the tokens are arbitrary. The server tokenizes, runs one forward pass,
takes the logits after the last real token, applies softmax and labels the top five.
"""

from __future__ import annotations

from _common import Pipeline, connected, ensure


def main() -> None:
    """Upload with the pipeline and ask for the next token."""
    folder = ensure("gpt2")
    print("GPT2 with RANDOM weights: the predicted tokens mean nothing.")
    with connected() as conn:
        conn.upload_model(
            folder / "model.onnx",
            model_name="gpt2",
            pipeline=Pipeline.from_dir(folder / "pipeline"),
        )
        result = conn.predict("gpt2", text="My favourite colour is")
        print("next token:", ", ".join(f"{x.label!r} {x.score:.5f}" for x in result.labels))


if __name__ == "__main__":
    main()
