"""Trusted exact-match scorer of the foo benchmark (baked into the eval sidecar only)."""

from __future__ import annotations


def score(output: object, row: dict[str, object]) -> float:
    """1.0 when the candidate's output, as a trimmed string, equals the row's `answer`, else 0.0."""
    if not isinstance(output, (str, int)) or isinstance(output, bool):
        return 0.0
    return 1.0 if str(output).strip() == str(row["answer"]) else 0.0
