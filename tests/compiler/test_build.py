"""`vero harbor build`: what it writes, determinism, the baseline export, and every bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import tomllib
import yaml
from click.testing import CliRunner

from tests.support.benchmarks import (
    mode_a_config,
    mode_b_config,
    snapshot,
    write_local_registry,
    write_mode_a,
    write_mode_b,
    write_yaml,
)
from tests.support.markdown import inline_texts
from vero.baseline import make_baseline_commit
from vero.cli import cli
from vero.compiler.compiler import build_task
from vero.compiler.publish import MARKER
from vero.compiler.seal import verify
from vero.errors import VeroError
from vero.modeb.task_source import TaskSource
from vero.serve.config import ServePaths, load_serve_config

GIT_ID = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgSign=false"]



def _build(config: Path, out: Path, pex: Path, env: dict[str, str] | None = None) -> Any:
    return build_task(config, out, pex, env if env is not None else {})


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *GIT_ID, *args], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".vero-build-" in p.name or ".vero-old-" in p.name)


# --- what a build writes ---------------------------------------------------------------------------

def test_mode_a_task_layout(tmp_path: Path, pex: Path) -> None:
    config = write_mode_a(tmp_path / "bench", secrets=["API_TOKEN"], max_concurrency=2)
    out = tmp_path / "out"
    result = _build(config, out, pex, {"API_TOKEN": "s3cr3t-value"})
    assert not [w for w in result.warnings if "max_concurrency" in w]
    files = snapshot(out)
    for rel in ("task.toml", "instruction.md", "environment/docker-compose.yaml", "environment/Dockerfile",
                "environment/main/seed.sh", "environment/sidecar/Dockerfile",
                "environment/sidecar/serve.json",
                "environment/sidecar/dataset/train.jsonl", "environment/sidecar/scorer/scorer.py",
                "environment/bin/vero.pex", "environment/bin/vero", "tests/test.sh", "solution/solve.sh",
                "environment/agent-seed/files/solver/core.py",
                "environment/agent-baseline/files/solver/core.py",
                "environment/agent-seed/BASELINE.json", "environment/agent-baseline/BASELINE.json",
                "SEAL.json", MARKER):
        assert rel in files, rel
    for rel in ("environment/main/seed.sh", "tests/test.sh", "solution/solve.sh", "environment/bin/vero",
                "environment/bin/vero.pex", "environment/agent-seed/files/run.sh"):
        assert files[rel][0] == "0o755", rel
    assert files["environment/agent-seed/files/README.md"][0] == "0o644"
    # No secret value anywhere; the name only in the sidecar's environment.
    assert not [rel for rel, (_, data) in files.items() if b"s3cr3t-value" in data]
    compose = yaml.safe_load(files["environment/docker-compose.yaml"][1])
    assert compose["services"]["eval-sidecar"]["environment"] == {
        "API_TOKEN": "${API_TOKEN:?set API_TOKEN on the host that runs harbor}"}
    assert "API_TOKEN" not in json.dumps(compose["services"]["main"])
    assert b"API_TOKEN" not in files["task.toml"][1]
    # The container contract of docs/design.md.
    main, side = compose["services"]["main"], compose["services"]["eval-sidecar"]
    assert main["volumes"] == ["work:/work", "results:/work/results:ro", "token:/var/lib/vero/token:ro"]
    assert not any(v.startswith("admin:") for v in main["volumes"])
    assert side["volumes"] == ["work:/var/lib/vero/optimizer:ro", "results:/work/results",
                               "token:/var/lib/vero/token", "admin:/var/lib/vero/admin"]
    sidecar_docker = files["environment/sidecar/Dockerfile"][1].decode()
    assert "ln -s /var/lib/vero/optimizer/agent /work/agent" in sidecar_docker
    assert main["environment"] == {"VERO_EVAL_URL": "http://eval-sidecar:8100"}
    assert main["depends_on"] == {"eval-sidecar": {"condition": "service_healthy"}}
    # Both images are built offline: the engine gives the build no network at all.
    assert main["build"] == {"network": "none"} and side["build"]["network"] == "none"
    assert side["command"] == ["vero", "harbor", "serve", "--config", "/opt/vero/sidecar/serve.json"]
    task = tomllib.loads(files["task.toml"][1].decode())
    assert task["task"]["name"] == "test/bench"
    assert task["agent"]["user"] == "agent" and task["verifier"]["user"] == "root"
    assert task["verifier"]["environment_mode"] == "shared"
    # Finalize: up to 3 auto_best re-scores + a submission outside them + 1 target, 600 s each,
    # plus slack.
    assert task["verifier"]["timeout_sec"] == 5 * 600 + 120
    assert task["environment"]["build_timeout_sec"] >= 600
    # Sidecar-only data is never copied into main's image.
    main_docker = files["environment/Dockerfile"][1].decode()
    assert "sidecar" not in main_docker and "agent-baseline" not in main_docker
    assert "COPY sidecar/dataset/" in files["environment/sidecar/Dockerfile"][1].decode()
    # The two baselines are the same commit, and it is the files' deterministic commit.
    seed = json.loads(files["environment/agent-seed/BASELINE.json"][1])
    assert seed == json.loads(files["environment/agent-baseline/BASELINE.json"][1])
    scratch = tmp_path / "scratch"
    shutil.copytree(out / "environment/agent-seed/files", scratch)
    assert make_baseline_commit(scratch) == seed["commit"] == result.commit
    serve = load_serve_config(out / "environment/sidecar/serve.json")
    assert serve.baseline_commit == result.commit and serve.secrets == ["API_TOKEN"]
    assert serve.mode_a is not None and serve.mode_a.scorer == "/opt/vero/sidecar/scorer/scorer.py"
    assert serve.paths == ServePaths()  # the sidecar sees /work/agent and /work/results like main
    assert files["solution/solve.sh"][1] == (tmp_path / "bench/solution/solve.sh").read_bytes()
    assert verify(out).ok


def _instruction(out: Path) -> str:
    """instruction.md as a reader sees it: inline texts joined, markup and escapes resolved."""
    return "\n".join(inline_texts((out / "instruction.md").read_text(encoding="utf-8")))


def test_instruction_states_the_time_limit_the_mean_and_where_the_output_is_described(tmp_path: Path,
                                                                                    pex: Path) -> None:
    config = write_mode_a(tmp_path / "bench", agent_timeout=5400)
    _build(config, tmp_path / "out", pex)
    text = _instruction(tmp_path / "out")
    assert "You have 5400 seconds (90 minutes) in all (the task's `[agent] timeout_sec`)" in text
    assert "A split's score is the mean of its samples' scores; a sample that errors or times out scores 0." in text
    assert "What the function must return is described in the repository's `README.md`." in text
    contract = "the answer as a decimal string, e.g. \"42\""
    write_yaml(config, mode_a_config(output_contract=contract))
    _build(config, tmp_path / "out2", pex)
    text = _instruction(tmp_path / "out2")
    assert f"What the function must return: {contract}" in text and "described in the repository" not in text
    (tmp_path / "bench/agent/README.md").unlink()
    write_yaml(config, mode_a_config(read_only_paths=[]))
    _build(config, tmp_path / "out3", pex)
    assert "What the function must return" not in _instruction(tmp_path / "out3")


def test_task_toml_has_harbor_collect_the_log_dir_and_the_rescue_archive(tmp_path: Path, pex: Path) -> None:
    _build(write_mode_a(tmp_path / "bench"), tmp_path / "out", pex)
    task = tomllib.loads((tmp_path / "out/task.toml").read_text())
    assert task["artifacts"] == [
        {"source": "/var/log/vero", "destination": "eval-sidecar", "service": "eval-sidecar"},
        {"source": "/var/lib/vero/rescue/session-rescue.tar.gz", "destination": "session-rescue.tar.gz",
         "service": "eval-sidecar"}]
    assert ServePaths().log_dir == "/var/log/vero"


def test_only_referenced_splits_are_baked(tmp_path: Path, pex: Path) -> None:
    config = write_mode_a(tmp_path / "bench")
    (tmp_path / "bench/data/unused.jsonl").write_text('{"id": 1}\n')
    _build(config, tmp_path / "out", pex)
    baked = sorted(p.name for p in (tmp_path / "out/environment/sidecar/dataset").iterdir())
    assert baked == ["test.jsonl", "train.jsonl", "validation.jsonl"]


def test_scorer_package_and_default_solution(tmp_path: Path, pex: Path) -> None:
    config = write_mode_a(tmp_path / "bench", scorer="scorer", solution=None)
    (tmp_path / "bench/scorer/__init__.py").write_text("from .scorer import score\n")
    _build(config, tmp_path / "out", pex)
    serve = load_serve_config(tmp_path / "out/environment/sidecar/serve.json")
    assert serve.mode_a is not None and serve.mode_a.scorer == "/opt/vero/sidecar/scorer/scorer"
    assert (tmp_path / "out/environment/sidecar/scorer/scorer/__init__.py").is_file()
    solve = (tmp_path / "out/solution/solve.sh").read_text()
    assert "vero harbor eval --split validation" in solve
    subprocess.run(["bash", "-n", str(tmp_path / "out/solution/solve.sh")], check=True)


def test_mode_b_task(tmp_path: Path, pex: Path) -> None:
    harbor = {"agent": "solver.agent:Agent", "n_attempts": 1, "timeout": 900, "kill_grace": 20}
    config = write_mode_b(tmp_path / "bench", harbor=harbor, timeout=600, score_baseline=True,
                          max_concurrency=2)
    out = tmp_path / "out"
    result = _build(config, out, pex)
    assert any(w.startswith("max_concurrency has no effect in Mode B") for w in result.warnings)
    # harbor.timeout replaces `timeout` for one evaluation, and a timed-out harbor has its grace:
    # 3 auto_best re-scores + a submission outside them + 1 target and its baseline, 920 s each.
    task = tomllib.loads((out / "task.toml").read_text())
    assert task["verifier"]["timeout_sec"] == 6 * 920 + 120
    assert "One evaluation may take at most 900" in (out / "instruction.md").read_text()
    compose = yaml.safe_load((out / "environment/docker-compose.yaml").read_text())
    assert "/var/run/docker.sock:/var/run/docker.sock" in compose["services"]["eval-sidecar"]["volumes"]
    assert not any("docker.sock" in v for v in compose["services"]["main"]["volumes"])
    baked = sorted(p.name for p in (out / "environment/sidecar/inner_tasks").iterdir())
    assert baked == ["task-a", "task-b", "task-c", "task-d"]  # task-e is in no split
    assert (out / "environment/sidecar/inner_tasks/task-b/tests/test.sh").stat().st_mode & 0o111
    serve = load_serve_config(out / "environment/sidecar/serve.json")
    assert serve.mode_b is not None
    assert serve.mode_b.harbor.task_source == "/opt/vero/sidecar/inner_tasks"
    assert serve.mode_b.partition == mode_b_config()["partition"]
    sidecar = (out / "environment/sidecar/Dockerfile").read_text()
    assert sidecar.startswith("# Compiled") and "FROM vero/harbor-sidecar:trixie" in sidecar
    assert "COPY sidecar/inner_tasks/ /opt/vero/sidecar/inner_tasks/" in sidecar
    assert "inner_tasks" not in (out / "environment/Dockerfile").read_text()
    instruction = (out / "instruction.md").read_text()
    assert "solver.agent:Agent" in instruction and "harbor run" in instruction
    assert verify(out).ok


@pytest.mark.parametrize("score_baseline", [True, False])
def test_score_baseline_reaches_serve_json(tmp_path: Path, pex: Path, score_baseline: bool) -> None:
    config = write_mode_a(tmp_path / "bench", score_baseline=score_baseline)
    _build(config, tmp_path / "out", pex)
    serve = load_serve_config(tmp_path / "out/environment/sidecar/serve.json")
    assert serve.score_baseline is score_baseline
    # The verifier's time covers the baseline's target evaluations only when they run:
    # (3 auto_best re-scores + 1 submission + 1 target, + 1 baseline target) x 600 s + 120 s.
    task = tomllib.loads((tmp_path / "out/task.toml").read_text())
    assert task["verifier"]["timeout_sec"] == (6 if score_baseline else 5) * 600.0 + 120.0


def test_mode_b_remote_registry_source(tmp_path: Path, pex: Path) -> None:
    config = write_mode_b(tmp_path / "bench", inner_task=None,
                          harbor={"agent": "solver.agent:Agent", "task_source": "org/tasks@1.0"},
                          partition={"train": ["org/task-a", "org/task-b"], "validation": ["org/task-c"],
                                     "test": ["org/task-d"]})
    result = _build(config, tmp_path / "out", pex)
    serve = load_serve_config(tmp_path / "out/environment/sidecar/serve.json")
    assert serve.mode_b is not None and serve.mode_b.harbor.task_source == "org/tasks@1.0"
    assert serve.mode_b.harbor.registry_path is None
    assert not (tmp_path / "out/environment/sidecar/inner_tasks").exists()
    assert any("needs network access" in warning for warning in result.warnings)


def _registry_bench(tmp_path: Path, *, git: bool, **overrides: Any) -> Path:
    """write_mode_b's benchmark, its inner tasks served by a local registry instead."""
    config = write_mode_b(tmp_path / "bench")
    inner = tmp_path / "bench" / "inner"
    registry = write_local_registry(tmp_path / "registry", {d.name: d for d in sorted(inner.iterdir())}, git=git)
    data = mode_b_config(inner_task=None, **overrides)
    data["harbor"] = {**data["harbor"], "task_source": "bench@1.0", "registry_path": str(registry)}
    return write_yaml(config, data)


