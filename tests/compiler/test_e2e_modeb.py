"""End to end, Mode B: tasks/bar compiled with the real runtime PEX and run by the real harbor CLI on
the local Docker engine. The eval sidecar (vero/harbor-sidecar:trixie) scores every candidate with
a NESTED `harbor run` of the inner tasks on the host engine (through the Docker socket, with a
same-path host jobs dir per outer trial), the candidate's agent isolated in a process of the
unprivileged harness user. The trust rules that can hold are checked against live containers, and a
hostile candidate agent probes the sidecar from inside the nested run.

Cost on a 2-core machine: the oracle run about 4 min (two image builds, eight nested trials), the
live project about 2 min more (cached builds, four nested trials).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.compose import compose, compose_config, reap_stale_projects, remove_project
from tests.support.tools import harbor_bin, require_base_image
from vero.compiler.compiler import build_task
from vero.session.locate import trial_report
from vero.session.reader import load_session
from vero.session.recover import recover_files

RUNTIME_PEX = Path("src.python.vero/vero.pex").absolute()  # runtime_package_dependencies
BAR = Path("tasks/bar").absolute()
MODE_B_IMAGE = "vero/harbor-sidecar:trixie"
INNER_TASKS = "/opt/vero/sidecar/inner_tasks"
TOKEN = "/var/lib/vero/token/admin-token"
TRIAL_PREFIX = "vero-e2e-bar-"
LIVE_PREFIX = "vero-e2e-barlive-"
SECRET_NAME = "VERO_E2E_MODEB_SECRET"


def require_mode_b_image() -> None:
    require_base_image()
    probe = subprocess.run(["docker", "image", "inspect", MODE_B_IMAGE], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"the Mode B sidecar image {MODE_B_IMAGE} is not available: run build-support/setup.sh")


def nested_projects() -> set[str]:
    """Compose projects a nested harbor started on the host engine: their project directory is
    an inner task inside an eval sidecar."""
    listed = subprocess.run(["docker", "ps", "-a", "--format",
                             '{{.Label "com.docker.compose.project"}}\t'
                             '{{.Label "com.docker.compose.project.working_dir"}}'],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    return {line.split("\t")[0] for line in listed if line.partition("\t")[2].startswith(INNER_TASKS)}


def remove_tree(path: Path) -> None:
    """Remove a host dir the nested runs wrote into (root-owned files; we are root in CI)."""
    shutil.rmtree(path, ignore_errors=True)


def test_the_compose_file_gives_each_outer_trial_a_same_path_jobs_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compose interpolates the base dir (default or VERO_NESTED_DIR) and the project name."""
    harbor_bin()
    task = tmp_path / "task"
    build_task(BAR / "build.yaml", task, RUNTIME_PEX, {})
    monkeypatch.delenv("VERO_NESTED_DIR", raising=False)
    for extra, base in (({}, "/tmp/vero-nested"), ({"VERO_NESTED_DIR": "/srv/nested"}, "/srv/nested")):
        model = compose_config(task, extra)
        side = model["services"]["eval-sidecar"]
        jobs = f"{base}/vero-config-check"  # the project name compose_config uses
        binds = {(v["source"], v["target"]) for v in side["volumes"] if v["type"] == "bind"}
        assert binds == {("/var/run/docker.sock", "/var/run/docker.sock"), (jobs, jobs)}
        assert side["environment"]["VERO_NESTED_JOBS_DIR"] == jobs
        assert side["stop_grace_period"] == "1m30s"
        assert all(v["type"] == "volume" for v in model["services"]["main"]["volumes"])
    assert "useradd --system --uid 61000 --gid 61000" in (task / "environment/sidecar/Dockerfile").read_text()


