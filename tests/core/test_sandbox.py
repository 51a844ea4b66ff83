"""The sandbox: unprivileged user, minimal environment, process-group timeouts, bounded output."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.mode_a import is_root, shared_tmp
from vero.core.sandbox import TAIL_BYTES, ProcessGroups, resolve_user, run_sandboxed, wrap_argv
from vero.errors import VeroError

PY = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
ENV = {"PATH": "/usr/bin:/bin"}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): look at its state.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "\nState:\tZ" not in status.read_text()


def _wait_dead(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild"
    script = (f"import subprocess; p = subprocess.Popen(['sleep', '60']); "
              f"open({str(pidfile)!r}, 'w').write(str(p.pid)); import time; time.sleep(60)")
    started = time.monotonic()
    result = run_sandboxed([PY, "-c", script], cwd=tmp_path, env=ENV, timeout=1.0, user=None)
    assert result.timed_out and result.returncode is None
    assert time.monotonic() - started < 10
    assert _wait_dead(int(pidfile.read_text()))


def test_background_stragglers_die_when_the_sample_ends(tmp_path: Path) -> None:
    pidfile = tmp_path / "straggler"
    script = (f"import subprocess; p = subprocess.Popen(['sleep', '60']); "
              f"open({str(pidfile)!r}, 'w').write(str(p.pid))")
    result = run_sandboxed([PY, "-c", script], cwd=tmp_path, env=ENV, timeout=30, user=None)
    assert result.returncode == 0 and not result.timed_out
    assert _wait_dead(int(pidfile.read_text()))


def test_environment_is_exactly_what_is_passed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VERO_ADMIN_TOKEN", "secret-token")
    result = run_sandboxed([PY, "-c", "import os, sys; print(sorted(os.environ)); print(sys.stdin.read())"],
                           cwd=tmp_path, env={**ENV, "ONLY": "1"}, timeout=30, user=None, stdin_data=b"hello")
    assert "secret-token" not in result.stdout_tail
    assert "'ONLY'" in result.stdout_tail and "VERO_ADMIN_TOKEN" not in result.stdout_tail
    assert result.stdout_tail.rstrip().endswith("hello")


def test_output_is_bounded_and_large_stdin_does_not_block(tmp_path: Path) -> None:
    script = "import sys; sys.stdout.write('x' * 5_000_000 + 'END'); sys.stderr.write('e' * 100000)"
    result = run_sandboxed([PY, "-c", script], cwd=tmp_path, env=ENV, timeout=30, user=None,
                           stdin_data=b"y" * 5_000_000)
    assert result.returncode == 0
    assert len(result.stdout_tail) == TAIL_BYTES and result.stdout_tail.endswith("END")
    assert len(result.stderr_tail) == TAIL_BYTES


def test_kill_all_ends_running_groups(tmp_path: Path) -> None:
    groups = ProcessGroups()
    outcome: list[float] = []

    def run() -> None:
        started = time.monotonic()
        run_sandboxed([PY, "-c", "import time; time.sleep(60)"], cwd=tmp_path, env=ENV, timeout=120,
                      user=None, groups=groups)
        outcome.append(time.monotonic() - started)

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.5)
    groups.kill_all()
    thread.join(timeout=10)
    assert outcome and outcome[0] < 10
    result = run_sandboxed([PY, "-c", "import time; time.sleep(60)"], cwd=tmp_path, env=ENV, timeout=120,
                           user=None, groups=groups)
    assert result.returncode == -9  # started after kill_all: killed at once


def test_unknown_or_root_harness_user() -> None:
    with pytest.raises(VeroError, match="does not exist"):
        resolve_user("no-such-user-vero")
    with pytest.raises(VeroError, match="is root"):
        resolve_user("root")
    assert resolve_user(None) is None


@pytest.mark.skipif(not is_root(), reason="switching users needs root (CI runs as root)")
def test_runs_as_the_unprivileged_user_without_groups_or_caps() -> None:
    user = resolve_user("nobody")
    assert user is not None and user.uid == 65534
    assert wrap_argv(["x"], user)[0] == "setpriv"
    with shared_tmp() as cwd:
        script = ("import os; print(os.getuid(), os.getgid(), os.getgroups()); "
                  "print(open('/proc/self/status').read())")
        result = run_sandboxed([PY, "-c", script], cwd=cwd, env=ENV, timeout=30, user=user)
    first, _, status = result.stdout_tail.partition("\n")
    assert first == "65534 65534 []", result.stderr_tail
    caps = {line.split(":")[0]: line.split()[1] for line in status.splitlines() if line.startswith("Cap")}
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapBnd"] == "0000000000000000"
    assert "NoNewPrivs:\t1" in status
