"""Attacks of a Mode B candidate agent through the isolation relay: its requests are the only
way it touches the task container, and the trusted end runs in harbor's root process.

The candidate runs for real (`python -m vero.modeb.isolation.candidate_host`, in its own pid namespace);
the task environment is the tests' stand-in with `docker cp` semantics."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

import vero.modeb.isolation.candidate_host  # noqa: F401  (run as a module by the candidate process)
from tests.redteam.conftest import NEEDS_ROOT
from tests.support.mode_a import shared_tmp
from tests.support.processes import pids_naming
from tests.support.relay import HEADER, LocalEnvironment, drive, report
from vero.core.confine import Confinement
from vero.core.limits import CandidateLimits
from vero.modeb.isolation.spec import Isolation

pytestmark = NEEDS_ROOT

SENTINEL = "vero-redteam-relay-sentinel"
LEFT_MARKER = "vero-redteam-left-its-group"


class DockerCpEnvironment(LocalEnvironment):
    """`docker cp` semantics: a download into an existing directory lands inside it."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.downloads: list[tuple[str, Path]] = []

    async def download_file(self, source: str, target: Path) -> None:
        self.downloads.append((source, target))
        found = self.path(source)
        if target.is_dir():
            target = target / found.resolve().name
        if found.is_dir():
            shutil.copytree(found, target, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copy2(found, target, follow_symlinks=False)


AGENTS = {
    "escape": '''
class Agent(Base):
    async def run(self, instruction, environment, context):
        home = Path(os.environ["HOME"])
        for index, source in enumerate(("/x/..", "/..", "/", "/.", "/x/./..")):
            target = home / f"got-{index}"
            await self.attempt(source, environment.download_file(source, target))
            if target.exists():
                found = [str(p) for p in target.rglob("*")] if target.is_dir() else [target.read_text()]
                self.report[source + " got"] = found
        self.save()
''',
    "raw_dotdot": '''
class Agent(Base):
    async def run(self, instruction, environment, context):
        self.raw(environment, {"type": "request", "id": 7, "call": {"op": "upload", "kind": "file",
                 "target": "/x", "name": ".."}}, b"tar")
        await asyncio.sleep(30)
''',
    "detach": '''
import subprocess
class Agent(Base):
    async def run(self, instruction, environment, context):
        marker = os.environ["HOME"] + "-detached"
        subprocess.Popen(["/bin/sh", "-c", "sleep 300", marker], start_new_session=True)
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv("/bin/sh", ["/bin/sh", "-c", "sleep 300", marker])
            os._exit(0)
        self.report = {"marker": marker}
        self.save()
''',
    "leave": f'''
import ctypes, subprocess, sys
class Agent(Base):
    async def run(self, instruction, environment, context):
        os.setsid()
        ctypes.CDLL(None).prctl(1, 0)  # PR_SET_PDEATHSIG: none
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "{LEFT_MARKER}"])
        await asyncio.sleep(300)
''',
}


@pytest.fixture()
def world(tmp_path: Path) -> Iterator[SimpleNamespace]:
    with shared_tmp() as shared:
        worktree = shared / "worktree"
        worktree.mkdir()
        for name, body in AGENTS.items():
            (worktree / f"{name}_agent.py").write_text(HEADER + textwrap.dedent(body))
        scratch = shared / "work"
        # Its own pid namespace, as in the sidecar; as root here, because the candidate host imports
        # vero and pydantic, which the test runner keeps where other users cannot read them.
        confinement = Confinement(user=None, limits=CandidateLimits(), namespaces=True)
        isolation = Isolation(confinement=confinement, scratch_root=scratch)
        logs = tmp_path / "logs"
        logs.mkdir()
        container = tmp_path / "container"
        (container / "x").mkdir(parents=True)
        sentinel = Path(tempfile.gettempdir()) / SENTINEL
        sentinel.write_text("harbor's /tmp: other trials' results")
        try:
            yield SimpleNamespace(tmp=tmp_path, worktree=worktree, isolation=isolation, logs=logs,
                                  container=container)
        finally:
            sentinel.unlink()
            isolation.close()


def test_a_download_of_dot_dot_never_packs_the_trusted_side(world: SimpleNamespace) -> None:
    """Attack 2: `/x/..` gave the local name `..`, and pack() sent harbor's whole /tmp back."""
    environment = DockerCpEnvironment(world.container)
    asyncio.run(drive(world, "escape", environment))
    seen = report(world)
    for source in ("/x/..", "/..", "/", "/.", "/x/./.."):
        assert seen[source].startswith("RelayError: refused: download of"), (source, seen[source])
        assert "must end in a file name" in seen[source]
    assert not any(key.endswith(" got") for key in seen), seen
    assert environment.downloads == []  # refused before the environment was asked
    assert SENTINEL not in repr(seen)


def test_an_upload_named_dot_dot_ends_the_phase(world: SimpleNamespace) -> None:
    with pytest.raises(Exception, match="broke the protocol"):
        asyncio.run(drive(world, "raw_dotdot", LocalEnvironment(world.container), run_timeout=20))
    assert not (world.container / "x").with_name("..").resolve().joinpath("pwn").exists()




def test_what_a_candidate_agent_detaches_dies_with_it(world: SimpleNamespace) -> None:
    asyncio.run(drive(world, "detach", LocalEnvironment(world.container)))
    marker = report(world)["marker"]
    time.sleep(0.3)
    assert pids_naming(marker) == []


def test_a_candidate_agent_that_leaves_its_group_dies_when_it_is_closed(world: SimpleNamespace) -> None:
    """The candidate's process (its namespace's first) leaves the process group and clears its
    parent-death signal, then outstays its phase: closing it must still end it and its children."""
    try:
        with pytest.raises(asyncio.TimeoutError):
            asyncio.run(drive(world, "leave", LocalEnvironment(world.container), run_timeout=5))
        time.sleep(0.3)
        assert pids_naming(LEFT_MARKER) == []
    finally:
        for pid in pids_naming(LEFT_MARKER):
            os.kill(pid, 9)
