"""The Mode B strategy as the eval sidecar builds it (`build_strategy`): one jobs dir per
evaluation under the nested jobs root, the isolation handed to harbor, `stop()` on shutdown and
cleanup on close; and the sidecar's checks of the nested jobs dir and the Docker socket (real
directories and real unix sockets). Harbor here is tests/modeb/fake_harbor.py (a hang on demand);
the real nested run inside a sidecar is tests/compiler/test_e2e_modeb.py."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import vero
from tests.modeb.test_strategy_faults import BAR, FAKE, TASKS, Fake, dead, includes
from vero.container import CONTAINER
from vero.core.confine import Confinement, SandboxUser, unconfined
from vero.core.datasets import make_partition
from vero.core.limits import CandidateLimits
from vero.core.sample_store import SampleStore
from vero.core.strategy import EvaluationCancelled, EvaluationContext, Progress, StrategyEnv
from vero.errors import VeroError
from vero.modeb.config import HarborConfig
from vero.modeb.docker_access import check_socket_closed_to, docker_socket, nested_jobs_dir
from vero.modeb.isolation.spec import ISOLATED_AGENT, Isolation, IsolationSpec
from vero.modeb.strategy import HarborEvaluation, ModeBStrategy, build_strategy
from vero.serve.config import ModeBServe


def sidecar_strategy(fake: Fake, jobs_root: Path, **overrides: object) -> ModeBStrategy:
    config = HarborConfig(task_source="inner_tasks", agent="rule_agent.agent:RuleAgent", environment="fake",
                          harbor_command=[sys.executable, str(FAKE)], n_concurrent=2, **overrides)  # type: ignore[arg-type]
    env = {**os.environ, "FAKE_HARBOR_SCENARIO": str(fake.scenario_path)}
    return ModeBStrategy(config, {"test": TASKS}, base_dir=BAR, jobs_root=jobs_root, env=env,
                         clean_jobs_on_close=True, poll_interval=0.2)


def context(fake: Fake, commit: str, store: Path) -> EvaluationContext:
    return EvaluationContext(commit=commit, split="test", worktree=fake.worktree, sample_ids=TASKS,
                             store=SampleStore(store))


@pytest.fixture()
def isolation(tmp_path: Path) -> Iterator[Isolation]:
    made = Isolation(confinement=unconfined(), scratch_root=tmp_path / "work", forward_env=["MY_SECRET", "MY_SECRET"])
    yield made
    made.close()


def test_isolated_runs_give_harbor_the_wrapper_agent_and_only_vero_on_its_path(
        tmp_path: Path, isolation: Isolation) -> None:
    fake = Fake(tmp_path)
    fake.scenario(finish={"write-greeting": {"reward": 1.0}, "sum-numbers": {"reward": 0.0},
                          "reverse-lines": {"reward": 1.0}})
    strategy = sidecar_strategy(fake, tmp_path / "nested")
    strategy.isolation = isolation
    results = strategy.evaluate(context(fake, "a" * 40, tmp_path / "store")).samples
    assert [r.score for r in results] == [1.0, 0.0, 1.0]
    [call] = fake.invocations()
    argv = call["argv"]
    assert argv[argv.index("-a") + 1] == ISOLATED_AGENT
    # Harbor's path holds vero's package alone: not the candidate's worktree, not vero's venv.
    assert call["env"]["PYTHONPATH"] == str(isolation.shim)
    assert [p.name for p in isolation.shim.iterdir()] == ["vero"]
    assert (isolation.shim / "vero").resolve() == Path(vero.__file__).resolve().parent
    spec = IsolationSpec.model_validate_json(call["isolation"])
    assert spec.candidate == "rule_agent.agent:RuleAgent" and spec.worktree == str(fake.worktree.absolute())
    assert spec.forward_env == ["MY_SECRET"] and spec.user is None
    assert spec.scratch_root == str((tmp_path / "work").absolute())


def test_each_evaluation_gets_its_own_jobs_dir_and_close_removes_them(tmp_path: Path) -> None:
    fake = Fake(tmp_path)
    fake.scenario(finish={"write-greeting": {"reward": 1.0}, "sum-numbers": {"reward": 1.0},
                          "reverse-lines": {"reward": 1.0}})
    root = tmp_path / "nested"
    root.mkdir()
    (root / "not-ours").mkdir()
    strategy = sidecar_strategy(fake, root)
    strategy.evaluate(context(fake, "a" * 40, tmp_path / "store-a"))
    # Another commit finds clean trials of every task in the first evaluation's jobs: it must not
    # adopt them (they scored another commit), so harbor runs all of them again.
    strategy.evaluate(context(fake, "b" * 40, tmp_path / "store-b"))
    first, second = fake.invocations()
    everything = ["write-greeting", "sum-numbers", "reverse-lines"]
    assert includes(first["argv"]) == includes(second["argv"]) == everything
    ours = sorted(p.name for p in root.iterdir() if p.name != "not-ours")
    assert [name[:13] for name in ours] == ["a" * 12 + "-", "b" * 12 + "-"]
    assert Path(second["argv"][second["argv"].index("-o") + 1]).name == ours[1]
    strategy.close()
    assert [p.name for p in root.iterdir()] == ["not-ours"]


def test_concurrent_evaluations_each_get_the_report_of_their_own_run(tmp_path: Path) -> None:
    fake = Fake(tmp_path)
    fake.scenario(finish={"write-greeting": {"reward": 1.0}, "vero-examples/sum-numbers": {"reward": 1.0},
                          "reverse-lines": {"reward": 0.0}})
    strategy = sidecar_strategy(fake, tmp_path / "nested")
    # Both evaluations wait for each other before either runs harbor: they overlap for certain.
    both_started = threading.Barrier(2, timeout=30)
    wanted = {"a": ["write-greeting"], "b": ["vero-examples/sum-numbers", "reverse-lines"]}
    task_dirs = {"a": ["write-greeting"], "b": ["sum-numbers", "reverse-lines"]}   # what harbor's -i names
    evaluations: dict[str, HarborEvaluation] = {}
    errors: list[BaseException] = []

    def evaluate(name: str) -> None:
        waited: list[bool] = []

        def progress(_: Progress) -> None:
            if not waited:
                waited.append(True)
                both_started.wait()

        try:
            evaluations[name] = strategy.evaluate(EvaluationContext(
                commit=name * 40, split="test", worktree=fake.worktree, sample_ids=wanted[name],
                store=SampleStore(tmp_path / f"store-{name}"), progress=progress))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=evaluate, args=(name,)) for name in wanted]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    strategy.close()
    assert not errors and sorted(evaluations) == ["a", "b"]
    tasks_of_job = {call["argv"][call["argv"].index("--job-name") + 1]: includes(call["argv"])
                    for call in fake.invocations()}
    for name, evaluation in evaluations.items():
        report = evaluation.report
        assert report.job_name is not None and report.job_name.startswith(f"vero-test-{name * 12}-")
        assert tasks_of_job[report.job_name] == task_dirs[name]   # the job this evaluation ran, not the other's
        assert report.outcome is not None and report.outcome.exit_code == 0
        assert report.adopted == () and report.reaped == ()
        assert [r.sample_id for r in evaluation.samples] == wanted[name]
    assert evaluations["a"].report.job_name != evaluations["b"].report.job_name


def test_a_failed_nested_run_leaves_its_stderr_in_the_log_before_its_jobs_dir_goes(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake = Fake(tmp_path)
    fake.scenario(finish={"write-greeting": {"reward": 1.0}}, fault="crash")
    root = tmp_path / "nested"
    root.mkdir()
    strategy = sidecar_strategy(fake, root)
    with caplog.at_level("WARNING", logger="vero.modeb.strategy"):
        strategy.evaluate(context(fake, "a" * 40, tmp_path / "store"))
    strategy.close()
    assert list(root.iterdir()) == []   # the run record went with the jobs dir ...
    [message] = [r.getMessage() for r in caplog.records if "stderr ends with" in r.getMessage()]
    assert "exited with 1" in message   # ... and the log kept harbor's last words
    assert "RuntimeError: fake harbor crashed mid-run" in message


def test_stop_ends_a_running_evaluation_keeps_what_finished_and_refuses_new_ones(tmp_path: Path) -> None:
    fake = Fake(tmp_path)
    fake.scenario(finish={"write-greeting": {"reward": 1.0}}, fault="hang")
    strategy = sidecar_strategy(fake, tmp_path / "nested", kill_grace=2)
    store = tmp_path / "store"
    outcome: list[BaseException] = []

    def evaluate() -> None:
        try:
            strategy.evaluate(context(fake, "a" * 40, store))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=evaluate)
    thread.start()
    deadline = time.monotonic() + 30
    while not fake.child_pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    strategy.stop()   # what the sidecar's SIGTERM handler calls
    thread.join(timeout=30)
    assert not thread.is_alive()
    [error] = outcome
    assert isinstance(error, EvaluationCancelled) and "shutting down" in error.what
    assert dead(int(fake.child_pid_file.read_text()))
    saved = SampleStore(store)
    assert saved.done_ids(TASKS) == {"write-greeting"}
    with pytest.raises(EvaluationCancelled):
        strategy.evaluate(context(fake, "a" * 40, store))
    assert len(fake.invocations()) == 1
    strategy.close()
    assert list((tmp_path / "nested").iterdir()) == []


def test_the_nested_jobs_dir_must_be_a_mount_point(tmp_path: Path) -> None:
    default = nested_jobs_dir({}, tmp_path / "admin" / "harbor-jobs")
    assert default.is_dir() and default.stat().st_mode & 0o777 == 0o700
    with pytest.raises(VeroError, match="is not an absolute path"):
        nested_jobs_dir({CONTAINER.nested_jobs_env: "relative/dir"}, tmp_path)
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(VeroError, match="is not a mounted host directory"):
        nested_jobs_dir({CONTAINER.nested_jobs_env: str(plain)}, tmp_path)


def test_the_docker_socket_must_be_closed_to_the_harness_user(tmp_path: Path) -> None:
    path = tmp_path / "docker.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    try:
        path.chmod(0o660)
        info = path.stat()
        other = SandboxUser(name="harness", uid=info.st_uid + 12345, gid=info.st_gid + 12345)
        check_socket_closed_to(other, path)
        for user in (SandboxUser(name="harness", uid=info.st_uid, gid=other.gid),
                     SandboxUser(name="harness", uid=other.uid, gid=info.st_gid)):
            with pytest.raises(VeroError, match="could open the Docker socket"):
                check_socket_closed_to(user, path)
        path.chmod(0o666)
        with pytest.raises(VeroError, match="mode 666"):
            check_socket_closed_to(other, path)
    finally:
        server.close()
    with pytest.raises(VeroError, match="is not a socket"):
        check_socket_closed_to(other, Path(FAKE))
    with pytest.raises(VeroError, match="is not there"):
        check_socket_closed_to(other, tmp_path / "missing.sock")
    assert docker_socket({}) == Path("/var/run/docker.sock")
    assert docker_socket({"DOCKER_HOST": f"unix://{path}"}) == path
    with pytest.raises(VeroError, match="not a unix socket"):
        docker_socket({"DOCKER_HOST": "tcp://10.0.0.1:2375"})


def test_build_strategy_wires_the_sidecar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "docker.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    path.chmod(0o660)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    monkeypatch.delenv(CONTAINER.nested_jobs_env, raising=False)
    harbor = HarborConfig(task_source=str(BAR / "inner_tasks"), agent="rule_agent.agent:RuleAgent")
    partition = {"test": ["write-greeting"], "train": ["reverse-lines"]}
    section = ModeBServe(harbor=harbor, partition=partition)

    def env(confinement: Confinement, secret_env: dict[str, str]) -> StrategyEnv:
        return StrategyEnv(confinement=confinement, secret_env=secret_env, work_dir=tmp_path / "work",
                           admin_dir=tmp_path / "admin", max_concurrency=4, evaluation_timeout=321.0)

    info = path.stat()
    user = SandboxUser(name="harness", uid=info.st_uid + 1, gid=info.st_gid + 1)
    try:
        confinement = Confinement(user=user, limits=CandidateLimits(processes=99), namespaces=True)
        strategy = build_strategy(section, make_partition(partition), env(confinement, {"API_KEY": "k"}))
        assert strategy.jobs_root == tmp_path / "admin" / "harbor-jobs" and strategy.jobs_dir is None
        assert strategy.config.timeout == 321.0 and strategy.clean_jobs_on_close
        assert strategy.isolation is not None and strategy.isolation.forward_env == ["API_KEY"]
        assert strategy.isolation.scratch_root == tmp_path / "work"
        spec = strategy.isolation.spec("m:C", tmp_path)  # the candidate's process is confined alike
        assert spec.namespaces and spec.limits.processes == 99 and spec.uid == user.uid
        assert strategy.env is not None and strategy.env["API_KEY"] == "k"
        assert strategy.refs_for("train", ["reverse-lines"])[0].dir_name == "reverse-lines"
        strategy.close()
        assert not strategy.isolation.shim.exists()
        with pytest.raises(VeroError, match="could open the Docker socket"):
            owner = SandboxUser(name="harness", uid=info.st_uid, gid=info.st_gid + 1)
            build_strategy(section, make_partition(partition),
                           env(Confinement(user=owner, limits=CandidateLimits(), namespaces=True), {}))
        # Without a harness user (development outside a container) harbor imports the agent itself.
        assert build_strategy(section, make_partition(partition), env(unconfined(), {})).isolation is None
    finally:
        server.close()
