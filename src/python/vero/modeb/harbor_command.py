"""The `harbor run` command line and environment for one evaluation."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from vero.errors import VeroError
from vero.modeb.config import HarborConfig
from vero.modeb.isolation.spec import QUIET_ENV
from vero.modeb.task_source import TaskRef, TaskSource

# The one meaning of VERO_HARBOR_BIN, for `vero harbor run` and the runner alike: the harbor
# executable, a path or a name looked up on PATH (never a command line to split).
HARBOR_BIN_ENV = "VERO_HARBOR_BIN"


def find_harbor(explicit: str | None, env: Mapping[str, str]) -> str:
    """The harbor executable: `explicit`, else `$VERO_HARBOR_BIN`, else `harbor` on PATH."""
    candidate = explicit or env.get(HARBOR_BIN_ENV) or "harbor"
    found = shutil.which(candidate, path=env.get("PATH"))
    if found is None:
        raise VeroError(f"the harbor CLI {candidate!r} is not installed or not executable",
                        where="harbor run", fix="install harbor (build-support/setup.sh does), "
                                                f"or pass --harbor PATH / set {HARBOR_BIN_ENV}")
    return found


def harbor_from_env(env: Mapping[str, str]) -> list[str] | None:
    """`$VERO_HARBOR_BIN` as a one-element command, or None when it is not set."""
    value = env.get(HARBOR_BIN_ENV)
    return [value] if value else None


def new_job_name(split: str, commit: str) -> str:
    """A job name no other evaluation uses: Harbor resumes (or refuses) a reused one."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"vero-{split}-{commit[:12]}-{stamp}-{secrets.token_hex(3)}"


def harbor_argv(config: HarborConfig, source: TaskSource, refs: Sequence[TaskRef], *, jobs_dir: Path,
                job_name: str, agent: str | None = None) -> list[str]:
    """Every flag of SPEC §6: source and include filters, agent (`config.agent` unless `agent` is
    given), concurrency, attempts, retries, model, jobs dir, unique job name, non-interactive and
    quiet, then `extra_args`."""
    argv = [*config.harbor_command, "run", *source.harbor_args(refs), "-a", agent or config.agent,
            "-e", config.environment, "-n", str(config.n_concurrent), "-k", str(config.n_attempts),
            "-r", str(config.max_retries), "-o", str(jobs_dir), "--job-name", job_name, "-y", "-q"]
    if config.model is not None:
        argv += ["-m", config.model]
    return argv + list(config.extra_args)


def harbor_env(worktree: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the harbor process: the candidate worktree is the only PYTHONPATH
    entry (Harbor imports `module:Class` and does not put its cwd on sys.path)."""
    env = dict(os.environ if base is None else base)
    env.pop("PYTHONHOME", None)
    env["PYTHONPATH"] = str(worktree)
    env.update(QUIET_ENV)
    return env


def preflight(config: HarborConfig, env: Mapping[str, str]) -> None:
    """Fail early, with a fix, when harbor (or Docker Compose for `-e docker`) cannot run at all."""
    program = config.harbor_command[0]
    if shutil.which(program, path=env.get("PATH")) is None and not Path(program).is_file():
        raise VeroError(f"the harbor command {program!r} was not found", where="harbor.harbor_command",
                        fix="install harbor (build-support/setup.sh links build-support/bin/harbor) "
                            "or set harbor_command / --harbor-command")
    if config.environment == "docker":
        check_docker_compose(env, where="harbor.environment=docker")


def check_docker_compose(env: Mapping[str, str], *, where: str) -> None:
    """The docker CLI and its Compose v2 plugin must answer.

    Harbor's own preflight misses a missing Compose plugin and then fails every trial while
    still exiting 0.
    """
    if shutil.which("docker", path=env.get("PATH")) is None:
        raise VeroError("the docker CLI is not installed", where=where,
                        fix="install Docker Engine, or choose another Harbor environment")
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, check=False,
                           env=dict(env), stdin=subprocess.DEVNULL)
    if probe.returncode != 0:
        raise VeroError("`docker compose version` failed: Harbor needs the Compose v2 plugin", where=where,
                        fix="run build-support/setup.sh (it installs the plugin)")