@pytest.mark.parametrize("git", [True, False])
def test_mode_b_local_registry_is_baked_for_the_sidecar_only(tmp_path: Path, pex: Path, git: bool) -> None:
    config = _registry_bench(tmp_path, git=git)
    out = tmp_path / "out"
    result = _build(config, out, pex)
    assert not result.warnings
    serve = load_serve_config(out / "environment/sidecar/serve.json")
    assert serve.mode_b is not None
    assert serve.mode_b.harbor.task_source == "bench@1.0"
    assert serve.mode_b.harbor.registry_path == "/opt/vero/sidecar/registry/registry.json"
    # Only the partition's tasks (task-e is not in it), at their in-container paths, same names.
    baked = json.loads((out / "environment/sidecar/registry/registry.json").read_text())
    assert baked == [{"name": "bench", "version": "1.0", "description": "test registry", "tasks": [
        {"name": name, "path": f"/opt/vero/sidecar/registry/tasks/{name}"}
        for name in ("task-a", "task-b", "task-c", "task-d")]}]
    tasks = out / "environment/sidecar/registry/tasks"
    assert sorted(p.name for p in tasks.iterdir()) == ["task-a", "task-b", "task-c", "task-d"]
    source = tmp_path / "bench/inner/task-b"
    assert snapshot(tasks / "task-b") == snapshot(source)
    sidecar = (out / "environment/sidecar/Dockerfile").read_text()
    assert "COPY sidecar/registry/ /opt/vero/sidecar/registry/" in sidecar
    assert "registry" not in (out / "environment/Dockerfile").read_text()
    assert verify(out).ok
    # The partition resolves in the sidecar against the baked registry ('org/task-b' is a [task].name):
    # here its in-container paths are mapped to the output, as the image's COPY does.
    in_container = (out / "environment/sidecar/registry/registry.json").read_text()
    mapped = tmp_path / "mapped.json"
    mapped.write_text(in_container.replace("/opt/vero/sidecar/registry/", f"{out}/environment/sidecar/registry/"))
    refs = TaskSource.open("bench@1.0", Path("/"), str(mapped)).resolve(["task-a", "org/task-b", "task-c"])
    assert [(r.sample_id, r.dir_name) for r in refs] == [
        ("task-a", "task-a"), ("org/task-b", "task-b"), ("task-c", "task-c")]


