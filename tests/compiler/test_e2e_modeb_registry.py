"""End to end, Mode B on a registry dataset: a variant of tasks/bar whose inner tasks come from a
local Harbor registry.json (a git repository behind a `file://` URL), compiled with the real
runtime PEX and run by the real harbor CLI with the oracle optimizer. The compiler bakes the
partition's tasks and a registry.json listing them into the sidecar only; the sidecar's nested
harbor runs `-d bench@1.0 --registry-path /opt/vero/sidecar/registry/registry.json` with no
network. The oracle improves the agent, evaluates train (one nested trial) and submits; finalize
scores the submission on the held-out test split (one more nested trial).

About 1.5 to 3 minutes on a 2-core machine: the outer images reuse tasks/bar's cached layers
(same task name, same agent), two nested trials.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import yaml

from tests.compiler.test_e2e_modeb import remove_tree, require_mode_b_image
from tests.support.benchmarks import write_local_registry
from tests.support.compose import reap_stale_projects, remove_project
from tests.support.tools import harbor_bin
from vero.compiler.compiler import build_task

RUNTIME_PEX = Path("src.python.vero/vero.pex").absolute()  # runtime_package_dependencies
BAR = Path("tasks/bar").absolute()
REGISTRY_TASKS = "/opt/vero/sidecar/registry/tasks"
TRIAL_PREFIX = "vero-e2e-barreg-"


def nested_registry_projects() -> set[str]:
    """Compose projects of inner tasks a nested harbor ran from the baked registry."""
    listed = subprocess.run(["docker", "ps", "-a", "--format",
                             '{{.Label "com.docker.compose.project"}}\t'
                             '{{.Label "com.docker.compose.project.working_dir"}}'],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    return {line.split("\t")[0] for line in listed if line.partition("\t")[2].startswith(REGISTRY_TASKS)}


def registry_bench(root: Path) -> Path:
    """tasks/bar with three inner tasks served by a local registry, a submit-mode config and an
    oracle that evaluates train once and submits."""
    bench = root / "bar"
    shutil.copytree(BAR / "agent", bench / "agent")
    write_local_registry(root / "registry", {name: BAR / "inner_tasks" / name
                                             for name in ("write-greeting", "reverse-lines", "sum-numbers")})
    solve = (BAR / "solution" / "solve.sh").read_text()
    solve = solve.replace('vero harbor eval --split validation --commit "$commit"\n', "")
    assert "--split validation" not in solve
    (bench / "solution").mkdir()
    (bench / "solution" / "solve.sh").write_text(solve)
    (bench / "solution" / "solve.sh").chmod(0o755)
    config = yaml.safe_load((BAR / "build.yaml").read_text())
    del config["inner_task"]
    config["harbor"].update(task_source="bench@1.0", registry_path="../registry/registry.json")
    config.update(partition={"train": ["write-greeting"], "validation": ["reverse-lines"],
                             "test": ["vero-examples/sum-numbers"]},
                  reward_mode="submit", score_baseline=False)
    (bench / "build.yaml").write_text(yaml.safe_dump(config))
    return bench / "build.yaml"


def test_oracle_run_scores_a_registry_dataset_with_a_nested_harbor(tmp_path: Path) -> None:
    require_mode_b_image()
    reap_stale_projects(TRIAL_PREFIX)
    before = nested_registry_projects()
    task = tmp_path / f"{TRIAL_PREFIX}{uuid.uuid4().hex[:10]}"
    result = build_task(registry_bench(tmp_path), task, RUNTIME_PEX, {})
    assert not [w for w in result.warnings if "network" in w], result.warnings
    serve = json.loads((task / "environment/sidecar/serve.json").read_text())
    assert serve["mode_b"]["harbor"]["registry_path"] == "/opt/vero/sidecar/registry/registry.json"
    assert sorted(p.name for p in (task / "environment/sidecar/registry/tasks").iterdir()) == [
        "reverse-lines", "sum-numbers", "write-greeting"]
    nested = tmp_path / "nested"
    jobs = tmp_path / "jobs"
    job = f"vero-e2e-{uuid.uuid4().hex[:10]}"
    env = {**os.environ, "HARBOR_TELEMETRY": "0", "VERO_NESTED_DIR": str(nested)}
    try:
        argv = [str(harbor_bin()), "run", "-p", str(task), "-a", "oracle", "-e", "docker", "-y", "-q",
                "-o", str(jobs), "--job-name", job]
        run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1500, check=False)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        [trial] = [p.parent for p in (jobs / job).glob("*/result.json")]
        outcome = json.loads((trial / "result.json").read_text())
        assert outcome["exception_info"] is None, outcome["exception_info"]
        # The oracle's train evaluation went through the registry: write-greeting passes.
        oracle_log = (trial / "agent/oracle.txt").read_text()
        assert oracle_log.count('"mean_score": 1.0') == 1, oracle_log
        # Finalize scored the submission on the held-out task, fetched from the baked registry.
        reward = json.loads((trial / "verifier/reward.json").read_text())
        assert reward == outcome["verifier_result"]["rewards"] == {"pass_rate": 1.0}
        report = json.loads((trial / "verifier/finalize.json").read_text())
        assert report["source"] == "submission" and report["errors"] == [] and report["target_errors"] == {}
        assert nested_registry_projects() - before == set()
    finally:
        for trial_dir in (jobs / job).glob("*/"):
            remove_project(f"{trial_dir.name.lower()}__env")
        for project in nested_registry_projects() - before:
            remove_project(project)
        remove_tree(nested)
