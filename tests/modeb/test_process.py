"""run_group with real processes: exit codes, stderr tail, stdin, whole-group kill on timeout."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from vero.errors import VeroError
from vero.modeb.process import STDERR_TAIL_BYTES, group_alive, run_group

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


def test_non_zero_exit_is_an_outcome_with_the_stderr_tail(tmp_path: Path) -> None:
    log = tmp_path / "harbor.log"
    script = "echo to-stdout; for i in $(seq 1 3000); do echo line-$i >&2; done; echo last words >&2; exit 3"
    outcome = run_group(["bash", "-c", script], env=ENV, cwd=tmp_path, timeout=30, kill_grace=1, log_path=log)
    assert outcome.exit_code == 3 and not outcome.timed_out and not outcome.interrupted
    assert outcome.stderr_tail.endswith("last words\n")
    assert len(outcome.stderr_tail.encode()) <= STDERR_TAIL_BYTES
    assert "line-1\n" not in outcome.stderr_tail
    text = log.read_text()
    assert "to-stdout" in text and "line-1\n" in text and "last words" in text


def test_stdin_is_dev_null_so_prompts_cannot_block(tmp_path: Path) -> None:
    outcome = run_group(["bash", "-c", "read answer; echo rc=$? >&2"], env=ENV, cwd=tmp_path, timeout=20,
                        kill_grace=1, log_path=None)
    assert outcome.stderr_tail.strip() == "rc=1" and outcome.duration_s < 20


def test_timeout_kills_the_whole_group_including_children_that_ignore_sigterm(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = (f"(trap '' TERM; sleep 300) & echo $! >> {pids}; "
              f"sleep 300 & echo $! >> {pids}; echo $$ >> {pids}; wait")
    started = time.monotonic()
    outcome = run_group(["bash", "-c", script], env=ENV, cwd=tmp_path, timeout=1, kill_grace=2, log_path=None,
                        poll_interval=0.2)
    elapsed = time.monotonic() - started
    assert outcome.timed_out and outcome.exit_code is not None and outcome.exit_code < 0
    assert 1 <= elapsed < 1 + 2 + 8
    for pid in map(int, pids.read_text().split()):
        assert not alive(pid), pid


def test_poll_raising_keyboard_interrupt_stops_the_group(tmp_path: Path) -> None:
    calls: list[int] = []
    started: list[int] = []

    def poll() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    outcome = run_group(["sleep", "300"], env=ENV, cwd=tmp_path, timeout=None, kill_grace=2, log_path=None,
                        on_start=started.append, poll=poll, poll_interval=0.1)
    assert outcome.interrupted and not outcome.timed_out
    assert not group_alive(started[0])


def test_missing_program_is_a_vero_error(tmp_path: Path) -> None:
    with pytest.raises(VeroError, match="cannot start '/nonexistent/harbor'"):
        run_group(["/nonexistent/harbor", "run"], env=ENV, cwd=tmp_path, timeout=1, kill_grace=1,
                  log_path=None)
