#!/usr/bin/env bash
# Oracle optimizer of the foo benchmark. Harbor runs it in main as the `agent` user: it teaches
# the solver subtraction and multiplication, commits that, evaluates it and submits it.
set -euo pipefail
cd /work/agent

cat > solver/core.py <<'EOF'
"""Solver: additions, subtractions and multiplications; other questions get an empty answer."""

from __future__ import annotations

import re

_ARITHMETIC = re.compile(r"^What is (-?\d+) (plus|minus|times) (-?\d+)\?$")


def solve(row: dict[str, object]) -> str:
    """Answer `row["question"]` exactly, or return "" when the question is not understood."""
    question = str(row.get("question", "")).strip()
    match = _ARITHMETIC.match(question)
    if not match:
        return ""
    a, op, b = int(match.group(1)), match.group(2), int(match.group(3))
    return str(a + b if op == "plus" else a - b if op == "minus" else a * b)
EOF

git add solver/core.py
git -c user.name=oracle -c user.email=oracle@vero.invalid commit --quiet -m "Answer subtractions and multiplications"
commit="$(git rev-parse HEAD)"

vero harbor status
vero harbor eval --split train --commit "$commit"
vero harbor eval --split validation --commit "$commit"
vero harbor submit --commit "$commit"
