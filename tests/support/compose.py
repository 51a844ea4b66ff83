"""Running a compiled task's compose project the way Harbor's docker environment does.

Harbor merges its own base file (service `main`, built from `environment/`) before the task's
docker-compose.yaml, with `--project-directory environment/` and `CONTEXT_DIR` set. These
helpers use the base file of the installed harbor package itself, so the merge is Harbor's.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.support.tools import harbor_bin


def harbor_base_compose() -> Path:
    """`docker-compose-build.yaml` of the installed harbor (found from its venv)."""
    venv = harbor_bin().resolve().parent.parent
    pattern = "lib/python*/site-packages/harbor/environments/docker/docker-compose-build.yaml"
    found = sorted(venv.glob(pattern))
    if not found:
        raise AssertionError(f"harbor's docker-compose-build.yaml not found under {venv}")
    return found[0]


def compose_argv(task_dir: Path, project: str) -> list[str]:
    """`docker compose ...` for the task's project, files in Harbor's order."""
    environment = task_dir / "environment"
    return ["docker", "compose", "--project-name", project, "--project-directory", str(environment),
            "-f", str(harbor_base_compose()), "-f", str(environment / "docker-compose.yaml")]


def compose_env(task_dir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment Harbor gives compose: the host's, plus CONTEXT_DIR."""
    return {**os.environ, "CONTEXT_DIR": str(task_dir / "environment"), **(extra or {})}


def compose_config(task_dir: Path, extra_env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The merged, interpolated compose model (`docker compose config`; needs no daemon)."""
    result = subprocess.run([*compose_argv(task_dir, "vero-config-check"), "config", "--format", "json"],
                            env=compose_env(task_dir, extra_env), capture_output=True, text=True, check=True)
    model: dict[str, Any] = json.loads(result.stdout)
    return model


def compose(task_dir: Path, project: str, *args: str, env: Mapping[str, str] | None = None,
            check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run one `docker compose` subcommand on the project."""
    return subprocess.run([*compose_argv(task_dir, project), *args], env=compose_env(task_dir, env),
                          capture_output=True, text=True, check=check, timeout=timeout)


def remove_project(project: str) -> None:
    """Remove every container, volume, network and built image of a compose project."""
    label = f"label=com.docker.compose.project={project}"
    kinds: tuple[tuple[str, list[str], list[str]], ...] = (
        ("container", ["-a"], ["-f"]), ("volume", [], ["-f"]), ("network", [], []))
    for kind, list_flags, rm_flags in kinds:
        listed = subprocess.run(["docker", kind, "ls", "-q", *list_flags, "--filter", label],
                                capture_output=True, text=True, check=False).stdout.split()
        if listed:
            subprocess.run(["docker", kind, "rm", *rm_flags, *listed], capture_output=True, check=False)
    for service in ("main", "eval-sidecar"):
        subprocess.run(["docker", "rmi", "-f", f"{project}-{service}"], capture_output=True, check=False)


def reap_stale_projects(prefix: str, older_than_s: float = 1800.0) -> list[str]:
    """Remove projects named `prefix*` whose containers are older than `older_than_s` (leftovers of
    a test run that was killed before its cleanup ran; live runs are younger than their timeout)."""
    listed = subprocess.run(["docker", "ps", "-a", "--format",
                             '{{.Label "com.docker.compose.project"}}\t{{.ID}}'],
                            capture_output=True, text=True, check=False).stdout.splitlines()
    stale = set()
    now = time.time()
    for line in listed:
        project, _, cid = line.partition("\t")
        if not project.startswith(prefix):
            continue
        created = subprocess.run(["docker", "inspect", "-f", "{{.Created}}", cid], capture_output=True,
                                 text=True, check=False).stdout.strip()
        try:
            started = datetime.fromisoformat(created[:26].rstrip("Z") + "+00:00").timestamp()
        except ValueError:
            continue
        if now - started > older_than_s:
            stale.add(project)
    for project in sorted(stale):
        remove_project(project)
    return sorted(stale)
