"""Sidecar start-up: every misconfiguration is one clear error before anything is served."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.mode_a import ModeABench
from tests.support.sidecar import python_env, serve_config, start_sidecar, vero_argv
from vero.errors import VeroError
from vero.serve.config import ServeConfig
from vero.serve.failure import FAILURE_FILE
from vero.serve.sidecar import Sidecar


def _start(root: Path, bench: ModeABench, **overrides: Any) -> Sidecar:
    return Sidecar(ServeConfig.model_validate(serve_config(root, bench, **overrides)))


@pytest.mark.parametrize(("overrides", "message"), [
    ({"selection_split": "dev"}, "selection_split names split 'dev'"),
    ({"targets": [{"split": "test", "reward_key": "r", "sample_ids": ["test-0", "nope"]}]},
     "lists samples not in split 'test': nope"),
    ({"harness_user": "no-such-user-vero"}, "harness user 'no-such-user-vero' does not exist"),
    ({"secrets": ["VERO_TEST_UNSET_SECRET"]}, "declared secrets are not set: VERO_TEST_UNSET_SECRET"),
    ({"baseline_commit": "0" * 40}, "serve.json says 0000"),
])
def test_misconfiguration_is_refused(bench: ModeABench, root: Path, overrides: dict[str, Any],
                                     message: str) -> None:
    with pytest.raises(VeroError, match=message):
        _start(root, bench, **overrides)


def test_start_prepares_dirs_and_reuses_the_trusted_repo(bench: ModeABench, root: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VERO_TEST_SECRET", "s3cret")
    first = _start(root, bench, secrets=["VERO_TEST_SECRET"])
    try:
        assert first.catalog.split_names() == ["test", "train", "validation"]
        modes = {name: oct(os.stat(root / name).st_mode & 0o777) for name in ("admin", "work", "results")}
        assert modes == {"admin": "0o700", "work": "0o711", "results": "0o755"}
        assert first.repo.commit_of("HEAD") == bench.baseline_commit
    finally:
        first.close()
    second = _start(root, bench)  # the trusted repo exists now: reused, token renewed
    try:
        assert second.token != first.token
    finally:
        second.close()


def test_a_sidecar_that_cannot_start_writes_why_where_harbor_collects_it(bench: ModeABench, root: Path) -> None:
    broken = root / "broken_scorer.py"
    broken.write_text("import numpy\n\n\ndef score(output, row):\n    return 1.0\n")
    config = serve_config(root, bench)
    config["mode_a"]["scorer"] = str(broken)
    log_dir = Path(config["paths"]["log_dir"])
    log_dir.mkdir()
    (log_dir / FAILURE_FILE).write_text("a report from an earlier start\n")
    path = root / "serve.json"
    path.write_text(json.dumps(config))
    run = subprocess.run(vero_argv("harbor", "serve", "--config", str(path)), capture_output=True, text=True,
                         env=python_env(), timeout=120, check=False)
    assert run.returncode == 2, run.stderr
    report = (log_dir / FAILURE_FILE).read_text()
    assert report.startswith("vero harbor serve stopped at ")
    assert f"error: {broken}: importing the scorer failed: ModuleNotFoundError: No module named 'numpy'" in report
    assert "earlier start" not in report and oct(log_dir.stat().st_mode & 0o777) == "0o700"
    assert report.splitlines()[1] in run.stderr  # the container log says the same


def test_a_sidecar_that_starts_clears_an_earlier_failure(bench: ModeABench, root: Path) -> None:
    config = serve_config(root, bench)
    log_dir = Path(config["paths"]["log_dir"])
    log_dir.mkdir()
    (log_dir / FAILURE_FILE).write_text("a report from an earlier start\n")
    sidecar = start_sidecar(root, config, name="clears")
    try:
        assert not (log_dir / FAILURE_FILE).exists()
    finally:
        sidecar.stop()


def test_checkouts_are_shared_only_when_candidates_run_as_another_user(bench: ModeABench, root: Path) -> None:
    """A candidate running as the sidecar's own user could write its checkout: each evaluation
    then gets a fresh one."""
    alone = _start(root, bench, harness_user=None, fetch_uid=None)
    try:
        assert alone.engine.checkouts is None
    finally:
        alone.close()
    if os.geteuid() == 0:
        confined = _start(root, bench, harness_user="nobody")
        try:
            assert confined.engine.checkouts is not None
        finally:
            confined.close()