def test_mode_b_local_registry_builds_are_byte_identical(tmp_path: Path, pex: Path) -> None:
    config = _registry_bench(tmp_path, git=True)
    _build(config, tmp_path / "one", pex)
    _build(config, tmp_path / "two", pex)
    assert snapshot(tmp_path / "one") == snapshot(tmp_path / "two")


def test_mode_b_registry_names_are_checked_at_build_time(tmp_path: Path, pex: Path) -> None:
    config = _registry_bench(tmp_path, git=True, partition={
        "train": ["task-a", "org/task-b"], "validation": ["tsak-c"], "test": ["task-z"]})
    message = _fails_cleanly(tmp_path, config, pex, "unknown or ambiguous task names")
    assert f"(registry {tmp_path / 'registry/registry.json'})" in message
    assert "'tsak-c' is not a task of bench@1.0 (did you mean 'task-c'" in message
    assert "'task-z' is not a task of bench@1.0 (did you mean" in message
    data = yaml.safe_load(config.read_text())
    data["partition"] = {"train": ["task-a"], "validation": ["task-c"], "test": ["task-d"]}
    data["harbor"]["task_source"] = "bench@2.0"
    write_yaml(config, data)
    _fails_cleanly(tmp_path, config, pex, re.escape("dataset 'bench' has no version '2.0' (it has 1.0)"))
    data["harbor"]["task_source"] = "org/bench@1.0"
    write_yaml(config, data)
    _fails_cleanly(tmp_path, config, pex, "is a Harbor Hub package")
    # Without a local registry the names can only be style-checked.
    del data["harbor"]["registry_path"]
    data["harbor"]["task_source"] = "bench@1.0"
    data["partition"]["test"] = ["org/task-d"]
    write_yaml(config, data)
    _fails_cleanly(tmp_path, config, pex,
                   re.escape("'org/task-d' is not a task directory name (did you mean 'task-d'?)"))


