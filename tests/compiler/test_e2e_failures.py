"""End to end, with the real harbor CLI on Docker: run-time failures leave their reason where the
task's owner looks (the trial directory), and the documented oracle contract holds.

1. A candidate that errors on every sample: `/eval` marks it, finalize.json's `errors` and the
   verifier's output (test-stdout.txt) name it.
2. A sidecar that cannot start: Harbor records a failed trial (and exits 0), and the reason is in
   the trial's `artifacts/eval-sidecar/`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

from tests.support.benchmarks import BUILD_ROOT, FOO_DIR
from tests.support.compose import reap_stale_projects, remove_project
from tests.support.tools import harbor_bin, require_base_image, runtime_pex
from vero.compiler.compiler import build_task

FOO = Path("tasks/foo").absolute() if Path("tasks/foo/build.yaml").is_file() else FOO_DIR
GUIDE = Path("docs/guide.md") if Path("docs/guide.md").is_file() else BUILD_ROOT / "docs/guide.md"
TRIAL_PREFIX = "vero-e2e-fail-"

# An oracle that reports the contract it runs under, commits a candidate that still fails on every
# row (only committed code is evaluated), evaluates it on a viewable split and submits it.
CONTRACT_ORACLE = """#!/usr/bin/env bash
set -euo pipefail
echo "contract: user=$(id -un) cwd=$(pwd) vero=$(command -v vero) eval_url=${VERO_EVAL_URL}"
cd /work/agent
echo "# still unanswered" >> solver/core.py
git add solver/core.py
git -c user.name=oracle -c user.email=oracle@vero.invalid commit --quiet -m "Still unanswered"
vero harbor eval --split train --num-samples 3 --commit HEAD
vero harbor submit --commit HEAD
"""


def _bench(tmp_path: Path) -> Path:
    bench = tmp_path / "foo"
    shutil.copytree(FOO, bench, ignore=shutil.ignore_patterns("BUILD", "__pycache__"))
    return bench


def _run_trial(task: Path, tmp_path: Path) -> tuple[Path, dict[str, Any], subprocess.CompletedProcess[str]]:
    """One oracle trial of `task` under the real harbor CLI: its dir, result.json and the run."""
    jobs = tmp_path / "jobs"
    job = f"vero-e2e-{uuid.uuid4().hex[:10]}"
    env = {**os.environ, "HARBOR_TELEMETRY": "0"}
    try:
        argv = [str(harbor_bin()), "run", "-p", str(task), "-a", "oracle", "-e", "docker", "-y", "-q",
                "-o", str(jobs), "--job-name", job]
        run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, check=False)
        trials = [p.parent for p in (jobs / job).glob("*/result.json")]
        assert len(trials) == 1, run.stdout[-3000:] + run.stderr[-3000:]
        return trials[0], json.loads((trials[0] / "result.json").read_text()), run
    finally:
        for trial in (jobs / job).glob("*/"):
            remove_project(f"{trial.name.lower()}__env")


def _guide_trial_outputs() -> list[str]:
    """The trial files docs/guide.md lists under "After a run"."""
    section = GUIDE.read_text().split("### After a run", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"`((?:verifier|agent|artifacts)/[^`]+)`", section)


def test_a_candidate_that_errors_on_every_sample_is_reported_in_eval_finalize_and_the_verifier_output(
        tmp_path: Path) -> None:
    require_base_image()
    reap_stale_projects(TRIAL_PREFIX)
    bench = _bench(tmp_path)
    core = bench / "agent/solver/core.py"
    core.write_text(core.read_text().replace('    question = str(row.get("question", "")).strip()\n',
                                             '    raise NotImplementedError("the baseline answers nothing")\n'))
    (bench / "solution/solve.sh").write_text(CONTRACT_ORACLE)
    task = tmp_path / f"{TRIAL_PREFIX}{uuid.uuid4().hex[:10]}"
    # The dry run would refuse this baseline; the checks that do run pass.
    result = build_task(bench / "build.yaml", task, runtime_pex(), {}, dry_run=False)
    assert any(w.startswith("dry run skipped") for w in result.warnings)
    trial, outcome, run = _run_trial(task, tmp_path)
    assert run.returncode == 0 and outcome["exception_info"] is None, outcome["exception_info"]
    oracle = (trial / "agent/oracle.txt").read_text()
    # The oracle contract documented in docs/guide.md.
    assert "contract: user=agent cwd=/work vero=/usr/local/bin/vero eval_url=http://eval-sidecar:8100" in oracle
    assert '"all_errored": true' in oracle
    assert "warning: every sample errored (3 of 3): nothing was scored; each sample's error is in " \
           "/work/results/train/samples/" in oracle
    report = json.loads((trial / "verifier/finalize.json").read_text())
    assert report["rewards"] == {"accuracy": 0.0} and report["source"] == "auto_best"
    target = ("target accuracy on test: every sample errored (40 of 40); first, 'test-000': "
              "NotImplementedError: the baseline answers nothing")
    assert target in report["errors"], report["errors"]
    assert f"warning: {target}" in (trial / "verifier/test-stdout.txt").read_text()
    for rel in _guide_trial_outputs():
        assert (trial / rel).exists(), f"docs/guide.md lists {rel}, which the trial does not have"


def test_a_sidecar_that_cannot_start_leaves_its_reason_in_the_trial_artifacts(tmp_path: Path) -> None:
    require_base_image()
    reap_stale_projects(TRIAL_PREFIX)
    bench = _bench(tmp_path)
    # A real mistake the build cannot see: the scorer reads a file by a path of the build machine.
    reference = tmp_path / "reference.json"
    reference.write_text("{}")
    scorer = bench / "scorer/scorer.py"
    scorer.write_text(scorer.read_text().replace(
        "from __future__ import annotations\n",
        f"from __future__ import annotations\n\nimport json\n\nREFERENCE = json.load(open({str(reference)!r}))\n"))
    task = tmp_path / f"{TRIAL_PREFIX}{uuid.uuid4().hex[:10]}"
    build_task(bench / "build.yaml", task, runtime_pex(), {})
    trial, outcome, run = _run_trial(task, tmp_path)
    assert run.returncode == 0  # harbor's verdict on a failed trial
    assert outcome["exception_info"] is not None and "eval-sidecar" in outcome["exception_info"]["exception_message"]
    report = (trial / "artifacts/eval-sidecar/serve-error.txt").read_text()
    assert "importing the scorer failed: FileNotFoundError: [Errno 2] No such file or directory: " \
           f"'{reference}'" in report
    assert "fix: fix the scorer module so it imports cleanly" in report
