"""End to end: tasks/foo compiled with the real runtime PEX, run by the real harbor CLI on the
local Docker engine, and every trust-boundary rule of SPEC §4 checked against live containers."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.benchmarks import FOO_DIR
from tests.support.compose import compose, reap_stale_projects, remove_project
from tests.support.tools import harbor_bin, require_base_image
from vero.compiler.compiler import build_task
from vero.compiler.seal import verify as verify_seal
from vero.session.locate import trial_report
from vero.session.reader import load_session
from vero.session.recover import recover_files

RUNTIME_PEX = Path("src.python.vero/vero.pex").absolute()  # runtime_package_dependencies
FOO = Path("tasks/foo").absolute() if Path("tasks/foo/build.yaml").is_file() else FOO_DIR
PANTS_BUILT = Path("dist/tasks/foo")  # the `//tasks:foo` dependency's codegen output
TOKEN = "/var/lib/vero/token/admin-token"
TRIAL_PREFIX = "vero-e2e-foo-"
LIVE_PREFIX = "vero-e2e-live-"


def _load(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def baseline_score(task_dir: Path, split: str) -> float:
    """The baseline's mean score on `split`, computed here from the task's own files."""
    solve = _load(task_dir / "environment/agent-seed/files/solver/core.py", "foo_baseline").solve
    score = _load(FOO / "scorer/scorer.py", "foo_scorer").score
    rows = [json.loads(line) for line in (FOO / f"data/{split}.jsonl").read_text().splitlines() if line]
    total = sum(score(solve({k: v for k, v in row.items() if k != "answer"}), row) for row in rows)
    return float(total) / len(rows)


def _harbor_oracle_trial(task: Path, tmp_path: Path) -> Path:
    """Run the oracle on `task` with the real harbor CLI; return the one trial's directory."""
    jobs = tmp_path / "jobs"
    job = f"vero-e2e-{uuid.uuid4().hex[:10]}"
    env = {**os.environ, "HARBOR_TELEMETRY": "0"}
    try:
        argv = [str(harbor_bin()), "run", "-p", str(task), "-a", "oracle", "-e", "docker", "-y", "-q",
                "-o", str(jobs), "--job-name", job]
        run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, check=False)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        trials = [p.parent for p in (jobs / job).glob("*/result.json")]
        assert len(trials) == 1, run.stdout[-3000:]
        result = json.loads((trials[0] / "result.json").read_text())
        assert result["exception_info"] is None, result["exception_info"]
        reward = json.loads((trials[0] / "verifier/reward.json").read_text())
        assert result["verifier_result"]["rewards"] == reward
        return trials[0]
    finally:
        for trial in (jobs / job).glob("*/"):
            remove_project(f"{trial.name.lower()}__env")


@pytest.mark.parametrize("origin", ["vero-harbor-build", "pants-package"])
def test_oracle_run_under_harbor_beats_the_baseline(tmp_path: Path, origin: str) -> None:
    require_base_image()
    reap_stale_projects(TRIAL_PREFIX)
    # A unique task dir name: Harbor names the trial, and so the compose project, after it.
    task = tmp_path / f"{TRIAL_PREFIX}{uuid.uuid4().hex[:10]}"
    if origin == "pants-package":
        # The `//tasks:foo` harbor_task, compiled by the Pants plugin (its codegen output).
        assert verify_seal(PANTS_BUILT).ok, f"{PANTS_BUILT} is missing or does not match its seal"
        shutil.copytree(PANTS_BUILT, task, symlinks=True)
    else:
        build_task(FOO / "build.yaml", task, RUNTIME_PEX, {})
    trial = _harbor_oracle_trial(task, tmp_path)
    reward = json.loads((trial / "verifier/reward.json").read_text())
    # The sidecar's trusted baseline score equals the one computed here from the same files.
    expected_baseline = baseline_score(task, "test")
    baseline = json.loads((trial / "verifier/baseline.json").read_text())
    assert baseline == {"accuracy": expected_baseline}
    assert reward["accuracy"] > expected_baseline, (reward, expected_baseline)
    report = json.loads((trial / "verifier/finalize.json").read_text())
    assert report["rewards"] == reward and report["candidate"] is not None
    oracle_log = (trial / "agent/oracle.txt").read_text()
    assert '"source"' not in oracle_log and '"split": "validation"' in oracle_log
    check_session_archives(task, trial, oracle_log, tmp_path)


