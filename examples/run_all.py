"""Export (if needed) and run every example, one after the other; ``make examples`` runs this.

Prints each example's output and how long it took; exits non-zero if any failed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLES = [
    "random_forest.py",
    "minilm_similarity.py",
    "distilbert_classify.py",
    "vision.py",
    "speech.py",
    "gpt2_next_token.py",
]


def main() -> int:
    """Run each example in its own process."""
    failed = []
    total = time.perf_counter()
    for name in EXAMPLES:
        print(f"=== {name}", flush=True)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, str(HERE / name)], check=False)
        print(f"--- {name}: {time.perf_counter() - start:.1f} s", flush=True)
        if done.returncode:
            failed.append(name)
    print(f"all examples: {time.perf_counter() - total:.1f} s; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
