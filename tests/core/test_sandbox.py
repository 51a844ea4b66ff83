"""The sandbox: unprivileged user, minimal environment, process-group timeouts, bounded output,
rlimits, and (as root) a pid namespace per process that nothing it starts can outlive."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from tests.support.mode_a import is_root, shared_tmp
from vero.core.confine import Confinement, resolve_user, unconfined
from vero.core.limits import CandidateLimits
from vero.core.sandbox import run_sandboxed
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
    result = run_sandboxed([PY, "-c", script], cwd=tmp_path, env=ENV, timeout=1.0, confinement=unconfined())
    assert result.timed_out and result.returncode is None
    assert time.monotonic() - started < 10
    assert _wait_dead(int(pidfile.read_text()))


def test_background_stragglers_die_when_the_sample_ends(tmp_path: Path) -> None:
    pidfile = tmp_path / "straggler"
    script = (f"import subprocess; p = subprocess.Popen(['sleep', '60']); "
              f"open({str(pidfile)!r}, 'w').write(str(p.pid))")
    result = run_sandboxed([PY, "-c", script], cwd=tmp_path, env=ENV, timeout=30, confinement=unconfined())
    assert result.returncode == 0 and not result.timed_out
    assert _wait_dead(int(pidfile.read_text()))


def test_environment_is_exactly_what_is_passed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VERO_ADMIN_TOKEN", "secret-token")
    result = run_sandboxed([PY, "-c", "import os, sys; print(sorted(os.environ)); print(sys.stdin.read())"],
                           cwd=tmp_path, env={**ENV, "ONLY": "1"}, timeout=30, confinement=unconfined(),
                           stdin_data=b"hello")
    assert "secret-token" not in result.stdout_tail
    assert "'ONLY'" in result.stdout_tail and "VERO_ADMIN_TOKEN" not in result.stdout_tail
    assert result.stdout_tail.rstrip().endswith("hello")


def test_output_is_bounded_and_large_stdin_does_not_block(tmp_path: Path) -> None:
    script = "import sys; sys.stdout.write('x' * 5_000_000 + 'END'); sys.stderr.write('e' * 100000)"
    confinement = Confinement(user=None, limits=CandidateLimits(output_kb=4), namespaces=False)
    result = run_sandboxed([PY, "-c", script], cwd=tmp_path, env=ENV, timeout=30, confinement=confinement,
                           stdin_data=b"y" * 5_000_000)
    assert result.returncode == 0
    assert len(result.stdout_tail) == 4096 and result.stdout_tail.endswith("END")
    assert len(result.stderr_tail) == 4096


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
    with shared_tmp() as cwd:
        script = ("import os; print(os.getuid(), os.getgid(), os.getgroups()); "
                  "print(open('/proc/self/status').read())")
        result = run_sandboxed([PY, "-c", script], cwd=cwd, env=ENV, timeout=30,
                               confinement=Confinement(user=user, limits=CandidateLimits(), namespaces=True))
    first, _, status = result.stdout_tail.partition("\n")
    assert first == "65534 65534 []", result.stderr_tail
    caps = {line.split(":")[0]: line.split()[1] for line in status.splitlines() if line.startswith("Cap")}
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapBnd"] == "0000000000000000"
    assert "NoNewPrivs:\t1" in status


@pytest.mark.skipif(not is_root(), reason="a pid namespace needs root (CI runs as root)")
def test_the_oom_preference_lands_on_the_candidate_not_on_pid_1(tmp_path: Path) -> None:
    """In its own pid namespace a process is pid 1, but /proc is still the parent's: a tool that
    writes /proc/<getpid()>/oom_score_adj there marks the host's (the container's) pid 1 instead."""
    before = Path("/proc/1/oom_score_adj").read_text()
    script = "print(open('/proc/self/oom_score_adj').read())"
    result = run_sandboxed([PY, "-c", script], cwd=tmp_path, env=ENV, timeout=30,
                           confinement=Confinement(user=None, limits=CandidateLimits(), namespaces=True))
    assert result.stdout_tail.strip() == "1000", result.stderr_tail
    assert Path("/proc/1/oom_score_adj").read_text() == before


def test_rlimits_are_applied(tmp_path: Path) -> None:
    limits = CandidateLimits(processes=77, memory_mb=900, file_size_mb=3, open_files=99, cpu_seconds=55)
    script = ("import resource as r; print(*(r.getrlimit(getattr(r, 'RLIMIT_' + n))[0] for n in "
              "('NPROC', 'AS', 'FSIZE', 'NOFILE', 'CPU'))); print(open('/proc/self/oom_score_adj').read())")
    result = run_sandboxed([PY, "-c", script], cwd=tmp_path, env=ENV, timeout=30,
                           confinement=Confinement(user=None, limits=limits, namespaces=False))
    assert result.stdout_tail.split() == ["77", str(900 * 1024 * 1024), str(3 * 1024 * 1024), "99", "55", "1000"]
    big = run_sandboxed([PY, "-c", "open('f', 'wb').write(b'x' * 4 * 1024 * 1024)"], cwd=tmp_path, env=ENV,
                        timeout=30, confinement=Confinement(user=None, limits=limits, namespaces=False))
    assert big.returncode != 0 and (tmp_path / "f").stat().st_size <= 3 * 1024 * 1024


# Each escapes the process group in its own way and writes its pid; a pid namespace ends them all.
ESCAPES = {
    "setsid": "import subprocess, sys\n"
              "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', sys.argv[1]],\n"
              "                     start_new_session=True)\n"
              "open(sys.argv[1], 'w').write(str(p.pid))\n",
    "double-fork daemon": "import os, sys, time\n"
                          "if os.fork() == 0:\n"
                          "    os.setsid()\n"
                          "    if os.fork() == 0:\n"
                          "        open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(300)\n"
                          "    os._exit(0)\n"
                          "time.sleep(1)\n",
    # A child that, whenever its parent dies, forks a replacement (PR_SET_PDEATHSIG): a loop of
    # kills by uid never catches up with it, a namespace does.
    "pdeathsig re-forker": "import ctypes, os, signal, sys, time\n"
                           "libc = ctypes.CDLL(None)\n"
                           "def child():\n"
                           "    while True:\n"
                           "        if os.fork():\n"
                           "            time.sleep(300)\n"
                           "        libc.prctl(1, signal.SIGUSR1)\n"
                           "        signal.signal(signal.SIGUSR1, lambda *a: None)\n"
                           "        open(sys.argv[1], 'w').write(str(os.getpid()))\n"
                           "        os.setsid()\n"
                           "        time.sleep(300)\n"
                           "if os.fork() == 0:\n"
                           "    child()\n"
                           "time.sleep(1)\n",
}


def _host_pid(namespace_pid_file: Path) -> int | None:
    """The host pid of a process that wrote its (namespace) pid: found by its cmdline marker."""
    marker = str(namespace_pid_file)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes() and _alive(int(entry.name)):
                    return int(entry.name)
            except OSError:
                continue
    return None


@pytest.mark.skipif(not is_root(), reason="a pid namespace needs root (CI runs as root)")
@pytest.mark.parametrize("escape", sorted(ESCAPES))
def test_nothing_a_process_starts_outlives_it_in_its_namespace(escape: str) -> None:
    user = resolve_user("nobody")
    with shared_tmp() as cwd:
        pidfile = cwd / "escaped.pid"
        (cwd / "escape.py").write_text(ESCAPES[escape])
        os.chmod(cwd, 0o777)
        result = run_sandboxed([PY, str(cwd / "escape.py"), str(pidfile)], cwd=cwd, env=ENV, timeout=30,
                               confinement=Confinement(user=user, limits=CandidateLimits(), namespaces=True))
        assert result.returncode == 0, result.stderr_tail
        assert pidfile.exists()
        time.sleep(0.3)
        assert _host_pid(pidfile) is None, f"{escape}: a process outlived its sample"


LEAVER = ("import ctypes, os, sys, time\n"
          "os.setsid()\n"
          "ctypes.CDLL(None).prctl(1, 0)  # PR_SET_PDEATHSIG: none\n"
          "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
          "time.sleep(300)\n")


@pytest.mark.skipif(not is_root(), reason="a pid namespace needs root (CI runs as root)")
def test_a_first_process_that_leaves_its_group_still_dies_at_the_timeout() -> None:
    """The namespace's first process leaves `unshare`'s process group and clears its parent-death
    signal: killing the group and `unshare` would leave it, and its namespace, running."""
    with shared_tmp() as cwd:
        pidfile = cwd / "left.pid"
        (cwd / "leave.py").write_text(LEAVER)
        os.chmod(cwd, 0o777)
        result = run_sandboxed([PY, str(cwd / "leave.py"), str(pidfile)], cwd=cwd, env=ENV, timeout=2,
                               confinement=Confinement(user=resolve_user("nobody"), limits=CandidateLimits(),
                                                       namespaces=True))
        assert result.timed_out and pidfile.exists(), result.stderr_tail
        time.sleep(0.3)
        survivor = _host_pid(pidfile)
        if survivor is not None:
            os.kill(survivor, 9)
        assert survivor is None, "the first process outlived its timeout"


@pytest.mark.skipif(not is_root(), reason="a pid namespace needs root (CI runs as root)")
def test_without_a_namespace_the_setsid_escape_survives() -> None:
    # The control for the test above: the escape is real, only the namespace stops it.
    with shared_tmp() as cwd:
        pidfile = cwd / "escaped.pid"
        (cwd / "escape.py").write_text(ESCAPES["setsid"])
        os.chmod(cwd, 0o777)
        run_sandboxed([PY, str(cwd / "escape.py"), str(pidfile)], cwd=cwd, env=ENV, timeout=30,
                      confinement=Confinement(user=resolve_user("nobody"), limits=CandidateLimits(),
                                              namespaces=False))
        time.sleep(0.3)
        survivor = _host_pid(pidfile)
        try:
            assert survivor is not None
        finally:
            if survivor is not None:
                os.kill(survivor, 9)


@pytest.mark.skipif(not is_root(), reason="a network namespace needs root (CI runs as root)")
def test_network_can_be_cut(tmp_path: Path) -> None:
    script = "import socket; print(sorted(n for _, n in socket.if_nameindex()))"
    cut = run_sandboxed([PY, "-c", script], cwd=tmp_path, env=ENV, timeout=30, network=False,
                        confinement=Confinement(user=None, limits=CandidateLimits(), namespaces=True))
    assert cut.stdout_tail.strip() == "['lo']", cut.stderr_tail
