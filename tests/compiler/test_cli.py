"""The `vero harbor build|run` commands: one message and an exit code for bad input, harbor's exit
code passed through, and the temporary task always removed."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.support.benchmarks import fake_runtime_pex, write_mode_a
from tests.support.tools import harbor_bin, require_base_image
from vero.cli import cli


def _invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_build_prints_a_summary(tmp_path: Path) -> None:
    config = write_mode_a(tmp_path / "bench")
    pex = fake_runtime_pex(tmp_path / "vero.pex")
    code, out, err = _invoke("harbor", "build", "-c", str(config), "-o", str(tmp_path / "out"),
                             "--runtime-pex", str(pex))
    assert code == 0, err
    *checked, built = out.splitlines()
    assert built.startswith(f"built {tmp_path / 'out'}: ") and "baseline " in built and "seal " in built
    assert "build.yaml sha256 " in built
    assert [line.split(" ", 2)[1] for line in checked] == ["entrypoint", "scorer", "dry"]


def test_build_errors_are_one_message_without_traceback(tmp_path: Path) -> None:
    config = write_mode_a(tmp_path / "bench", secrets=["NOT_SET_ANYWHERE_1"])
    pex = fake_runtime_pex(tmp_path / "vero.pex")
    code, _, err = _invoke("harbor", "build", "-c", str(config), "-o", str(tmp_path / "out"),
                           "--runtime-pex", str(pex))
    assert code == 2
    assert err.startswith(f"error: {config}: secret(s) not set in the environment: NOT_SET_ANYWHERE_1")
    assert "fix:" in err and "Traceback" not in err


def test_build_from_sources_needs_a_runtime_pex(tmp_path: Path) -> None:
    config = write_mode_a(tmp_path / "bench")
    env = {k: v for k, v in os.environ.items() if k != "PEX"}
    result = subprocess.run([sys.executable, "-c", "from vero.cli import main; main()", "harbor", "build",
                             "-c", str(config), "-o", str(tmp_path / "out")],
                            capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 2 and "not running from a PEX" in result.stderr


def test_run_without_harbor(tmp_path: Path) -> None:
    config = write_mode_a(tmp_path / "bench")
    code, _, err = _invoke("harbor", "run", "-c", str(config), "-a", "oracle",
                           "--harbor", str(tmp_path / "nope"))
    assert code == 2 and "is not installed" in err and "VERO_HARBOR_BIN" in err


def test_run_with_a_missing_base_image(tmp_path: Path) -> None:
    require_base_image()
    config = write_mode_a(tmp_path / "bench", base_image_sidecar="vero/does-not-exist:1")
    code, _, err = _invoke("harbor", "run", "-c", str(config), "-a", "oracle", "--harbor", str(harbor_bin()),
                           "--runtime-pex", str(fake_runtime_pex(tmp_path / "vero.pex")))
    assert code == 2 and "vero/does-not-exist:1" in err and "vero/base:bookworm" not in err.split("fix:")[0]


def test_run_without_the_compose_plugin(tmp_path: Path) -> None:
    require_base_image()
    config = write_mode_a(tmp_path / "bench")
    # A Docker config dir without cli-plugins/: the docker CLI really has no `compose` then.
    (tmp_path / "docker-config").mkdir()
    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "docker-config")}
    code, _, err = _invoke("harbor", "run", "-c", str(config), "-a", "oracle", "--harbor", str(harbor_bin()),
                           "--runtime-pex", str(fake_runtime_pex(tmp_path / "vero.pex")), env=env)
    assert code == 2 and "`docker compose version` failed" in err and "build-support/setup.sh" in err


def test_run_passes_harbor_exit_code_and_cleans_up(tmp_path: Path) -> None:
    """The real harbor CLI fails fast on an agent it cannot import (exit 1, before any container)."""
    require_base_image()
    config = write_mode_a(tmp_path / "bench")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "HARBOR_TELEMETRY": "0"}
    result = subprocess.run(
        [sys.executable, "-c", "from vero.cli import main; main()", "harbor", "run", "-c", str(config),
         "-a", "no_such_module_xyz:Agent", "--harbor", str(harbor_bin()),
         "--runtime-pex", str(fake_runtime_pex(tmp_path / "vero.pex")),
         "-y", "-q", "-o", str(tmp_path / "jobs"), "--job-name", "cli-exit-code"],
        capture_output=True, text=True, env=env, check=False, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no_such_module_xyz" in result.stdout + result.stderr
    assert list(scratch.iterdir()) == [], "the temporary task must be removed"


def test_run_cleans_up_when_terminated(tmp_path: Path) -> None:
    """SIGTERM reaches harbor through vero, and the temporary task is still removed."""
    require_base_image()
    config = write_mode_a(tmp_path / "bench")
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "slow_agent.py").write_text("import time\ntime.sleep(300)\n")  # harbor blocks importing it
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "HARBOR_TELEMETRY": "0", "PYTHONPATH": str(agents)}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from vero.cli import main; main()", "harbor", "run", "-c", str(config),
         "-a", "slow_agent:Agent", "--harbor", str(harbor_bin()),
         "--runtime-pex", str(fake_runtime_pex(tmp_path / "vero.pex")),
         "-y", "-q", "-o", str(tmp_path / "jobs"), "--job-name", "cli-sigterm"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list(scratch.glob("vero-run-*/*/SEAL.json")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout and proc.stdout.read()
            time.sleep(0.2)
        time.sleep(3)  # harbor is starting or importing the agent
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, output
    assert list(scratch.iterdir()) == [], "the temporary task must be removed"


# Fault injection: a signal sent from outside cannot be aimed at the compile reliably, so the
# launcher has the compiler SIGTERM its own process just before it writes the seal.
TERM_WHILE_COMPILING = """
import os, signal
from vero.compiler import compiler
real_write_seal = compiler.write_seal
def write_seal(*args):
    os.kill(os.getpid(), signal.SIGTERM)
    return real_write_seal(*args)