def oracle_commit(oracle_log: str) -> str:
    """The one commit the oracle evaluated and submitted (its `vero harbor` outputs name it)."""
    commits: set[str] = set(re.findall(r'"commit": "([0-9a-f]{40})"', oracle_log))
    [commit] = commits
    return commit


def check_session_archives(task: Path, trial: Path, oracle_log: str, tmp_path: Path) -> None:
    """The trial kept the final archive (test.sh) and the rescue archive (collect hook, before the
    verifier): `vero report` names the oracle's commit as the winner with its score, and recover
    gives the oracle's files."""
    commit = oracle_commit(oracle_log)
    report = trial_report(trial)
    session = report.session
    assert session is not None and session.kind == "final", report.note
    assert session.selection.candidate == commit and session.rewards == report.rewards
    [winner] = [c for c in session.candidates if c.winner]
    assert winner.commit == commit and "submitted" in winner.roles
    identity = json.loads((task / "environment/sidecar/identity/task.json").read_text())
    assert session.task.task_digest == identity["task_digest"] and session.task.name == identity["name"]
    final = load_session(trial / "verifier/session.tar.gz")
    out = recover_files(final, commit, tmp_path / "recovered")
    solve = (task / "solution/solve.sh").read_text()
    written = solve.split("cat > solver/core.py <<'EOF'\n")[1].split("\nEOF\n")[0] + "\n"
    assert (out.path / "solver/core.py").read_text() == written
    # The rescue archive: taken by the collect hook after the agent phase, so before finalize.
    rescue = load_session(trial / "artifacts/session-rescue.tar.gz")
    assert rescue.finalize is None and rescue.winner is None
    optimizer = [e for e in final.evaluations if e.asked_by == "optimizer"]
    assert [e.record.experiment_id for e in rescue.evaluations] == [e.record.experiment_id for e in optimizer]
    assert {e.record.split for e in optimizer} == {"train", "validation"}
    assert any(e.asked_by == "finalize" and e.record.purpose == "target" for e in final.evaluations)


CRASHING_OPTIMIZER = """
from harbor.agents.base import BaseAgent

# One evaluation, then an exception Harbor's trial does not swallow (it only records
# AgentTimeoutError and NonZeroAgentExitCodeError and goes on to the verifier).
SCRIPT = (
    "cd /work/agent && echo '# tweaked by the crashing optimizer' >> solver/core.py && "
    "git add solver/core.py && git -c user.name=o -c user.email=o@o commit -qm tweak && "
    "vero harbor eval --split train --commit HEAD --num-samples 6"
)


class OptimizerCrashed(Exception):
    pass


class CrashingOptimizer(BaseAgent):
    @staticmethod
    def name():
        return "crashing-optimizer"

    def version(self):
        return "1.0"

    async def setup(self, environment):
        return None

    async def run(self, instruction, environment, context):
        result = await environment.exec(SCRIPT)
        (self.logs_dir / "eval.txt").write_text((result.stdout or "") + (result.stderr or ""))
        raise OptimizerCrashed("the optimizer died after one evaluation")
"""