def test_mode_b_registry_tasks_the_sidecar_cannot_reach_are_refused(tmp_path: Path, pex: Path) -> None:
    config = _registry_bench(tmp_path, git=True)
    registry = tmp_path / "registry/registry.json"
    listing = json.loads(registry.read_text())
    listing[0]["tasks"][0]["git_url"] = "https://github.com/example/tasks.git"
    registry.write_text(json.dumps(listing))
    _fails_cleanly(tmp_path, config, pex, "is fetched from https://github.com/example/tasks.git, which the "
                                          "sidecar cannot reach")
    listing[0]["tasks"][0] = {"name": "task-a", "path": "relative/task-a"}
    registry.write_text(json.dumps(listing))
    _fails_cleanly(tmp_path, config, pex, "has the relative local path 'relative/task-a'")
    registry.write_text("{not json")
    _fails_cleanly(tmp_path, config, pex, "the registry is not valid JSON")


def test_rendered_shell_scripts_parse(tmp_path: Path, pex: Path) -> None:
    out = tmp_path / "out"
    _build(write_mode_a(tmp_path / "bench"), out, pex)
    for rel in ("environment/main/seed.sh", "tests/test.sh", "environment/bin/vero"):
        subprocess.run(["bash", "-n", str(out / rel)], check=True)
    test_sh = (out / "tests/test.sh").read_text()
    assert ("vero harbor finalize --token-file /var/lib/vero/token/admin-token "
            "--output /logs/verifier/reward.json") in test_sh


