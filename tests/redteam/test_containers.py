"""Attacks on the container boundary: tasks/foo compiled and brought up as Harbor does
(testcontainers, Harbor's own base file first), the optimizer acting as the `agent` user in
`main`, its candidates running in `eval-sidecar`. Fork, memory and disk bombs run only here,
inside containers that carry the limits under test."""

from __future__ import annotations

import base64
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.benchmarks import FOO_DIR
from tests.support.stack import TaskStack, task_stack
from tests.support.tools import harbor_bin, require_base_image
from vero.compiler.compiler import build_task

RUNTIME_PEX = Path("src.python.vero/vero.pex").absolute()  # runtime_package_dependencies
FOO = Path("tasks/foo").absolute() if Path("tasks/foo/build.yaml").is_file() else FOO_DIR
PREFIX = "vero-redteam-"
TOKEN = "/var/lib/vero/token/admin-token"
LIMITS = {"main": {"memory_mb": 1024, "pids": 256},
          "sidecar": {"memory_mb": 1536, "pids": 768, "scratch_mb": 128},
          "candidate": {"processes": 96, "memory_mb": 1024},
          "repo": {"fetch_timeout": 15}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TaskStack]:
    """tasks/foo with tight limits and a large budget, compiled and running."""
    require_base_image()
    harbor_bin()
    root = tmp_path_factory.mktemp("redteam")
    bench = root / "foo"
    shutil.copytree(FOO, bench)
    config = yaml.safe_load((bench / "build.yaml").read_text())
    config["limits"] = LIMITS
    config["budgets"] = [{"split": "train", "total_run_budget": 200}, {"split": "validation", "total_run_budget": 5}]
    (bench / "build.yaml").write_text(yaml.safe_dump(config))
    task = root / "task"
    build_task(bench / "build.yaml", task, RUNTIME_PEX, {})
    running = task_stack(task, PREFIX)
    with running:
        yield running


def _as_agent(stack: TaskStack, command: str, check: bool = True, timeout: float = 300) -> Any:
    return stack.run("main", command, user="agent", check=check, timeout=timeout)


def _commit(stack: TaskStack, solver: str) -> None:
    encoded = base64.b64encode(solver.encode()).decode()
    _as_agent(stack, f"cd /work/agent && rm -f .git/packed-refs && git checkout -q -f main && "
              f"echo {encoded} | base64 -d > solver/core.py && git add solver/core.py && "
              "git -c user.name=o -c user.email=o@o commit -qm attack")


def _evaluate(stack: TaskStack, samples: int = 1, timeout: float = 300) -> dict[str, Any]:
    """Evaluate HEAD on `samples` train rows as the optimizer; the first sample's view."""
    out = _as_agent(stack, f"vero harbor eval --split train --commit HEAD --num-samples {samples}",
                    timeout=timeout)
    assert json.loads(out.stdout)["aggregate"]["n_samples"] == samples
    sample = _as_agent(stack, "cat /work/results/train/samples/$(ls /work/results/train/samples | head -1)")
    return json.loads(sample.stdout)  # type: ignore[no-any-return]


def _harness_processes(stack: TaskStack) -> list[str]:
    """Processes of the harness user in the sidecar, zombies included (a zombie holds a pid)."""
    return stack.run("eval-sidecar", "ps -u harness -o pid=,stat=,comm= || true").stdout.split("\n")[:-1]


def _healthy(stack: TaskStack) -> None:
    stack.run("eval-sidecar", "python3 -c \"import urllib.request; "
              "urllib.request.urlopen('http://127.0.0.1:8100/health', timeout=5).read()\"")


def _inspect(stack: TaskStack, service: str) -> dict[str, Any]:
    import subprocess
    out = subprocess.run(["docker", "inspect", stack.container_id(service)], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)[0]  # type: ignore[no-any-return]


def test_the_limits_of_build_yaml_reach_both_containers(stack: TaskStack) -> None:
    main, sidecar = _inspect(stack, "main")["HostConfig"], _inspect(stack, "eval-sidecar")["HostConfig"]
    assert (main["Memory"], main["PidsLimit"]) == (1024 << 20, 256)
    assert (sidecar["Memory"], sidecar["PidsLimit"]) == (1536 << 20, 768)
    assert sidecar["CapAdd"] == ["CAP_SYS_ADMIN"] and not main.get("CapAdd")
    assert set(sidecar["Tmpfs"]) == {"/var/lib/vero/work", "/tmp", "/var/tmp"}
    assert all("size=128m" in options for options in sidecar["Tmpfs"].values())


