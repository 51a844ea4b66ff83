"""The candidate spawner: each sample forked from one server and confined before its first line
(pid namespace, rlimits, harness user, no capability in any set, no_new_privs, only its stdio),
ended by its keeper at the timeout even when it leaves its session and clears its parent-death
signal, and never handed anything of the sidecar's own environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.mode_a import is_root, shared_tmp
from tests.support.processes import pids_naming
from vero.core.confine import SAFE_PATH, Confinement, resolve_user, unconfined
from vero.core.limits import CandidateLimits
from vero.core.sandbox import RunResult
from vero.core.spawner import Spawner, SpawnerStopped, harness_job

needs_root = pytest.mark.skipif(not is_root(), reason="namespaces and a user change need root (CI runs as root)")
MARKER = "vero-test-spawner-left-behind"
HELD = "vero-test-spawner-held"
# A sidecar in miniature: one sample that holds on, in a process the test kills with SIGKILL.
SIDECAR = """
import sys
from pathlib import Path
from vero.core.confine import Confinement, resolve_user
from vero.core.limits import CandidateLimits
from vero.core.spawner import Spawner, harness_job
work = Path(sys.argv[1])
spawner = Spawner(Confinement(user=resolve_user("nobody"), limits=CandidateLimits(), namespaces=True))
spawner.run(harness_job("agent:hold", [str(work)], work / "home" / "reply.json"), cwd=work,
            env={"PATH": "/usr/bin:/bin"}, stdin_data=b"{}", timeout=300)