# --- determinism ---------------------------------------------------------------------------------------

def test_byte_identical_across_builds_locations_and_cwd(tmp_path: Path, pex: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    first = write_mode_a(tmp_path / "one" / "bench")
    shutil.copytree(tmp_path / "one", tmp_path / "elsewhere" / "deeper")
    second = tmp_path / "elsewhere" / "deeper" / "bench" / "build.yaml"
    _build(first, tmp_path / "out1", pex)
    _build(first, tmp_path / "out2", pex)  # same inputs again
    monkeypatch.chdir(second.parent.parent)
    _build(Path("bench/build.yaml"), Path("out3"), pex)  # relative paths, another cwd and location
    reference = snapshot(tmp_path / "out1")
    assert snapshot(tmp_path / "out2") == reference
    assert snapshot(second.parent.parent / "out3") == reference
    blob = b"".join(data for _, data in reference.values())
    assert str(tmp_path).encode() not in blob


def test_git_and_plain_sources_give_the_same_commit(tmp_path: Path, pex: Path) -> None:
    plain = write_mode_a(tmp_path / "plain")
    repo_bench = write_mode_a(tmp_path / "git")
    agent = tmp_path / "git" / "agent"
    _git(agent, "init", "-q")
    _git(agent, "add", "-A")
    _git(agent, "commit", "-qm", "x")
    a = _build(plain, tmp_path / "out-plain", pex)
    b = _build(repo_bench, tmp_path / "out-git", pex)
    assert a.commit == b.commit and a.root_digest == b.root_digest
    assert not (tmp_path / "out-git/environment/agent-seed/files/.git").exists()


def _baseline(out: Path) -> dict[str, tuple[str, bytes]]:
    return snapshot(out / "environment/agent-seed/files")


def test_git_subtree_bakes_the_files_on_disk_and_warns_about_uncommitted_changes(tmp_path: Path,
                                                                                 pex: Path) -> None:
    config = write_mode_a(tmp_path / "mono" / "bench")
    mono = tmp_path / "mono"
    agent = mono / "bench/agent"
    (mono / ".gitignore").write_text("*.log\n/bench/agent/build/\n")
    (agent / "solver/__pycache__").mkdir()
    (agent / "solver/__pycache__/core.cpython-311.pyc").write_bytes(b"junk")
    _git(mono, "init", "-q")
    _git(mono, "add", "-A")
    _git(mono, "commit", "-qm", "x")
    clean = _build(config, tmp_path / "out-clean", pex)
    assert clean.warnings == []
    edited = "def solve(row):\n    return 'edited'\n"
    (agent / "solver/core.py").write_text(edited)
    (agent / "untracked.txt").write_text("x\n")
    (agent / "run.log").write_text("ignored by the root .gitignore\n")
    (agent / "build").mkdir()
    (agent / "build/out.bin").write_bytes(b"ignored directory")
    result = _build(config, tmp_path / "out", pex)
    files = tmp_path / "out/environment/agent-seed/files"
    # The baseline is the directory on disk: edits and untracked files in, ignored ones out.
    assert (files / "solver/core.py").read_text() == edited
    assert (files / "untracked.txt").is_file()
    assert not (files / "run.log").exists() and not (files / "build").exists()
    assert not (files / "solver/__pycache__").exists()
    assert not (files / "build.yaml").exists()  # only the agent_repo subtree
    assert result.warnings == [
        "agent_repo bench/agent has uncommitted changes (solver/core.py, untracked.txt); the baseline is the "
        "directory as it is on disk, these changes included: commit them to make the baseline reproducible "
        "from git"]
    assert result.commit != clean.commit
    # What Pants puts in its sandbox (no .git, git-ignored files left out) gives the same seal.
    sandbox = tmp_path / "sandbox"
    shutil.copytree(mono / "bench", sandbox, ignore=shutil.ignore_patterns("*.log", "build", "__pycache__"))
    plain = _build(sandbox / "build.yaml", tmp_path / "out-plain", pex)
    assert plain.warnings == [] and plain.root_digest == result.root_digest


def test_gitignore_files_inside_a_plain_dir_apply_too(tmp_path: Path, pex: Path) -> None:
    config = write_mode_a(tmp_path / "bench")
    agent = tmp_path / "bench/agent"
    (agent / ".gitignore").write_text("secret.txt\n.venv/\n")
    (agent / "secret.txt").write_text("not for the baseline\n")
    (agent / ".venv/bin").mkdir(parents=True)
    os.symlink("/usr/bin/python3", agent / ".venv/bin/python")  # outside the tree, but ignored
    _build(config, tmp_path / "out", pex)
    baked = _baseline(tmp_path / "out")
    assert ".gitignore" in baked and "secret.txt" not in baked
    assert not any(rel.startswith(".venv") for rel in baked)


def test_a_tracked_file_that_matches_an_ignore_pattern_is_left_out(tmp_path: Path, pex: Path) -> None:
    # Pants ignores by pattern, tracked or not; the compiler does the same, so both agree.
    config = write_mode_a(tmp_path / "bench")
    agent = tmp_path / "bench/agent"
    (agent / ".gitignore").write_text("*.dat\n")
    (agent / "forced.dat").write_text("tracked anyway\n")
    _git(agent, "init", "-q")
    _git(agent, "add", "-A")
    _git(agent, "add", "-f", "forced.dat")
    _git(agent, "commit", "-qm", "x")
    result = _build(config, tmp_path / "out", pex)
    assert "forced.dat" not in _baseline(tmp_path / "out") and result.warnings == []


def test_git_repo_without_commits_bakes_its_files_and_warns(tmp_path: Path, pex: Path) -> None:
    config = write_mode_a(tmp_path / "bench")
    agent = tmp_path / "bench/agent"
    _git(agent, "init", "-q")
    result = _build(config, tmp_path / "out", pex)
    assert "solver/core.py" in _baseline(tmp_path / "out")
    assert len(result.warnings) == 1
    assert "agent has uncommitted changes (README.md, run.sh, solver/__init__.py, solver/core.py)" \
        in result.warnings[0]


def test_symlinks_inside_are_kept_outside_refused(tmp_path: Path, pex: Path) -> None:
    config = write_mode_a(tmp_path / "bench")
    agent = tmp_path / "bench/agent"
    os.symlink("solver/core.py", agent / "link.py")
    _build(config, tmp_path / "out", pex)
    assert os.readlink(tmp_path / "out/environment/agent-seed/files/link.py") == "solver/core.py"
    assert verify(tmp_path / "out").ok
    os.symlink("../../etc/passwd", agent / "solver/evil")
    with pytest.raises(VeroError, match="points outside the tree"):
        _build(config, tmp_path / "out2", pex)


# --- output handling -----------------------------------------------------------------------------------

def test_refuses_a_non_empty_directory_it_did_not_create(tmp_path: Path, pex: Path) -> None:
    config = write_mode_a(tmp_path / "bench")
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("mine")
    with pytest.raises(VeroError, match="not empty and has no .vero-task marker"):
        _build(config, out, pex)
    assert (out / "precious.txt").read_text() == "mine" and sorted(os.listdir(out)) == ["precious.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(VeroError, match="not a directory"):
        _build(config, tmp_path / "file", pex)


def test_empty_dir_and_earlier_output_are_replaced(tmp_path: Path, pex: Path) -> None:
    config = write_mode_a(tmp_path / "bench")
    out = tmp_path / "out"
    out.mkdir()
    _build(config, out, pex)
    (out / "stale.txt").write_text("from an old build")
    _build(config, out, pex)
    assert not (out / "stale.txt").exists() and verify(out).ok
    assert _leftovers(tmp_path) == []


def test_failed_build_keeps_previous_output_and_leaves_nothing(tmp_path: Path, pex: Path) -> None:
    config = write_mode_a(tmp_path / "bench")
    out = tmp_path / "out"
    _build(config, out, pex)
    before = snapshot(out)
    write_yaml(config, mode_a_config(entrypoint="solver.missing:solve"))  # fails after staging started
    with pytest.raises(VeroError, match="module 'solver.missing' is not in the agent repo"):
        _build(config, out, pex)
    assert snapshot(out) == before and _leftovers(tmp_path) == []


def test_an_output_that_cannot_be_written_is_one_message(tmp_path: Path, pex: Path) -> None:
    config = write_mode_a(tmp_path / "bench")
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file" / "out", Path("/proc/vero-out")):
        with pytest.raises(VeroError, match="the task could not be written") as raised:
            _build(config, out, pex)
        assert raised.value.fix is not None and "writable directory" in raised.value.fix
    assert (tmp_path / "file").read_text() == "x" and _leftovers(tmp_path) == []


def test_output_overlapping_an_input_is_refused(tmp_path: Path, pex: Path) -> None:
    config = write_mode_a(tmp_path / "bench")
    with pytest.raises(VeroError, match="overlaps the input"):
        _build(config, tmp_path / "bench/agent/out", pex)
    out = tmp_path / "bench/out"
    _build(config, out, pex)
    # Rebuilding from a previous output's files would replace the very input being read.
    write_yaml(config, mode_a_config(agent_repo="out/environment/agent-seed/files"))
    with pytest.raises(VeroError, match="overlaps the input"):
        _build(config, out, pex)
    assert verify(out).ok


# --- bad inputs: fail before writing anything -----------------------------------------------------------

def _fails_cleanly(tmp_path: Path, config: Path, pex: Path, match: str,
                   env: dict[str, str] | None = None) -> str:
    out = tmp_path / "out"
    with pytest.raises(VeroError, match=match) as info:
        _build(config, out, pex, env)
    assert not out.exists(), "nothing may be written"
    assert _leftovers(tmp_path) == []
    return info.value.render()


def test_missing_secrets_are_all_named(tmp_path: Path, pex: Path) -> None:
    config = write_mode_a(tmp_path / "bench", secrets=["FIRST_KEY", "SECOND_KEY", "SET_KEY"])
    message = _fails_cleanly(tmp_path, config, pex, "secret", {"SET_KEY": "x"})
    assert "FIRST_KEY, SECOND_KEY" in message and "SET_KEY" not in message.split("fix:")[0]


def test_unknown_partition_names_suggest_close_matches(tmp_path: Path, pex: Path) -> None:
    partition = {"train": ["task-a", "tsak-b"], "validation": ["task-c"], "test": ["nothing-like-it"]}
    config = write_mode_b(tmp_path / "bench", partition=partition)
    message = _fails_cleanly(tmp_path, config, pex, "unknown or invalid task names")
    assert "'tsak-b' is not a task in" in message and "(did you mean 'task-b'" in message
    assert "'nothing-like-it' is not a task in" in message


def test_partition_may_name_a_task_twice_only_by_mistake(tmp_path: Path, pex: Path) -> None:
    partition = {"train": ["task-b", "org/task-b"], "validation": ["task-c"], "test": ["task-d"]}
    config = write_mode_b(tmp_path / "bench", partition=partition)
    _fails_cleanly(tmp_path, config, pex, "'org/task-b' and 'task-b' are the same task")


def test_partition_follows_the_sidecar_rules(tmp_path: Path, pex: Path) -> None:
    partition = {"train": ["task-a "], "validation": ["task-c"], "test": ["task-d"]}
    _fails_cleanly(tmp_path, write_mode_b(tmp_path / "bench", partition=partition), pex,
                   "invalid task name 'task-a '")


def test_invalid_inner_task(tmp_path: Path, pex: Path) -> None:
    config = write_mode_b(tmp_path / "bench")
    (tmp_path / "bench/inner/task-c/tests/test.sh").unlink()
    _fails_cleanly(tmp_path, config, pex, "'task-c' is not a valid Harbor task: missing tests/test.sh")


@pytest.mark.parametrize(("change", "match"), [
    (lambda b: shutil.rmtree(b / "agent"), "agent_repo: 'agent' -> .* does not exist"),
    (lambda b: shutil.rmtree(b / "data"), "dataset: 'data' -> .* does not exist"),
    (lambda b: (b / "scorer/scorer.py").unlink(), "scorer: 'scorer/scorer.py' -> .* does not exist"),
    (lambda b: (b / "solution/solve.sh").unlink(), "has no solve.sh"),
    (lambda b: (b / "data/test.jsonl").rename(b / "data/tests.jsonl"),
     r"no test.jsonl .*did you mean 'tests'"),
    (lambda b: (b / "data/train.jsonl").write_text('{"id": 1}\nnot json\n'), "line 2 is not valid JSON"),
    (lambda b: (b / "data/train.jsonl").write_text('{"id": NaN}\n'), "line 1 is not valid JSON"),
    (lambda b: (b / "data/train.jsonl").write_text('[1, 2]\n'), "line 1 is a JSON list"),
    (lambda b: (b / "data/train.jsonl").write_text("\n"), "split file has no rows"),
])
def test_missing_or_broken_inputs(tmp_path: Path, pex: Path, change: Any, match: str) -> None:
    config = write_mode_a(tmp_path / "bench")
    change(tmp_path / "bench")
    _fails_cleanly(tmp_path, config, pex, match)


@pytest.mark.parametrize(("overrides", "match"), [
    ({"label_fields": ["anwser"]}, "label_fields 'anwser' appear in no row .*did you mean 'answer'"),
    ({"targets": [{"split": "test", "reward_key": "a", "sample_ids": ["test-1", "test-99"]}]},
     "sample_ids 'test-99' are not in split 'test'"),
    ({"scorer": "agent/solver/core.py"}, "scorer .* is inside the agent repo"),
    ({"dataset": "agent"}, "dataset .* is inside the agent repo"),
    ({"scorer": "data/train.jsonl"}, "is not a .py file"),
    ({"scorer": "data"}, "directory without __init__.py"),
])
def test_inconsistent_inputs(tmp_path: Path, pex: Path, overrides: dict[str, Any], match: str) -> None:
    _fails_cleanly(tmp_path, write_mode_a(tmp_path / "bench", **overrides), pex, match)


def test_inner_task_inside_agent_repo(tmp_path: Path, pex: Path) -> None:
    config = write_mode_b(tmp_path / "bench")
    shutil.move(str(tmp_path / "bench/inner"), str(tmp_path / "bench/agent/inner"))
    write_yaml(config, mode_b_config(inner_task="agent/inner"))
    _fails_cleanly(tmp_path, config, pex, "inner_task .* is inside the agent repo")


def test_bad_runtime_pex(tmp_path: Path) -> None:
    config = write_mode_a(tmp_path / "bench")
    _fails_cleanly(tmp_path, config, tmp_path / "none.pex", "runtime PEX .* does not exist")
    (tmp_path / "bench/not.pex").write_text("text")
    _fails_cleanly(tmp_path, config, tmp_path / "bench/not.pex", "is not a PEX file")


def test_no_pex_when_running_from_sources(tmp_path: Path) -> None:
    config = write_mode_a(tmp_path / "bench")
    with pytest.raises(VeroError, match="not running from a PEX"):
        build_task(config, tmp_path / "out", None, {})


def test_empty_agent_repo(tmp_path: Path, pex: Path) -> None:
    config = write_mode_a(tmp_path / "bench")
    shutil.rmtree(tmp_path / "bench/agent")
    (tmp_path / "bench/agent/.git").mkdir(parents=True)  # only VCS metadata: nothing to export
    message = _fails_cleanly(tmp_path, config, pex, "agent_repo")
    assert "not a git repository" not in message


@pytest.mark.parametrize(("overrides", "match"), [
    ({"read_only_paths": ["nope.txt"]}, r"read_only_paths\[0\]: 'nope.txt' does not exist"),
    ({"entrypoint": "nomodule:solve"}, "module 'nomodule' is not in the agent repo"),
])
def test_checks_against_the_exported_baseline(tmp_path: Path, pex: Path, overrides: dict[str, Any],
                                              match: str) -> None:
    _fails_cleanly(tmp_path, write_mode_a(tmp_path / "bench", **overrides), pex, match)


def test_hf_dataset_dir_is_refused_like_the_sidecar_does(tmp_path: Path, pex: Path) -> None:
    config = write_mode_a(tmp_path / "bench")
    data = tmp_path / "bench/data"
    shutil.rmtree(data)
    for split in ("train", "validation", "test"):
        (data / split).mkdir(parents=True)
        (data / split / "data-00000-of-00001.arrow").write_bytes(b"arrow")
    (data / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "validation", "test"]}))
    message = _fails_cleanly(tmp_path, config, pex, "Hugging Face save_to_disk directories are not supported")
    assert "to_json" in message


