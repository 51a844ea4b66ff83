"""Generates the foo benchmark's dataset: short arithmetic and word questions with exact answers.

Deterministic (fixed seed): `python3 tasks/foo/data/generate.py` rewrites train/validation/test.jsonl
byte for byte. Four kinds of question; the baseline agent only answers `plus`.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SPLITS = {"train": 40, "validation": 30, "test": 40}
KINDS = ("plus", "minus", "times", "reverse")
WORDS = ("harbor", "sidecar", "ledger", "budget", "commit", "verifier", "sample", "optimizer",
         "baseline", "scorer", "token", "volume")


def make_row(rng: random.Random, split: str, index: int) -> dict[str, str]:
    """One row: an id, the question the candidate sees, and the `answer` label."""
    kind = KINDS[index % len(KINDS)]
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    if kind == "plus":
        question, answer = f"What is {a} plus {b}?", str(a + b)
    elif kind == "minus":
        question, answer = f"What is {a} minus {b}?", str(a - b)
    elif kind == "times":
        question, answer = f"What is {a} times {b}?", str(a * b)
    else:
        word = rng.choice(WORDS)
        question, answer = f"Reverse the word '{word}'.", word[::-1]
    return {"id": f"{split}-{index:03d}", "question": question, "answer": answer}


def generate(out_dir: Path) -> None:
    """Write every split to `out_dir/<split>.jsonl`."""
    for offset, (split, size) in enumerate(SPLITS.items()):
        rng = random.Random(1000 + offset)
        rows = [make_row(rng, split, i) for i in range(size)]
        text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
        (out_dir / f"{split}.jsonl").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