def test_oracle_run_scores_candidates_with_a_nested_harbor(tmp_path: Path) -> None:
    require_mode_b_image()
    reap_stale_projects(TRIAL_PREFIX)
    before = nested_projects()
    task = tmp_path / f"{TRIAL_PREFIX}{uuid.uuid4().hex[:10]}"
    build_task(BAR / "build.yaml", task, RUNTIME_PEX, {})
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
        result = json.loads((trial / "result.json").read_text())
        assert result["exception_info"] is None, result["exception_info"]
        # The oracle's improved agent passes both held-out test tasks, the baseline none.
        reward = json.loads((trial / "verifier/reward.json").read_text())
        assert reward == result["verifier_result"]["rewards"] == {"pass_rate": 1.0}
        baseline = json.loads((trial / "verifier/baseline.json").read_text())
        assert baseline == {"pass_rate": 0.0}
        assert reward["pass_rate"] > baseline["pass_rate"]
        # The optimizer's own evaluations went through the nested harbor too (train and validation).
        oracle_log = (trial / "agent/oracle.txt").read_text()
        assert oracle_log.count('"mean_score": 1.0') == 2, oracle_log
        # The session archives: `vero report` names the oracle's commit as the winner with its score,
        # recover gives the oracle's files; the rescue archive (before finalize) has its evaluations.
        [commit] = set(re.findall(r'"commit": "([0-9a-f]{40})"', oracle_log))
        report = trial_report(trial)
        assert report.session is not None and report.session.kind == "final"
        assert report.session.selection.candidate == commit and report.session.rewards == {"pass_rate": 1.0}
        assert report.session.baseline == {"pass_rate": 0.0}
        final = load_session(trial / "verifier/session.tar.gz")
        recovered = recover_files(final, commit, tmp_path / "recovered")
        skills = (recovered.path / "rule_agent/skills.py").read_text()
        assert skills.startswith((BAR / "agent/rule_agent/skills.py").read_text()) and 'name="sort-unique"' in skills
        scored = {r.sample_id for e in final.evaluations for r in e.results if r.ok}
        assert scored >= {"vero-examples/count-words", "sort-unique"}
        rescue = load_session(trial / "artifacts/session-rescue.tar.gz")
        assert rescue.finalize is None
        assert [(e.asked_by, e.record.split) for e in rescue.evaluations] == [
            ("optimizer", "train"), ("optimizer", "validation")]
        # Host footprint: this trial's nested jobs dir, emptied by the sidecar when it stopped.
        project = f"{trial.name.lower()}__env"
        assert [p.name for p in nested.iterdir()] == [project]
        assert list((nested / project).iterdir()) == []
        # The nested harbor tore down every inner trial's containers.
        assert nested_projects() - before == set()
    finally:
        for trial_dir in (jobs / job).glob("*/"):
            remove_project(f"{trial_dir.name.lower()}__env")
        for project in nested_projects() - before:
            remove_project(project)
        remove_tree(nested)


# --- trust rules and a hostile candidate on a live compose project ---------------------------------


@dataclass(frozen=True)
class Live:
    task: Path
    project: str
    secret: str
    nested: Path

    @property
    def env(self) -> dict[str, str]:
        return {SECRET_NAME: self.secret, "VERO_NESTED_DIR": str(self.nested)}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """tasks/bar plus a declared secret, compiled and brought up as Harbor would (its base file first)."""
    require_mode_b_image()
    harbor_bin()
    root = tmp_path_factory.mktemp("live")
    bench = root / "bar"
    shutil.copytree(BAR, bench)
    config = yaml.safe_load((bench / "build.yaml").read_text())
    config["secrets"] = [SECRET_NAME]
    (bench / "build.yaml").write_text(yaml.safe_dump(config))
    secret = f"s3cret-{uuid.uuid4().hex}"
    task = root / "task"
    build_task(bench / "build.yaml", task, RUNTIME_PEX, {SECRET_NAME: secret})
    reap_stale_projects(LIVE_PREFIX)
    before = nested_projects()
    state = Live(task=task, project=f"{LIVE_PREFIX}{uuid.uuid4().hex[:10]}", secret=secret,
                 nested=root / "nested")
    try:
        compose(task, state.project, "build", env=state.env, timeout=900)
        up = compose(task, state.project, "up", "--detach", "--wait", env=state.env, check=False, timeout=600)
        logs = compose(task, state.project, "logs", env=state.env, check=False).stdout
        assert up.returncode == 0, up.stdout + up.stderr + logs
        yield state
    finally:
        compose(task, state.project, "down", "--volumes", "--rmi", "local", "--remove-orphans", env=state.env,
                check=False, timeout=300)
        remove_project(state.project)
        for project in nested_projects() - before:
            remove_project(project)
        remove_tree(state.nested)


