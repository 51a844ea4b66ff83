"""The runner on a registry source, for real and offline: two tasks/bar inner tasks in a local git
repository reached through `file://` URLs (one pinned to a commit, one following HEAD), listed in
a local Harbor registry.json, run by the real harbor CLI (`-d bench@1.0 --registry-path ...`)
on Docker. Partition names are a directory name and a [task].name (read from the repository).

About 20 s on a 2-core machine (two trials, cached images).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.modeb.agent_repo import make_agent_repo
from tests.support.benchmarks import write_local_registry
from tests.support.tools import harbor_bin, require_base_image
from vero.modeb.runner.cli import cli
from vero.modeb.trials import job_dirs

BAR = Path(__file__).resolve().parents[2] / "tasks" / "bar"


def test_the_runner_scores_a_registry_dataset_with_real_harbor(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    require_base_image()
    # Harbor clones git tasks into ~/.cache/harbor: keep them in this test's directory (the Compose
    # plugin is found through DOCKER_CONFIG, which a new HOME would hide).
    monkeypatch.setenv("DOCKER_CONFIG", str(Path.home() / ".docker"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    bench = tmp_path / "bench"
    registry = write_local_registry(bench / "reg", {name: BAR / "inner_tasks" / name
                                                    for name in ("write-greeting", "sum-numbers")})
    listing = json.loads(registry.read_text())
    del listing[0]["tasks"][1]["git_commit_id"]   # sum-numbers follows the repository's HEAD
    registry.write_text(json.dumps(listing))
    config = bench / "harbor.yaml"
    config.write_text(json.dumps({
        "harbor": {"task_source": "bench@1.0", "registry_path": "reg/registry.json",
                   "agent": "rule_agent.agent:RuleAgent", "environment": "docker", "n_concurrent": 2,
                   "timeout": 600},
        "partition": {"train": ["write-greeting", "vero-examples/sum-numbers"]}}))
    repo = make_agent_repo(tmp_path)
    results = tmp_path / "results"

    run = CliRunner().invoke(cli, ["run", "--harbor-config", str(config), "--split", "train", "--repo",
                                   str(repo.path), "--commit", repo.baseline, "--results-dir", str(results),
                                   "--harbor-command", str(harbor_bin()), "--json"], catch_exceptions=False)

    assert run.exit_code == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    scores = {line["task"]: (line["score"], line["task_name"], line["error"]) for line in lines[:-1]}
    assert scores == {"write-greeting": (1.0, "vero-examples/write-greeting", None),
                      "vero-examples/sum-numbers": (0.0, "vero-examples/sum-numbers", None)}
    assert lines[-1]["aggregate"]["mean_score"] == 0.5
    # Harbor really read the local registry, filtered by directory name, and cloned the git tasks.
    [job] = job_dirs(results / "jobs")
    dataset = json.loads((job / "config.json").read_text())["datasets"][0]
    assert (dataset["name"], dataset["version"], dataset["registry_path"]) == ("bench", "1.0", str(registry))
    assert sorted(dataset["task_names"]) == ["sum-numbers", "write-greeting"]
    task_ids = sorted(json.loads(p.read_text())["task_id"]["path"] for p in job.glob("*/result.json"))
    assert task_ids == ["tasks/sum-numbers", "tasks/write-greeting"]
    assert list((tmp_path / "home" / ".cache" / "harbor" / "tasks").iterdir())

    # The same jobs dir collates the same way, with the registry given on the command line.
    partition = tmp_path / "partition.json"
    partition.write_text(json.dumps({"train": ["write-greeting", "vero-examples/sum-numbers"]}))
    collated = CliRunner().invoke(cli, ["collate", "--partition", str(partition), "--task-source", "bench@1.0",
                                        "--registry-path", str(registry), "--split", "train",
                                        "--jobs-dir", str(results / "jobs"), "--json"])
    assert collated.exit_code == 0, collated.stderr
    assert [json.loads(line) for line in collated.stdout.splitlines()] == lines