compiler.write_seal = write_seal
from vero.cli import main
main()
"""


@pytest.mark.parametrize("command", ["run", "build"])
def test_a_command_terminated_while_compiling_leaves_nothing(tmp_path: Path, command: str) -> None:
    config = write_mode_a(tmp_path / "bench")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    invoked = tmp_path / "harbor-invoked"
    harbor = tmp_path / "harbor"
    harbor.write_text(f"#!/bin/sh\ntouch {invoked}\n")
    harbor.chmod(0o755)
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    args = (["-a", "oracle", "--harbor", str(harbor), "-e", "modal"] if command == "run"
            else ["-o", str(outputs / "task")])
    result = subprocess.run(
        [sys.executable, "-c", TERM_WHILE_COMPILING, "harbor", command, "-c", str(config),
         "--runtime-pex", str(fake_runtime_pex(tmp_path / "vero.pex")), *args],
        env={**os.environ, "TMPDIR": str(scratch)}, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert "Traceback" not in result.stderr and not invoked.exists()
    assert list(scratch.iterdir()) == [] and list(outputs.iterdir()) == [], "nothing may be left behind"


KILL_WHILE_COMPILING = TERM_WHILE_COMPILING.replace("SIGTERM", "SIGKILL")


def test_the_stage_of_a_killed_build_is_removed_by_the_next_and_a_live_one_is_left(tmp_path: Path) -> None:
    config = write_mode_a(tmp_path / "bench")
    pex = fake_runtime_pex(tmp_path / "vero.pex")
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    build = ["harbor", "build", "-c", str(config), "--runtime-pex", str(pex), "-o", str(outputs / "task")]
    killed = subprocess.run([sys.executable, "-c", KILL_WHILE_COMPILING, *build], capture_output=True,
                            text=True, timeout=120, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    [abandoned] = [p.name for p in outputs.iterdir()]
    assert abandoned.startswith(".task.vero-build-")
    # A build in progress elsewhere holds the lock on its stage: the next build must leave it.
    live = outputs / ".task.vero-build-live"
    live.mkdir()
    fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        code, _, err = _invoke(*build)
        assert code == 0, err
        assert sorted(p.name for p in outputs.iterdir()) == [".task.vero-build-live", "task"]
    finally:
        os.close(fd)


def test_the_runtime_pex_bakes_itself_by_default(tmp_path: Path) -> None:
    """Run as a PEX without --runtime-pex, vero bakes the PEX it runs from ($PEX)."""
    pex = Path("src.python.vero/vero.pex").absolute()  # runtime_package_dependencies
    config = write_mode_a(tmp_path / "bench")
    result = subprocess.run([str(pex), "harbor", "build", "-c", str(config), "-o", str(tmp_path / "out")],
                            capture_output=True, text=True, check=False, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out/environment/bin/vero.pex").read_bytes() == pex.read_bytes()