def _exec(live: Live, service: str, command: str, user: str = "root",
          check: bool = True) -> subprocess.CompletedProcess[str]:
    result = compose(live.task, live.project, "exec", "-T", "-u", user, service, "bash", "-c", command,
                     env=live.env, check=False, timeout=600)
    if check:
        assert result.returncode == 0, f"{command!r} as {user} in {service}: {result.stdout}{result.stderr}"
    return result


def _container(live: Live, service: str) -> dict[str, Any]:
    cid = compose(live.task, live.project, "ps", "-q", service, env=live.env).stdout.strip()
    inspect = subprocess.run(["docker", "inspect", cid], capture_output=True, text=True, check=True)
    inspected: list[dict[str, Any]] = json.loads(inspect.stdout)
    return inspected[0]


def _evaluate(live: Live, split: str) -> tuple[dict[str, Any], dict[str, float | None]]:
    out = _exec(live, "main", f"cd /work/agent && vero harbor eval --split {split} --commit HEAD",
                user="agent")
    summary = json.loads(out.stdout)
    samples = _exec(live, "main", f"cat /work/results/{split}/samples/*.json", user="agent").stdout
    decoder = json.JSONDecoder()
    scores: dict[str, float | None] = {}
    text = samples.strip()
    while text:
        sample, end = decoder.raw_decode(text)
        assert sample["error"] is None, sample
        scores[sample["sample_id"]] = sample["score"]
        text = text[end:].strip()
    return summary, scores


def test_main_gets_no_socket_no_nested_jobs_and_no_secret(live: Live) -> None:
    mounts = {m["Destination"]: m for m in _container(live, "main")["Mounts"]}
    assert sorted(mounts) == ["/var/lib/vero/token", "/work", "/work/results"]
    assert _exec(live, "main", "test -e /var/run/docker.sock", check=False).returncode != 0
    main_env = _exec(live, "main", "cat /proc/1/environ | tr '\\0' '\\n'; env").stdout
    assert live.secret not in main_env and SECRET_NAME not in main_env
    side = _container(live, "eval-sidecar")
    side_mounts = {m["Destination"]: m for m in side["Mounts"]}
    jobs_dir = str(live.nested / live.project)
    assert side_mounts["/var/run/docker.sock"]["Source"] == "/var/run/docker.sock"
    assert side_mounts[jobs_dir]["Source"] == jobs_dir and side_mounts[jobs_dir]["Type"] == "bind"
    assert f"VERO_NESTED_JOBS_DIR={jobs_dir}" in side["Config"]["Env"]
    assert f"{SECRET_NAME}={live.secret}" in side["Config"]["Env"]


def test_main_cannot_read_the_token_or_the_inner_tasks(live: Live) -> None:
    denied = _exec(live, "main", f"cat {TOKEN}", user="agent", check=False)
    assert denied.returncode != 0 and "Permission denied" in denied.stdout + denied.stderr
    needle = (BAR / "inner_tasks/count-words/tests/test.sh").read_text().splitlines()[1]
    found = _exec(live, "main", f"grep -rlF -e {json.dumps(needle)} / --exclude-dir=proc --exclude-dir=sys "
                  "--exclude-dir=dev 2>/dev/null; test -e /opt/vero/sidecar && echo SIDECAR_DIR", check=False)
    assert found.stdout.strip() == "", found.stdout


