"""The trusted Mode A scorer: imported from its own path in the sidecar, never from a candidate.

`score(output, row)` returns a float (bools and ints count) or a dict of floats. For a dict,
the `score` key is the score when present, else the mean of the values; every entry is a
metric.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import JsonValue

from vero.errors import VeroError

ScoreFunction = Callable[[JsonValue, dict[str, JsonValue]], Any]


def load_scorer(path: Path) -> ScoreFunction:
    """Import `score` from a scorer file (`scorer.py`) or package directory (with `__init__.py`)."""
    path = Path(path).absolute()
    module_name = "vero_trusted_scorer_" + hashlib.sha256(str(path).encode()).hexdigest()[:16]
    if path.is_dir():
        init = path / "__init__.py"
        if not init.is_file():
            raise VeroError("scorer directory is not a Python package (no __init__.py)", where=str(path),
                            fix="add __init__.py defining score(output, row), or point at a .py file")
        spec = importlib.util.spec_from_file_location(module_name, init,
                                                      submodule_search_locations=[str(path)])
    elif path.is_file() and path.suffix == ".py":
        spec = importlib.util.spec_from_file_location(module_name, path)
    else:
        raise VeroError("scorer not found", where=str(path),
                        fix="point `scorer` at a .py file or a package directory defining score(output, row)")
    if spec is None or spec.loader is None:
        raise VeroError("cannot import the scorer", where=str(path), fix="check that it is a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # relative imports inside a scorer package need it
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise VeroError(f"importing the scorer failed: {type(exc).__name__}: {exc}", where=str(path),
                        fix="fix the scorer module so it imports cleanly") from None
    score = getattr(module, "score", None)
    if not callable(score):
        sys.modules.pop(module_name, None)
        raise VeroError("the scorer defines no callable `score`", where=str(path),
                        fix="define score(output, row) -> float | dict[str, float]")
    return score  # type: ignore[no-any-return]


def _number(value: Any, what: str) -> float:
    if not isinstance(value, (int, float)):
        raise ValueError(f"{what} is a {type(value).__name__}, not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} is {number}, not a finite number")
    return number


def normalize_score(value: Any) -> tuple[float, dict[str, float]]:
    """Turn a scorer's return value into `(score, metrics)`; ValueError when it is unusable."""
    if isinstance(value, dict):
        if not value:
            raise ValueError("the scorer returned an empty dict")
        metrics = {str(key): _number(item, f"metric {key!r}") for key, item in value.items()}
        score = metrics["score"] if "score" in metrics else sum(metrics.values()) / len(metrics)
        return score, dict(sorted(metrics.items()))
    return _number(value, "the score"), {}
