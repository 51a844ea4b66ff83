"""The runner CLI: bad input is one message and exit 2 (no traceback, no leftover checkout);
`collate` prints the per-task table, the aggregate, or JSON lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.modeb.agent_repo import git, make_agent_repo
from tests.modeb.harbor_results import make_job, write_trial
from vero.modeb.runner.cli import cli

BAR = Path(__file__).resolve().parents[2] / "tasks" / "bar"
HARBOR_YAML = str(BAR / "harbor.yaml")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def assert_one_error(result: Result, fragment: str) -> None:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert fragment in result.stderr, result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(("args", "fragment"), [
    ([], "give exactly one of --build-config, --harbor-config, --partition (got none)"),
    (["--harbor-config", HARBOR_YAML, "--build-config", HARBOR_YAML],
     "(got --build-config, --harbor-config)"),
    (["--harbor-config", HARBOR_YAML, "--split", "nope"], "split 'nope' is not in the partition"),
    (["--harbor-config", HARBOR_YAML, "--sample-id", "sort-unique"],
     "not tasks of split 'train': 'sort-unique'"),
    (["--harbor-config", HARBOR_YAML, "--commit", "--upload-pack=x"], "not a commit SHA or a plain ref name"),
    (["--harbor-config", HARBOR_YAML, "--commit", "no-such-branch"], "no commit 'no-such-branch'"),
    (["--harbor-config", HARBOR_YAML, "--agent-path", "../.."], "is not a directory of the candidate commit"),
    (["--harbor-config", HARBOR_YAML, "--harbor-command", "/nonexistent/harbor"],
     "the harbor command '/nonexistent/harbor' was not found"),
    (["--harbor-config", HARBOR_YAML, "--n-attempts", "0"], "invalid Harbor settings at harbor.n_attempts"),
    (["--partition", HARBOR_YAML], "partition must map each split name to a list of task names"),
])
def test_run_bad_input_is_one_message(tmp_path: Path, args: list[str], fragment: str) -> None:
    repo = make_agent_repo(tmp_path)
    result = invoke("run", "--repo", str(repo.path), "--split", "train",
                    "--results-dir", str(tmp_path / "results"), *args)
    assert_one_error(result, fragment)
    assert len(git(repo.path, "worktree", "list").splitlines()) == 1   # no checkout left behind


def test_run_never_follows_a_link_where_its_checkout_goes(tmp_path: Path) -> None:
    repo = make_agent_repo(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "repo").mkdir(parents=True)
    (elsewhere / "repo" / "keep.txt").write_text("not the runner's")
    results = tmp_path / "results"
    results.mkdir()
    (results / ".candidate-checkout").symlink_to(elsewhere)
    result = invoke("run", "--harbor-config", HARBOR_YAML, "--split", "train", "--repo", str(repo.path),
                    "--results-dir", str(results))
    assert_one_error(result, "the checkout location is not a directory")
    assert (elsewhere / "repo" / "keep.txt").read_text() == "not the runner's"


def test_run_needs_a_git_repo(tmp_path: Path) -> None:
    result = invoke("run", "--harbor-config", HARBOR_YAML, "--split", "train", "--repo", str(tmp_path))
    assert_one_error(result, "not a git repository")


def test_malformed_config_names_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "harbor.yaml"
    bad.write_text("harbor:\n  agent: [unclosed\n")
    result = invoke("collate", "--harbor-config", str(bad), "--split", "train", "--jobs-dir", str(tmp_path))
    assert_one_error(result, f"error: {bad}: malformed YAML at line")


def _jobs(tmp_path: Path) -> Path:
    jobs = tmp_path / "jobs"
    tasks = BAR / "inner_tasks"
    job = make_job(jobs, "vero-test-job", tasks)
    write_trial(job, "count-words", task_name="vero-examples/count-words",
                rewards={"pass": 1.0, "close": 1.0}, tasks_root=tasks)
    write_trial(job, "sort-unique", task_name="vero-examples/sort-unique", rewards=None,
                exception="RewardFileNotFoundError", message="no reward file", tasks_root=tasks)
    return jobs


def test_collate_prints_the_table_and_the_aggregate(tmp_path: Path) -> None:
    result = invoke("collate", "--harbor-config", HARBOR_YAML, "--split", "test",
                    "--jobs-dir", str(_jobs(tmp_path)))
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "vero-examples/count-words" in out and "sort-unique" in out
    assert "RewardFileNotFoundError" in out and "mean score" in out and "0.5000" in out


def test_collate_json_is_one_object_per_sample_then_the_aggregate(tmp_path: Path) -> None:
    jobs = _jobs(tmp_path)
    result = invoke("collate", "--harbor-config", HARBOR_YAML, "--split", "test", "--jobs-dir",
                    str(jobs / "vero-test-job"), "--json", "--reward-key", "close")
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line.get("task") for line in lines[:2]] == ["vero-examples/count-words", "sort-unique"]
    assert lines[0]["score"] == 1.0 and lines[0]["metrics"] == {"close": 1.0, "pass": 1.0}
    assert lines[1]["score"] is None and "RewardFileNotFoundError (error id E-" in lines[1]["error"]
    assert "RewardFileNotFoundError: no reward file" in lines[1]["error_detail"]  # the runner's user sees it
    assert lines[2] == {"aggregate": {"mean_score": 0.5, "metrics": {"close": 1.0, "pass": 1.0},
                                      "n_errors": 1, "n_samples": 2, "n_scored": 1}}


def test_collate_refuses_a_jobs_dir_of_other_tasks(tmp_path: Path) -> None:
    result = invoke("collate", "--harbor-config", HARBOR_YAML, "--split", "train",
                    "--jobs-dir", str(_jobs(tmp_path)))
    assert_one_error(result, "none of the 2 recorded trial(s) matches a requested task")
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("collate", "--harbor-config", HARBOR_YAML, "--split", "train", "--jobs-dir", str(empty))
    assert_one_error(result, "no Harbor job directory found")


def test_collate_from_partition_and_task_source_flags(tmp_path: Path) -> None:
    partition = tmp_path / "partition.yaml"
    partition.write_text("test: [count-words]\n")
    result = invoke("collate", "--partition", str(partition), "--task-source", str(BAR / "inner_tasks"),
                    "--split", "test", "--jobs-dir", str(_jobs(tmp_path)), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[0])["score"] == 1.0


def _package_trial(job: Path, task: str, reward: float | None) -> None:
    """A trial of a Harbor Hub package task: its task id is `{org, name, ref}`, with no path."""
    org, name = task.split("/")
    trial = write_trial(job, name, task_name=task, rewards=None if reward is None else {"reward": reward},
                        exception=None if reward is not None else "RewardFileNotFoundError")
    for file in ("result.json", "config.json"):
        data = json.loads((trial / file).read_text())
        if file == "result.json":
            data["task_id"] = {"org": org, "name": name, "ref": "1.0"}
            data["config"]["task"] = {"name": task, "ref": "1.0", "path": None}
        else:
            data["task"] = {"name": task, "ref": "1.0", "path": None}
        (trial / file).write_text(json.dumps(data))


def test_collate_matches_registry_tasks_by_their_names(tmp_path: Path) -> None:
    """The issue's reproduction: a registry source whose partition names are the trials' task names."""
    job = make_job(tmp_path / "jobs", "vero-registry-job")
    _package_trial(job, "bench/alpha", 1.0)
    _package_trial(job, "bench/beta", 0.5)
    _package_trial(job, "bench/gamma", None)
    partition = tmp_path / "p.json"
    partition.write_text(json.dumps({"test": ["bench/alpha", "bench/beta", "bench/gamma", "bench/delta"]}))
    result = invoke("collate", "--task-source", "bench/tasks@1.0", "--partition", str(partition), "--split", "test",
                    "--jobs-dir", str(tmp_path / "jobs"), "--json")
    assert result.exit_code == 0, result.stderr
    lines = {line.get("task"): line for line in map(json.loads, result.stdout.splitlines())}
    assert lines["bench/alpha"]["score"] == 1.0 and lines["bench/beta"]["score"] == 0.5
    assert lines["bench/alpha"]["error"] is None and lines["bench/alpha"]["attempt_scores"] == [1.0]
    assert "RewardFileNotFoundError" in lines["bench/gamma"]["error"]
    assert "no trial recorded" in lines["bench/delta"]["error"]
    assert lines[None]["aggregate"]["mean_score"] == 0.375


def test_registry_task_names_are_style_checked_with_a_suggestion(tmp_path: Path) -> None:
    partition = tmp_path / "p.json"
    partition.write_text(json.dumps({"test": ["alpha", "bench//beta"]}))
    result = invoke("collate", "--task-source", "bench/tasks@1.0", "--partition", str(partition), "--split", "test",
                    "--jobs-dir", str(tmp_path))
    assert_one_error(result, "'alpha' is not an org/name task name (did you mean 'bench/alpha'?)")
    assert "'bench//beta' is not an org/name task name (did you mean 'bench/beta'?)" in result.stderr
    partition.write_text(json.dumps({"test": ["vero-examples/alpha"]}))
    result = invoke("collate", "--task-source", "tasks@1.0", "--partition", str(partition), "--split", "test",
                    "--jobs-dir", str(tmp_path))
    assert_one_error(result, "'vero-examples/alpha' is not a task directory name (did you mean 'alpha'?)")