def test_the_rescue_archive_lands_when_the_agent_phase_dies(tmp_path: Path) -> None:
    """The verifier never runs after this exception; the collect hook and the artifact still leave
    the session, with the evaluation made before the failure, in the trial dir."""
    require_base_image()
    reap_stale_projects(TRIAL_PREFIX)
    task = tmp_path / f"{TRIAL_PREFIX}{uuid.uuid4().hex[:10]}"
    build_task(FOO / "build.yaml", task, RUNTIME_PEX, {})
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "crashing_optimizer.py").write_text(CRASHING_OPTIMIZER)
    jobs = tmp_path / "jobs"
    job = f"vero-e2e-{uuid.uuid4().hex[:10]}"
    env = {**os.environ, "HARBOR_TELEMETRY": "0", "PYTHONPATH": str(agents)}
    try:
        argv = [str(harbor_bin()), "run", "-p", str(task), "-a", "crashing_optimizer:CrashingOptimizer", "-e",
                "docker", "-y", "-q", "-o", str(jobs), "--job-name", job]
        run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, check=False)
        [trial] = [p.parent for p in (jobs / job).glob("*/result.json")]
        result = json.loads((trial / "result.json").read_text())
        assert result["exception_info"]["exception_type"] == "OptimizerCrashed", run.stdout[-3000:]
        assert result["verifier_result"] is None and not (trial / "verifier/reward.json").exists()
        eval_log = (trial / "agent/eval.txt").read_text()
        commit = oracle_commit(eval_log)
        # The rescue archive: every evaluation made before the failure, no finalize.
        rescue = load_session(trial / "artifacts/session-rescue.tar.gz")
        assert rescue.finalize is None
        assert [(e.asked_by, e.record.split, e.record.commit, e.record.status) for e in rescue.evaluations] == [
            ("optimizer", "train", commit, "done")]
        assert len(rescue.evaluations[0].results) == 6
        report = trial_report(trial)
        assert report.exception is not None and report.exception.startswith("OptimizerCrashed: the optimizer died")
        assert report.session is not None and report.session.kind == "rescue"
        out = recover_files(rescue, commit, tmp_path / "recovered")
        assert (out.path / "solver/core.py").read_text().endswith("# tweaked by the crashing optimizer\n")
    finally:
        for trial_dir in (jobs / job).glob("*/"):
            remove_project(f"{trial_dir.name.lower()}__env")


FORGER = """#!/usr/bin/env bash
# A dishonest optimizer: no improvement, but a process that outlives the agent phase and keeps
# writing a perfect reward where Harbor's verifier will look for it.
nohup setsid bash -c 'while true; do
  echo "{\\"accuracy\\": 0.999}" > /logs/verifier/.forged 2>/dev/null &&
    mv -f /logs/verifier/.forged /logs/verifier/reward.json 2>/dev/null
  echo 0.999 > /logs/verifier/reward.txt 2>/dev/null
  sleep 0.02
done' >/dev/null 2>&1 &
sleep 1
"""


def test_an_optimizer_process_left_running_cannot_forge_the_reward(tmp_path: Path) -> None:
    require_base_image()
    reap_stale_projects(TRIAL_PREFIX)
    bench = tmp_path / "foo"
    shutil.copytree(FOO, bench)
    (bench / "solution" / "solve.sh").write_text(FORGER)
    task = tmp_path / f"{TRIAL_PREFIX}{uuid.uuid4().hex[:10]}"
    build_task(bench / "build.yaml", task, RUNTIME_PEX, {})
    trial = _harbor_oracle_trial(task, tmp_path)
    reward = json.loads((trial / "verifier/reward.json").read_text())
    # Nothing was submitted or evaluated: finalize scores nothing (or the baseline), never 0.999.
    assert reward["accuracy"] < 0.999, reward
    assert reward == json.loads((trial / "verifier/finalize.json").read_text())["rewards"]
    assert not (trial / "verifier/reward.txt").exists()


# --- trust boundary on a live compose project ---------------------------------------------------------

SECRET_NAME = "VERO_E2E_SECRET"
PROBE_SOLVER = '''
PATHS = ["/opt/vero/sidecar/dataset/test.jsonl", "/opt/vero/sidecar/scorer/scorer.py",
         "/opt/vero/sidecar/serve.json", "/var/lib/vero/token/admin-token", "/var/lib/vero/admin/ledger.json"]


def solve(row):
    seen = []
    for path in PATHS:
        try:
            with open(path, "rb") as handle:
                handle.read(1)
            seen.append("READ " + path)
        except OSError as exc:
            seen.append(type(exc).__name__)
    import os
    seen.append("uid=%d" % os.getuid())
    return ";".join(seen)
'''


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str]]:
    """tasks/foo plus a declared secret, compiled and brought up as Harbor would (its base file first)."""
    require_base_image()
    harbor_bin()
    root = tmp_path_factory.mktemp("live")
    bench = root / "foo"
    shutil.copytree(FOO, bench)
    config = yaml.safe_load((bench / "build.yaml").read_text())
    config["secrets"] = [SECRET_NAME]
    (bench / "build.yaml").write_text(yaml.safe_dump(config))
    secret = f"s3cret-{uuid.uuid4().hex}"
    task = root / "task"
    build_task(bench / "build.yaml", task, RUNTIME_PEX, {SECRET_NAME: secret})
    reap_stale_projects(LIVE_PREFIX)
    project = f"{LIVE_PREFIX}{uuid.uuid4().hex[:10]}"
    env = {SECRET_NAME: secret}
    try:
        compose(task, project, "build", env=env, timeout=900)
        up = compose(task, project, "up", "--detach", "--wait", env=env, check=False, timeout=600)
        assert up.returncode == 0, up.stdout + up.stderr + compose(task, project, "logs", env=env).stdout
        yield task, project, secret
    finally:
        compose(task, project, "down", "--volumes", "--rmi", "local", "--remove-orphans", env=env,
                check=False)
        remove_project(project)


