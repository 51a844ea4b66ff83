"""Headline figures of a benchmark, collected by bench/run_all into one table.

A benchmark calls `record()` next to the lines it prints; when VERO_BENCH_RESULTS names a file,
each call appends one JSON line there (otherwise it does nothing).
"""

from __future__ import annotations

import json
import os


def record(bench: str, measure: str, ratio: float, detail: str) -> None:
    """Record `ratio` (against the baseline the benchmark measured in the same run) for `measure`."""
    path = os.environ.get("VERO_BENCH_RESULTS")
    if not path:
        return
    line = json.dumps({"bench": bench, "measure": measure, "ratio": round(ratio, 3), "detail": detail})
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
