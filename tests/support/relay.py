"""The isolation relay's test harness: a stand-in for harbor's environment that runs commands
for real in a directory, a base class for candidate agents, and a driver for one candidate's
setup and run through a real `CandidateProcess` (tests/modeb/test_relay.py, tests/redteam)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pydantic import BaseModel

from vero.modeb.isolation.protocol import Start
from vero.modeb.isolation.trusted_side import CandidateProcess

LOG = logging.getLogger("test-relay")


class Context(BaseModel):
    """The fields of harbor's AgentContext these tests look at."""

    n_input_tokens: int | None = None
    metadata: dict[str, Any] | None = None


class LocalEnvironment:
    """Harbor's environment API on a local directory standing in for the container's root."""

    def __init__(self, root: Path, default_user: str | None = None) -> None:
        self.root = root
        self.default_user = default_user
        self.session_id = "trial__env"
        self.environment_name = "local"
        self.task_env_config = None
        self.users: list[Any] = []

    def path(self, container_path: str) -> Path:
        return self.root / container_path.lstrip("/")

    async def exec(self, command: str, cwd: str | None = None, env: dict[str, str] | None = None,
                   timeout_sec: int | None = None, user: str | int | None = None) -> Any:
        self.users.append(user)
        workdir = self.path(cwd) if cwd else self.root
        workdir.mkdir(parents=True, exist_ok=True)
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", command, cwd=workdir, env={"PATH": os.environ["PATH"], **(env or {})},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), timeout_sec)
        return SimpleNamespace(stdout=out.decode(), stderr=err.decode(), return_code=proc.returncode)

    async def upload_file(self, source: Path, target: str) -> None:
        self.path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, self.path(target))

    async def upload_dir(self, source: Path, target: str) -> None:
        shutil.copytree(source, self.path(target), symlinks=True, dirs_exist_ok=True)

    async def download_file(self, source: str, target: Path) -> None:
        # Like `docker cp`: a link in the container arrives as a link.
        shutil.copy2(self.path(source), target, follow_symlinks=False)

    async def download_dir(self, source: str, target: Path) -> None:
        shutil.copytree(self.path(source), target, symlinks=True, dirs_exist_ok=True)


HEADER = '''
import asyncio, json, os, struct
from pathlib import Path


class Base:
    def __init__(self, logs_dir, model_name=None, logger=None, extra_env=None, **kwargs):
        self.logs_dir, self.model_name, self.extra_env, self.kwargs = logs_dir, model_name, extra_env, kwargs
        self.report = {}

    @staticmethod
    def name():
        return "test-agent"

    def version(self):
        return "2.0"

    async def setup(self, environment):
        (self.logs_dir / "setup.txt").write_text("set up")

    def save(self):
        (self.logs_dir / "report.json").write_text(json.dumps(self.report))

    async def attempt(self, key, coroutine):
        try:
            result = await coroutine
            self.report[key] = "ok" if result is None else getattr(result, "stdout", "ok")
        except Exception as exc:
            self.report[key] = f"{type(exc).__name__}: {exc}"

    def raw(self, environment, body, payload=b""):
        frame = body if isinstance(body, bytes) else json.dumps(body).encode()
        os.write(environment._channel.out_fd, struct.pack(">II", len(frame), len(payload)) + frame + payload)
'''

async def drive(world: SimpleNamespace, agent: str, environment: Any, context: Any = None,
                run_timeout: float | None = None, **start: Any) -> CandidateProcess:
    spec = world.isolation.spec(f"{agent}_agent:Agent", world.worktree)
    process = await CandidateProcess.start(spec, Start(candidate=spec.candidate, **start), LOG)
    try:
        await process.ready()
        await process.phase("setup", environment, logs_dir=world.logs)
        run = process.phase("run", environment, logs_dir=world.logs, instruction="hello", context=context)
        await asyncio.wait_for(run, run_timeout)
    finally:
        await process.close(world.logs)
    return process


def report(world: SimpleNamespace) -> Any:
    return json.loads((world.logs / "report.json").read_text())
