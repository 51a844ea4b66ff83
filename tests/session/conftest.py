"""A finished Mode A session on a real sidecar (in process): evaluations by the optimizer, a
submission, finalize; a candidate that leaks a declared secret in its output and its traceback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.mode_a import IMPROVED_AGENT, ModeABench, commit_agent, make_mode_a_bench, shared_tmp
from tests.support.sidecar import serve_config
from vero.core.engine import EvalRequest
from vero.serve.api import SubmitRequest
from vero.serve.config import ServeConfig
from vero.serve.finalize import finalize
from vero.serve.sidecar import Sidecar
from vero.session.admin import sidecar_archive

SECRET_NAME = "VERO_SESSION_API_KEY"
SECRET = "sk-session-5f1e0c9a77d2b4e3"
# Prints the secret, returns it in its output (as a value and a key) and raises with it.
LEAKY_AGENT = (
    "import os, sys\n"
    "def solve(row):\n"
    "    key = os.environ['VERO_SESSION_API_KEY']\n"
    "    print('debug', key, file=sys.stderr)\n"
    "    if row['id'].endswith('1'):\n"
    "        raise RuntimeError('leaking ' + key)\n"
    "    return {'answer': 0, 'echo': key, key: [key + '!']}\n"
)


@dataclass
class Finished:
    """A sidecar whose session finalize closed."""

    sidecar: Sidecar
    bench: ModeABench
    root: Path
    improved: str
    leaky: str
    rescue: bytes  # the archive as the rescue hook takes it: before finalize


@pytest.fixture
def finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Finished]:
    monkeypatch.setenv(SECRET_NAME, SECRET)
    with shared_tmp() as root:
        bench = make_mode_a_bench(tmp_path / "bench", {"train": 6, "validation": 8, "test": 6}, agent_parent=root)
        config = serve_config(root, bench, secrets=[SECRET_NAME],
                              budgets=[{"split": "train", "total_run_budget": 5},
                                       {"split": "validation", "total_sample_budget": 40}])
        sidecar = Sidecar(ServeConfig.model_validate(config))
        try:
            leaky = commit_agent(bench.agent_repo, LEAKY_AGENT, "leaky")
            sidecar.evaluate(EvalRequest(split="train", commit=leaky))
            improved = commit_agent(bench.agent_repo, IMPROVED_AGENT, "improved")
            sidecar.evaluate(EvalRequest(split="train", commit=improved))
            sidecar.evaluate(EvalRequest(split="validation", commit=improved, num_samples=8))
            sidecar.submit(SubmitRequest(commit=improved))
            # A trusted tool's words that quote the secret, as the incident log keeps them.
            sidecar.incidents.record("E-0000000001", f"harbor failed with {SECRET}", f"Traceback ...{SECRET}")
            rescue = sidecar_archive(sidecar.config, sidecar.redactor)
            finalize(sidecar)
            yield Finished(sidecar=sidecar, bench=bench, root=root, improved=improved, leaky=leaky, rescue=rescue)
        finally:
            sidecar.close()


@pytest.fixture
def archive(finished: Finished, tmp_path: Path) -> Path:
    """The finished session's archive as `vero harbor archive` writes it."""
    path = tmp_path / "session.tar.gz"
    path.write_bytes(sidecar_archive(finished.sidecar.config, finished.sidecar.redactor))
    return path