def test_blank_lines_are_skipped_like_the_sidecar_does(tmp_path: Path, pex: Path) -> None:
    config = write_mode_a(tmp_path / "bench")
    train = tmp_path / "bench/data/train.jsonl"
    train.write_text(train.read_text().replace("\n", "\n\n", 1) + "\n")
    _build(config, tmp_path / "out", pex)
    assert (tmp_path / "out/environment/sidecar/dataset/train.jsonl").read_bytes() == train.read_bytes()


def test_repository_wide_base_images_apply_where_build_yaml_names_none(tmp_path: Path, pex: Path) -> None:
    defaults = ("corp/main:1", "corp/sidecar:2")
    build_task(write_mode_a(tmp_path / "a"), tmp_path / "out_a", pex, {}, base_images=defaults)
    assert (tmp_path / "out_a/environment/Dockerfile").read_text().count("FROM corp/main:1") == 1
    assert "FROM corp/sidecar:2" in (tmp_path / "out_a/environment/sidecar/Dockerfile").read_text()
    # A base image that build.yaml names wins over the default.
    config = write_mode_a(tmp_path / "b", base_image_main="mine/main:3")
    build_task(config, tmp_path / "out_b", pex, {}, base_images=defaults)
    assert "FROM mine/main:3" in (tmp_path / "out_b/environment/Dockerfile").read_text()
    assert "FROM corp/sidecar:2" in (tmp_path / "out_b/environment/sidecar/Dockerfile").read_text()
    with pytest.raises(VeroError, match="invalid default base image") as caught:
        build_task(write_mode_a(tmp_path / "c"), tmp_path / "out_c", pex, {}, base_images=("no spaces allowed", None))
    assert "--base-image-main" in caught.value.render()
    assert not (tmp_path / "out_c").exists()


def test_the_build_command_passes_the_base_image_defaults_on(tmp_path: Path, pex: Path) -> None:
    args = ["harbor", "build", "-c", str(write_mode_a(tmp_path / "a")), "-o", str(tmp_path / "out"),
            "--runtime-pex", str(pex), "--base-image-main", "corp/main:1", "--base-image-sidecar", "corp/sidecar:2"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "FROM corp/main:1" in (tmp_path / "out/environment/Dockerfile").read_text()
    assert "FROM corp/sidecar:2" in (tmp_path / "out/environment/sidecar/Dockerfile").read_text()
