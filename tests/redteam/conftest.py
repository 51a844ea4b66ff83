"""The red-team suite: attacks of a hostile optimizer, each a live test.

Attacks on the sidecar's own logic run against a real `vero harbor serve` process (root, with
candidates as `nobody` in their own pid namespaces and the optimizer's repo read by uid 65534,
as in a compiled task). The attacker is the test: it controls the agent repo, `.git` included,
and everything it sends over HTTP. Attacks on the container boundary run against the compiled
tasks in `test_containers.py`. docs/trust-model.md lists every attack, its defence and its test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.mode_a import ModeABench, is_root, make_mode_a_bench, shared_tmp
from tests.support.sidecar import Sidecar, serve_config, start_sidecar

SECRET_NAME = "REDTEAM_SECRET"
SECRET = "redteam-secret-value-4f1c"
PROTECTED = "protected.txt"
PROTECTED_TEXT = "do not change me\n$Id$\nline two\n"
FETCH_TIMEOUT = 8.0
LIMITS: dict[str, Any] = {
    "repo": {"fetch_timeout": FETCH_TIMEOUT, "commit_mb": 4, "tree_files": 300, "tree_mb": 4},
    "candidate": {"scorer_timeout": 4.0, "memory_mb": 768, "output_kb": 16},
}

NEEDS_ROOT = pytest.mark.skipif(not is_root(), reason="the sidecar switches users and creates namespaces: "
                                                     "it needs root (CI runs as root)")


@dataclass
class Target:
    """A running sidecar and the attacker's view of it."""

    sidecar: Sidecar
    bench: ModeABench

    @property
    def repo(self) -> Path:
        return self.bench.agent_repo

    def post(self, path: str, body: Any, timeout: float = 120) -> httpx.Response:
        return httpx.post(self.sidecar.url + path, json=body, timeout=timeout)

    def incidents(self) -> str:
        """The incident log's entries as plain text (each `what` and `detail`, decoded)."""
        path = self.sidecar.admin_dir / "incidents.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return "".join(f"{entry['error_id']}: {entry['what']}\n{entry['detail']}\n"
                       for entry in map(json.loads, lines))


def start_target(tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> Target:
    """A sidecar over a fresh benchmark whose baseline has a read-only `protected.txt`."""
    monkeypatch.setenv(SECRET_NAME, SECRET)
    bench = make_mode_a_bench(tmp_path / "bench", {"train": 6, "validation": 8, "test": 6}, agent_parent=root,
                              extra_files={PROTECTED: PROTECTED_TEXT})
    config = serve_config(root, bench, read_only_paths=[PROTECTED], secrets=[SECRET_NAME], limits=LIMITS,
                          budgets=[{"split": "train", "total_run_budget": 100},
                                   {"split": "validation", "total_sample_budget": 400}])
    config.update(overrides)
    return Target(sidecar=start_sidecar(root, config), bench=bench)


@pytest.fixture
def root() -> Iterator[Path]:
    with shared_tmp() as path:
        yield path


@pytest.fixture
def target(tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Target]:
    running = start_target(tmp_path, root, monkeypatch)
    try:
        yield running
    finally:
        running.sidecar.stop()