FORK_BOMB = """
import os, time
def solve(row):
    children = 0
    try:
        while children < 5000:
            if os.fork() == 0:
                time.sleep(300)
                os._exit(0)
            children += 1
    except OSError:
        pass
    return str(children)
"""


def test_a_candidate_fork_bomb_is_contained(stack: TaskStack) -> None:
    _commit(stack, FORK_BOMB)
    started = time.monotonic()
    sample = _evaluate(stack)
    assert time.monotonic() - started < 60
    assert sample["output"] is not None and int(sample["output"]) < 96  # RLIMIT_NPROC stopped it
    assert _harness_processes(stack) == []  # the pid namespace took every fork with it
    _healthy(stack)


DETACHING = """
import os, subprocess, sys, time
def solve(row):
    subprocess.Popen(["sleep", "300"], start_new_session=True)
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(300)
        os._exit(0)
    if row["id"].endswith("1"):
        time.sleep(300)  # killed at the sample timeout: its namespace's first process then has no parent left
    return "left"
"""


def test_nothing_a_candidate_detaches_survives_its_sample(stack: TaskStack) -> None:
    _commit(stack, DETACHING)
    assert _evaluate(stack, samples=3, timeout=120)["output"] == "left"
    # No process and no zombie: the timed-out sample's namespace init was reaped by the container's init.
    assert _harness_processes(stack) == []


LEAVING = """
import ctypes, os, subprocess, sys, time
def solve(row):
    os.setsid()
    ctypes.CDLL(None).prctl(1, 0)  # PR_SET_PDEATHSIG: none
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    time.sleep(300)
"""


def test_a_candidate_that_leaves_its_session_ends_at_the_sample_timeout(stack: TaskStack) -> None:
    """The sample's first process leaves its session and clears its parent-death signal, so
    neither a process-group kill nor its parent's death ends it: its trusted parent must."""
    _commit(stack, LEAVING)
    started = time.monotonic()
    sample = _evaluate(stack, timeout=120)
    assert "timed out" in sample["error"]
    assert time.monotonic() - started < 60
    time.sleep(0.5)
    assert _harness_processes(stack) == []


MEMORY_HOG = """
import os, time
def solve(row):
    pids = []
    for _ in range(70):
        pid = os.fork()
        if pid == 0:
            hog = bytearray(30 * 1024 * 1024)
            for i in range(0, len(hog), 4096):
                hog[i] = 1
            time.sleep(30)
            os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    return "survived"
"""


def _server_started(stack: TaskStack) -> str:
    """The start time of the sidecar's server process (changes if it was killed and restarted)."""
    pid = stack.run("eval-sidecar", "pgrep -o -f 'harbor serve'").stdout.strip()
    return stack.run("eval-sidecar", f"cut -d' ' -f22 /proc/{pid}/stat").stdout.strip()


def test_a_memory_hog_is_killed_not_the_sidecar(stack: TaskStack) -> None:
    """Seventy processes of 30 MiB, each smaller than the sidecar's server, against a 1.5 GiB
    container: the kernel's OOM killer kills the largest process unless told otherwise, so it must
    be told (`oom_score_adj` 1000 on candidates) to pick candidate processes, never the server."""
    _commit(stack, MEMORY_HOG)
    before = _server_started(stack)
    sample = _evaluate(stack, timeout=120)
    assert sample["output"] in (None, "survived")
    _healthy(stack)
    assert _server_started(stack) == before


DISK_FLOOD = """
import os
def solve(row):
    written = {}
    for where in (os.environ["HOME"], "/tmp", "/var/tmp", "/", "/var/lib/vero", "/run/lock", "/opt/vero"):
        total = 0
        try:
            with open(os.path.join(where, "flood"), "wb") as handle:
                chunk = b"x" * (1 << 20)
                while total < (1 << 30):
                    handle.write(chunk)
                    total += len(chunk)
        except OSError as exc:
            written[where] = (total >> 20, type(exc).__name__)
        else:
            written[where] = (total >> 20, "no limit")
    for where in (os.environ["HOME"], "/tmp", "/var/tmp"):  # room for the harness's reply
        try:
            os.remove(os.path.join(where, "flood"))
        except OSError:
            pass
    return written
"""