"""

CANDIDATE = f'''
import ctypes, json, os, subprocess, sys, time

def report(row):
    print("printed by the candidate")
    sys.stderr.write("to stderr\\n")
    status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
    return {{"row": row, "argv": sys.argv, "environ": dict(os.environ),
             "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
             "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "pid": os.getpid(),
             "caps": {{k: v for k, v in status.items() if k.startswith("Cap")}}, "no_new_privs": status["NoNewPrivs"],
             "limits": open("/proc/self/limits").read(), "nice": os.nice(0),
             "oom": open("/proc/self/oom_score_adj").read().strip(), "cwd": os.getcwd()}}

def leave(row):
    os.setsid()
    ctypes.CDLL(None).prctl(1, 0)  # PR_SET_PDEATHSIG: none
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "{MARKER}"])
    time.sleep(300)

def sleep(row):
    time.sleep(300)

def hold(row):
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "{HELD}"])
    time.sleep(300)

def chatty(row):
    sys.stdout.write("x" * 5_000_000 + "END")
    return len(row["blob"])
'''


@pytest.fixture
def work() -> Iterator[Path]:
    with shared_tmp() as root:
        (root / "agent.py").write_text(CANDIDATE)
        home = root / "home"
        home.mkdir(mode=0o777)
        home.chmod(0o777)
        yield root


def _run(spawner: Spawner, work: Path, entrypoint: str, row: object = None,
         timeout: float = 30) -> tuple[RunResult, dict[str, Any] | None]:
    reply = work / "home" / "reply.json"
    reply.unlink(missing_ok=True)
    result = spawner.run(harness_job(f"agent:{entrypoint}", [str(work)], reply), cwd=work,
                         env={"PATH": "/usr/bin:/bin", "ONLY": "this"},
                         stdin_data=json.dumps(row if row is not None else {"id": "r1"}).encode(), timeout=timeout)
    return result, json.loads(reply.read_text()) if reply.exists() else None




def test_a_sample_gets_its_row_its_environment_and_its_stdio_only(work: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VERO_SIDECAR_SECRET", "sidecar-only-value")
    spawner = Spawner(unconfined())
    try:
        result, reply = _run(spawner, work, "report")
        # What every candidate inherits as memory: the server's start, with nothing of the sidecar's.
        assert spawner._server is not None
        server_environ = Path(f"/proc/{spawner._server.pid}/environ").read_bytes()
    finally:
        spawner.close()
    assert sorted(server_environ.split(b"\0")[:-1]) == [b"LANG=C.UTF-8", b"PATH=" + SAFE_PATH.encode()]
    assert result.returncode == 0 and not result.timed_out, result.stderr_tail
    assert result.stdout_tail == "printed by the candidate\n" and result.stderr_tail == "to stderr\n"
    assert reply is not None and reply["ok"], reply
    output = reply["output"]
    assert output["row"] == {"id": "r1"} and output["argv"] == ["-c"] and output["cwd"] == str(work)
    assert output["environ"] == {"PATH": "/usr/bin:/bin", "ONLY": "this"}
    assert output["fds"] == [0, 1, 2, 3]  # 3: the listing's own


@needs_root
def test_the_candidate_is_confined_before_its_first_line(work: Path) -> None:
    # The server's interpreter starts with an inheritable capability: the candidate must not keep it.
    python = work / "python"
    python.write_text('#!/bin/sh\nexec setpriv --inh-caps=+net_raw python3 "$@"\n')
    python.chmod(0o755)
    limits = CandidateLimits(processes=77, open_files=99, cpu_seconds=55, file_size_mb=3, memory_mb=900)
    spawner = Spawner(Confinement(user=resolve_user("nobody"), limits=limits, namespaces=True),
                               python=str(python))
    try:
        result, reply = _run(spawner, work, "report")
    finally:
        spawner.close()
    assert reply is not None and reply["ok"], (reply, result.stderr_tail)
    output = reply["output"]
    assert (output["uid"], output["gid"], output["groups"], output["pid"]) == (65534, 65534, [], 1)
    assert set(output["caps"].values()) == {"0000000000000000"}, output["caps"]
    assert output["no_new_privs"] == "1" and output["nice"] == 10 and output["oom"] == "1000"
    rows = {line[:26].strip(): line[26:].split()[:2] for line in output["limits"].splitlines()[1:]}
    assert rows["Max processes"] == ["77", "77"] and rows["Max open files"] == ["99", "99"]
    assert rows["Max cpu time"] == ["55", "55"] and rows["Max file size"] == [str(3 << 20)] * 2
    assert rows["Max address space"] == [str(900 << 20)] * 2


@needs_root
def test_a_candidate_that_leaves_its_session_still_ends_at_the_timeout(work: Path) -> None:
    """setsid and no parent-death signal: only its keeper, which it cannot stop, can end it."""
    spawner = Spawner(Confinement(user=resolve_user("nobody"), limits=CandidateLimits(), namespaces=True))
    try:
        started = time.monotonic()
        result, _ = _run(spawner, work, "leave", timeout=2)
        assert result.timed_out and time.monotonic() - started < 10
        time.sleep(0.3)
        assert pids_naming(MARKER) == [], "a process of the timed-out sample survived"
    finally:
        spawner.close()
        for pid in pids_naming(MARKER):
            os.kill(pid, 9)


def test_stop_ends_running_samples_and_refuses_new_ones(work: Path) -> None:
    spawner = Spawner(unconfined())
    outcome: list[RunResult] = []
    thread = threading.Thread(target=lambda: outcome.append(_run(spawner, work, "sleep", timeout=120)[0]))
    thread.start()
    time.sleep(1.0)
    spawner.stop()
    thread.join(timeout=20)
    try:
        assert outcome and outcome[0].returncode == -9
        with pytest.raises(SpawnerStopped):
            _run(spawner, work, "report")
    finally:
        spawner.close()


def test_a_server_that_died_is_started_again(work: Path) -> None:
    spawner = Spawner(unconfined())
    try:
        assert _run(spawner, work, "report")[0].returncode == 0
        assert spawner._server is not None
        spawner._server.kill()  # fault injection: nothing in the product kills it
        spawner._server.wait()
        first = spawner._server.pid
        result, reply = _run(spawner, work, "report")
        assert result.returncode == 0 and reply is not None and reply["ok"]
        assert spawner._server is not None and spawner._server.pid != first
    finally:
        spawner.close()


def test_output_is_bounded_and_a_large_row_does_not_block(work: Path) -> None:
    spawner = Spawner(Confinement(user=None, limits=CandidateLimits(output_kb=4), namespaces=False))
    try:
        result, reply = _run(spawner, work, "chatty", row={"blob": "y" * 5_000_000})
    finally:
        spawner.close()
    assert result.returncode == 0 and reply == {"ok": True, "output": 5_000_000}
    assert len(result.stdout_tail) == 4096 and result.stdout_tail.endswith("END")


@needs_root
def test_a_killed_sidecar_leaves_no_candidate_behind(work: Path) -> None:
    """SIGKILL gives the sidecar no chance to stop anything: the server sees its control socket
    close and exits, its death sends SIGTERM to every keeper, and each keeper ends its sample."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    sidecar = subprocess.Popen([sys.executable, "-c", SIDECAR, str(work)], env=env)
    try:
        deadline = time.monotonic() + 30
        while not pids_naming(HELD) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pids_naming(HELD), "the sample never started"
        sidecar.kill()
        sidecar.wait()
        deadline = time.monotonic() + 10
        while pids_naming(HELD) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pids_naming(HELD) == []
    finally:
        sidecar.kill()
        for pid in pids_naming(HELD):
            os.kill(pid, 9)