def test_the_harness_user_cannot_use_the_socket_or_read_the_tasks(live: Live) -> None:
    probe = ("import socket; s = socket.socket(socket.AF_UNIX)\n"
             "try:\n    s.connect('/var/run/docker.sock'); print('CONNECTED')\n"
             "except OSError as exc:\n    print(type(exc).__name__)")
    out = _exec(live, "eval-sidecar", f"python3 -c {shlex.quote(probe)}", user="harness")
    assert out.stdout.strip() == "PermissionError"
    assert _exec(live, "eval-sidecar", f"python3 -c {shlex.quote(probe)}").stdout.strip() == "CONNECTED"
    for path in (f"{INNER_TASKS}/count-words/tests/test.sh", "/opt/vero/sidecar/serve.json",
                 str(live.nested / live.project)):
        denied = _exec(live, "eval-sidecar", f"ls {path}", user="harness", check=False)
        assert denied.returncode != 0 and "Permission denied" in denied.stdout + denied.stderr, path
    assert _exec(live, "eval-sidecar", "id -u harness").stdout.strip() == "61000"


def test_the_baseline_scores_as_before_through_the_isolated_agent(live: Live) -> None:
    summary, scores = _evaluate(live, "train")
    assert summary["free_baseline"] and summary["aggregate"]["mean_score"] == 0.5
    assert scores == {"write-greeting": 1.0, "vero-examples/sum-numbers": 0.0}
    # Harbor ran vero's wrapper; the trial still reports the candidate's agent, its logs and context.
    [greeting] = [p.parent for p in (live.nested / live.project).glob("*/*/write-greeting__*/result.json")]
    result = json.loads((greeting / "result.json").read_text())
    assert result["config"]["agent"]["name"] == "vero.modeb.isolation.agent_shim:IsolatedAgent"
    assert result["agent_info"]["name"] == "rule-agent" and result["agent_info"]["version"] == "1.0.0"
    assert result["agent_result"]["metadata"] == {"skill": "write-file", "n_commands": 1}
    assert json.loads((greeting / "agent/rule-agent.json").read_text())["skill"] == "write-file"


