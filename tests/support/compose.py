"""Running a compiled task's compose project the way Harbor's docker environment does.

Harbor merges its own base file (service `main`, built from `environment/`) before the task's
docker-compose.yaml, with `--project-directory environment/` and `CONTEXT_DIR` set. These
helpers use the base file of the installed harbor package itself, so the merge is Harbor's.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
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
