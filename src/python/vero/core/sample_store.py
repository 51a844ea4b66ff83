"""A directory of sample results, one atomically written file per sample.

Strategies write each result as soon as it is known, so an interrupted evaluation resumes
by skipping the samples that finished cleanly (an error sample is not finished).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import quote

from vero.core.records import SampleResult
from vero.errors import VeroError
from vero.fsutil import atomic_write_model
from vero.models import parse_model

_MAX_NAME = 180


def _file_name(sample_id: str) -> str:
    quoted = quote(sample_id, safe="")
    if len(quoted) > _MAX_NAME or quoted.startswith("."):
        quoted = "sha256-" + hashlib.sha256(sample_id.encode()).hexdigest()
    return quoted + ".json"


class SampleStore:
    """Persisted sample results under `directory`, keyed by sample id."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path_for(self, sample_id: str) -> Path:
        """Where the result of `sample_id` lives."""
        return self.directory / _file_name(sample_id)

    def put(self, result: SampleResult) -> None:
        """Persist one result atomically, replacing an earlier one for the same sample."""
        atomic_write_model(self.path_for(result.sample_id), result)

    def get(self, sample_id: str) -> SampleResult | None:
        """The stored result of `sample_id`, or None. A corrupt file is a loud error."""
        path = self.path_for(sample_id)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        result = _parse(raw, path)
        if result.sample_id != sample_id:
            raise VeroError(f"file holds sample {result.sample_id!r}, expected {sample_id!r}",
                            where=str(path), fix="delete the file to re-run that sample")
        return result

    def all(self) -> list[SampleResult]:
        """Every stored result, sorted by sample id."""
        if not self.directory.is_dir():
            return []
        results = []
        for path in sorted(self.directory.glob("*.json")):
            results.append(_parse(path.read_bytes(), path))
        return sorted(results, key=lambda r: r.sample_id)

    def done_ids(self, sample_ids: list[str]) -> set[str]:
        """The subset of `sample_ids` that finished cleanly and need not run again."""
        done = set()
        for sample_id in sample_ids:
            result = self.get(sample_id)
            if result is not None and result.ok:
                done.add(sample_id)
        return done


def _parse(raw: bytes, path: Path) -> SampleResult:
    return parse_model(raw, SampleResult, what="sample result", where=str(path), problem="corrupt",
                       fix="inspect the file; delete it to re-run that sample")