HOSTILE_AGENT = '''
"""A hostile candidate: it probes the eval sidecar from inside its agent and solves nothing."""

import json
import os
import shlex
import socket
import time
from pathlib import Path

from harbor.agents.base import BaseAgent

TASKS = "/opt/vero/sidecar/inner_tasks"


def attempt(action):
    try:
        return "ALLOWED " + str(action())[:200]
    except Exception as exc:
        return "denied " + type(exc).__name__


async def attempt_async(awaitable):
    try:
        return "ALLOWED " + str(await awaitable)[:200]
    except Exception as exc:
        return "denied " + type(exc).__name__


def harbor_run():
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = [a.decode() for a in (entry / "cmdline").read_bytes().split(b"\\0")]
        except OSError:
            continue
        if "--job-name" in argv and "-o" in argv:
            return int(entry.name), argv[argv.index("-o") + 1], argv[argv.index("--job-name") + 1]
    return None


def connect():
    client = socket.socket(socket.AF_UNIX)
    client.connect("/var/run/docker.sock")
    return "connected"


class RuleAgent(BaseAgent):
    @staticmethod
    def name():
        return "rule-agent"

    def version(self):
        return "6.6.6"

    async def setup(self, environment):
        return None

    async def run(self, instruction, environment, context):
        probes = {"uid": os.getuid(), "docker_socket": attempt(connect),
                  "inner_tests": attempt(lambda: open(TASKS + "/count-words/tests/test.sh").read()),
                  "list_tasks": attempt(lambda: os.listdir(TASKS)),
                  "serve_json": attempt(lambda: open("/opt/vero/sidecar/serve.json").read()),
                  "token": attempt(lambda: open("/var/lib/vero/token/admin-token").read()),
                  "ledger": attempt(lambda: open("/var/lib/vero/admin/ledger.json").read())}
        found = harbor_run()
        probes["harbor_found"] = found is not None
        if found is not None:
            pid, jobs, job = found
            probes["harbor_environ"] = attempt(lambda: open(f"/proc/{pid}/environ", "rb").read())
            probes["harbor_mem"] = attempt(lambda: open(f"/proc/{pid}/mem", "rb").read(1))
            probes["signal_harbor"] = attempt(lambda: os.kill(pid, 0))
            probes["list_jobs"] = attempt(lambda: os.listdir(jobs))
            probes["forge_result"] = attempt(lambda: Path(jobs, job, "forged.json").write_text("{}"))
            probes["download_into_jobs"] = await attempt_async(
                environment.download_file("/etc/hostname", os.path.join(jobs, job, "pwned")))
        probes["upload_serve_json"] = await attempt_async(
            environment.upload_file("/opt/vero/sidecar/serve.json", "/tmp/stolen.json"))
        probes["upload_task_dir"] = await attempt_async(environment.upload_dir(TASKS, "/tmp/stolen"))
        probes["download_into_admin"] = await attempt_async(
            environment.download_file("/etc/hostname", "/var/lib/vero/admin/pwned"))
        # `/x/..` once named the parent of the relay's private dir: harbor's /tmp came back whole.
        probes["download_parent"] = await attempt_async(
            environment.download_file("/etc/..", os.path.join(os.environ["HOME"], "parent")))
        forged = shlex.quote(json.dumps({"reward": 1.0}))
        planted = await environment.exec(
            f"mkdir -p /logs/verifier && echo {forged} > /logs/verifier/reward.json && echo planted")
        probes["plant_reward"] = (planted.stdout or "").strip()
        # A process left running in the task container, forging the reward while the verifier runs.
        loop = (f"while true; do echo {forged} > /logs/verifier/.f && "
                "mv -f /logs/verifier/.f /logs/verifier/reward.json; sleep 0.02; done")
        started = await environment.exec(
            f"nohup setsid bash -c {shlex.quote(loop)} >/dev/null 2>&1 & echo started")
        probes["background_forger"] = (started.stdout or "").strip()
        # And one left running in the sidecar, as the harness user, detached from its session, with
        # as many helpers as it may fork (its process limit stops it; its pid namespace ends them).
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(600)
            os._exit(0)
        forks = 0
        try:
            while forks < 5000:
                if os.fork() == 0:
                    time.sleep(600)
                    os._exit(0)
                forks += 1
        except OSError:
            pass
        (self.logs_dir / "forks.txt").write_text(str(forks))
        (self.logs_dir / "probe.json").write_text(json.dumps(probes))
        context.metadata = {"probes": len(probes)}
'''


def test_a_hostile_candidate_is_contained(live: Live) -> None:
    encoded = base64.b64encode(HOSTILE_AGENT.encode()).decode()
    _exec(live, "main", f"cd /work/agent && echo {encoded} | base64 -d > rule_agent/agent.py && "
          "git add rule_agent/agent.py && git -c user.name=t -c user.email=t@t commit -qm hostile",
          user="agent")
    summary, scores = _evaluate(live, "train")
    assert not summary["free_baseline"]
    # Nothing forged a reward: the hostile agent solved nothing and scores nothing.
    assert scores == {"write-greeting": 0.0, "vero-examples/sum-numbers": 0.0}
    probes = [json.loads(p.read_text()) for p in (live.nested / live.project).glob("*/*/*/agent/probe.json")]
    assert len(probes) == 2
    for probe in probes:
        assert probe.pop("uid") == 61000 and probe.pop("harbor_found") is True
        assert probe.pop("plant_reward") == "planted"   # inside its own task container: allowed, and useless
        assert probe.pop("background_forger") == "started"  # killed before the verifier runs
        allowed = {name: value for name, value in probe.items() if not value.startswith("denied")}
        assert allowed == {}, allowed
        assert len(probe) == 16, probe
    for forks in (live.nested / live.project).glob("*/*/*/agent/forks.txt"):
        assert int(forks.read_text()) < 512  # RLIMIT_NPROC of the candidate's user
    leftovers = [p for p in live.nested.rglob("*") if p.name in ("pwned", "forged.json")]
    assert leftovers == []
    # What the candidate detached in the sidecar did not outlive the evaluation.
    strays = _exec(live, "eval-sidecar", "ps -u 61000 -o pid=,args= || true").stdout.strip()
    assert strays == "", strays