def test_a_disk_flood_fills_only_a_bounded_tmpfs(stack: TaskStack) -> None:
    _commit(stack, DISK_FLOOD)
    sample = _evaluate(stack, timeout=180)
    assert sample["error"] is None, sample
    written = sample["output"]
    for where in ("/", "/var/lib/vero", "/run/lock", "/opt/vero"):
        assert written[where] == [0, "PermissionError"], (where, written)
    for where in ("HOME", "/tmp", "/var/tmp"):
        key = next(k for k in written if k == where or (where == "HOME" and k.startswith("/var/lib/vero/work")))
        megabytes, error = written[key]
        assert error == "OSError" and megabytes <= 128, (where, written)
    _healthy(stack)
    usage = stack.run("eval-sidecar", "df -m --output=used /var/lib/vero/work | tail -1").stdout.strip()
    assert int(usage) < 16  # the sample's HOME went with it


def test_the_token_attack_end_to_end(stack: TaskStack) -> None:
    """Attack 1 as it was found: the agent links packed-refs to the token and submits."""
    token = stack.run("main", f"cat {TOKEN}").stdout.strip()
    _as_agent(stack, f"cd /work/agent && ln -sf {TOKEN} .git/packed-refs")
    out = _as_agent(stack, "vero harbor submit --commit 0", check=False)
    assert out.returncode != 0 and "error id E-" in out.stderr
    assert token not in out.stdout + out.stderr
    # Not even the admin's incident log has it: the fetcher (uid 1000) could not read the token.
    incidents = stack.run("eval-sidecar", "cat /var/lib/vero/admin/incidents.jsonl").stdout
    assert "packed-refs: Permission denied" in incidents and token not in incidents
    _as_agent(stack, "rm -f /work/agent/.git/packed-refs")


def test_a_fifo_does_not_wedge_the_sidecar(stack: TaskStack) -> None:
    """Attack 3 as it was found: a FIFO as packed-refs, then a submit; then the verifier's
    finalize (which must not wait on it) and later evaluations still work."""
    _commit(stack, "def solve(row):\n    return ''\n")
    _as_agent(stack, "cd /work/agent && rm -f .git/packed-refs && mkfifo .git/packed-refs")
    started = time.monotonic()
    out = _as_agent(stack, "vero harbor submit --commit main", check=False, timeout=120)
    assert out.returncode != 0 and "took longer than 15 s" in out.stderr, out.stderr
    assert time.monotonic() - started < 40
    _as_agent(stack, "rm -f /work/agent/.git/packed-refs")
    assert _evaluate(stack)["error"] is None


def test_an_optimizer_fork_bomb_stays_in_main(stack: TaskStack) -> None:
    """Last in this module: `main` is full of the bomb's processes until they are all killed."""
    # Read while `main` has room for a process: during the bomb even `cat` may find none.
    limit = stack.run("main", "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max").stdout
    assert int(limit) == 256
    _as_agent(stack, "timeout 10 bash -c 'bomb() { bomb | bomb & }; bomb' >/dev/null 2>&1; true", check=False,
              timeout=120)
    # As test.sh does before finalize: stop, then kill, every process of the optimizer until none is left.
    # The bomb's processes take every pid as it frees up, so that shell (or a `pkill` it forks) may
    # find none: go again until no process of the optimizer is left.
    for _ in range(30):
        stack.run("main", "for _ in $(seq 1 200); do pkill -STOP -u agent; pkill -KILL -u agent || break; sleep 0.1; "
                  "done", check=False, timeout=120)
        left = stack.run("main", "ps -u agent -o pid= | wc -l", check=False)
        if left.returncode == 0 and left.stdout.strip() == "0":
            break
        time.sleep(1)
    _healthy(stack)
    assert stack.run("main", "ps -u agent -o pid= | wc -l").stdout.strip() == "0"
