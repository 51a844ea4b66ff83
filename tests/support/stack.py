"""A compiled task's containers brought up with testcontainers, the way Harbor's docker
environment does: Harbor's own base file (service `main`) first, then the task's
docker-compose.yaml, `--project-directory environment/`, `CONTEXT_DIR` set."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from testcontainers.compose import DockerCompose

from tests.support.compose import harbor_base_compose, reap_stale_projects, remove_project


@dataclass
class TaskStack(DockerCompose):
    """`DockerCompose` for a compiled task directory (use `task_stack` to make one)."""

    project: str = ""
    project_directory: str = ""

    @cached_property
    def compose_command_property(self) -> list[str]:
        return [*super().compose_command_property, "--project-name", self.project,
                "--project-directory", self.project_directory]

    def run(self, service: str, command: str, *, user: str = "root", env: Mapping[str, str] | None = None,
            timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`bash -c command` in `service` as `user`; raises unless it exits 0 (with `check`)."""
        flags = [arg for key, value in (env or {}).items() for arg in ("-e", f"{key}={value}")]
        result = subprocess.run([*self.compose_command_property, "exec", "-T", "-u", user, *flags, service,
                                 "bash", "-c", command], capture_output=True, text=True, timeout=timeout,
                                check=False, cwd=self.context)
        if check and result.returncode != 0:
            raise AssertionError(f"{command!r} as {user} in {service} exited {result.returncode}:\n"
                                 f"{result.stdout[-3000:]}{result.stderr[-3000:]}")
        return result

    def container_id(self, service: str) -> str:
        """The id of the service's container."""
        return subprocess.run([*self.compose_command_property, "ps", "-q", service], capture_output=True,
                              text=True, check=True, cwd=self.context).stdout.strip()

    def stop(self, down: bool = True) -> None:
        """Remove the containers, the volumes and the images built for this project."""
        subprocess.run([*self.compose_command_property, "down", "--volumes", "--rmi", "local", "--remove-orphans"],
                       capture_output=True, check=False, cwd=self.context, timeout=600)
        remove_project(self.project)


def task_stack(task_dir: Path, prefix: str, env: Mapping[str, str] | None = None) -> TaskStack:
    """A stack for `task_dir` with a fresh project name (stale ones of `prefix` are removed first).

    The interpolation variables go through an env file next to the task (Harbor exports them).
    """
    reap_stale_projects(prefix)
    project = f"{prefix}{uuid.uuid4().hex[:10]}"
    environment = task_dir / "environment"
    env_file = task_dir.parent / f"{project}.env"
    variables = {"CONTEXT_DIR": str(environment), **(env or {})}
    env_file.write_text("".join(f"{key}={value}\n" for key, value in variables.items()))
    return TaskStack(context=str(environment),
                     compose_file_name=[str(harbor_base_compose()), str(environment / "docker-compose.yaml")],
                     build=True, wait=True, env_file=str(env_file), project=project,
                     project_directory=str(environment))