def _exec(live: tuple[Path, str, str], service: str, command: str, user: str = "root",
          check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    task, project, secret = live
    flags = [arg for key, value in (env or {}).items() for arg in ("-e", f"{key}={value}")]
    result = compose(task, project, "exec", "-T", "-u", user, *flags, service, "bash", "-c", command,
                     env={SECRET_NAME: secret}, check=False, timeout=300)
    if check:
        assert result.returncode == 0, f"{command!r} as {user} in {service}: {result.stdout}{result.stderr}"
    return result


def _container(live: tuple[Path, str, str], service: str) -> dict[str, Any]:
    task, project, secret = live
    cid = compose(task, project, "ps", "-q", service, env={SECRET_NAME: secret}).stdout.strip()
    inspect = subprocess.run(["docker", "inspect", cid], capture_output=True, text=True, check=True)
    inspected: list[dict[str, Any]] = json.loads(inspect.stdout)
    return inspected[0]


def test_rule1_secrets_reach_the_sidecar_only(live: tuple[Path, str, str]) -> None:
    _, _, secret = live
    main_env = _exec(live, "main", "cat /proc/1/environ | tr '\\0' '\\n'; env").stdout
    assert secret not in main_env and SECRET_NAME not in main_env
    assert secret not in json.dumps(_container(live, "main")["Config"])
    assert f"{SECRET_NAME}={secret}" in _container(live, "eval-sidecar")["Config"]["Env"]
    assert _exec(live, "main", "grep -rl -- \"$0\" /opt /work /etc 2>/dev/null | head -1 || true".replace(
        "$0", secret)).stdout == ""


def test_rule2_token_unreadable_by_agent_readable_by_root(live: tuple[Path, str, str]) -> None:
    stat = _exec(live, "main", f"stat -c '%U %a' {TOKEN}").stdout.strip()
    assert stat == "root 600"
    denied = _exec(live, "main", f"cat {TOKEN}", user="agent", check=False)
    assert denied.returncode != 0 and "Permission denied" in denied.stdout + denied.stderr
    assert len(_exec(live, "main", f"cat {TOKEN}").stdout.strip()) >= 32
    writable = _exec(live, "main", f"echo x > {TOKEN}", check=False)
    assert writable.returncode != 0 and "Read-only file system" in writable.stdout + writable.stderr
    # The verifier (root) can use it: finalize answers and writes a reward file.
    _exec(live, "main", f"vero harbor finalize --token-file {TOKEN} --output /tmp/reward.json "
          "--reward-key accuracy")
    assert "accuracy" in json.loads(_exec(live, "main", "cat /tmp/reward.json").stdout)


def test_rule3_admin_volume_never_in_main(live: tuple[Path, str, str]) -> None:
    mounts = {m["Destination"]: m for m in _container(live, "main")["Mounts"]}
    assert sorted(mounts) == ["/var/lib/vero/token", "/work", "/work/results"]
    assert not mounts["/var/lib/vero/token"]["RW"] and not mounts["/work/results"]["RW"]
    assert not any(m.get("Name", "").endswith("_admin") for m in mounts.values())
    side = {m["Destination"]: m for m in _container(live, "eval-sidecar")["Mounts"]}
    assert side["/var/lib/vero/admin"]["Name"].endswith("_admin")
    assert _exec(live, "main", "test -e /var/lib/vero/admin", check=False).returncode != 0


def test_runtime_runs_for_every_user(live: tuple[Path, str, str]) -> None:
    """The PEX is unpacked at image build time: no user needs a writable PEX cache."""
    for service, user in (("main", "agent"), ("main", "root"), ("eval-sidecar", "harness"),
                          ("eval-sidecar", "root")):
        result = _exec(live, service, "vero --version 2>&1", user=user)
        assert result.stdout.strip() == "vero 0.1.0", (service, user, result.stdout)


def test_rule4_labels_scorer_config_root_only(live: tuple[Path, str, str]) -> None:
    # No byte of the held-out labels, the scorer or serve.json anywhere in main's file system.
    needles = {"LABELS": (FOO / "data/test.jsonl").read_text().splitlines()[0],
               "SCORER": (FOO / "scorer/scorer.py").read_text().splitlines()[0],
               "SERVE": '"selection_split": "validation"'}
    found = _exec(live, "main", 'grep -rlF -e "$LABELS" -e "$SCORER" -e "$SERVE" / --exclude-dir=proc '
                  "--exclude-dir=sys --exclude-dir=dev 2>/dev/null; "
                  "test -e /opt/vero/sidecar && echo SIDECAR_DIR", check=False, env=needles)
    assert found.stdout.strip() == "", found.stdout
    for path in ("/opt/vero/sidecar/dataset/test.jsonl", "/opt/vero/sidecar/scorer/scorer.py",
                 "/opt/vero/sidecar/serve.json"):
        assert _exec(live, "eval-sidecar", f"head -c1 {path}").stdout  # root: readable
        denied = _exec(live, "eval-sidecar", f"head -c1 {path}", user="harness", check=False)
        assert denied.returncode != 0 and "Permission denied" in denied.stdout + denied.stderr
    # Candidate code itself: a commit whose solver tries to read them, evaluated on a viewable split.
    solver = PROBE_SOLVER.replace("'", "'\\''")
    _exec(live, "main", f"cd /work/agent && printf '%s' '{solver}' > solver/core.py && "
          "git add solver/core.py && git -c user.name=t -c user.email=t@t commit -qm probe", user="agent")
    out = _exec(live, "main", "vero harbor eval --split train --commit HEAD --num-samples 1", user="agent")
    assert json.loads(out.stdout)["aggregate"]["n_samples"] == 1
    text = _exec(live, "main", "cat /work/results/train/samples/*.json", user="agent").stdout
    assert "READ " not in text and text.count("PermissionError") == 5, text
    assert "uid=0;" not in text and "uid=" in text, text
    readonly = _exec(live, "main", "touch /work/results/x", user="agent", check=False)
    assert readonly.returncode != 0


def test_rule5_hostile_refs_are_rejected(live: tuple[Path, str, str]) -> None:
    for ref in ("--upload-pack=touch /tmp/pwned", "-c", "HEAD;touch /tmp/pwned", "$(touch /tmp/pwned)",
                "main:../../etc", "refs/../../x", "a b"):
        quoted = ref.replace("'", "'\\''")
        result = _exec(live, "main", f"vero harbor eval --split train --commit '{quoted}'", user="agent",
                       check=False)
        assert result.returncode != 0, ref
        output = result.stdout + result.stderr
        assert "error" in output, output
    for service in ("main", "eval-sidecar"):
        assert _exec(live, service, "test -e /tmp/pwned", check=False).returncode != 0


def test_rule6_seeded_repo_and_read_only_paths(live: tuple[Path, str, str]) -> None:
    task, _, _ = live
    expected = json.loads((task / "environment/agent-seed/BASELINE.json").read_text())["commit"]
    root_commit = _exec(live, "main", "cd /work/agent && git rev-list --max-parents=0 HEAD", user="agent")
    assert root_commit.stdout.strip() == expected
    assert _exec(live, "main", "stat -c '%U %a' /work/agent/README.md").stdout.strip() == "root 444"
    denied = _exec(live, "main", "echo x >> /work/agent/README.md", user="agent", check=False)
    assert denied.returncode != 0
    labels = _container(live, "main")["Config"]["Labels"]
    assert labels["io.vero.task"] == "vero/foo"
