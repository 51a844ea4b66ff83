"""Bench: the cost of Mode B isolation (vero.modeb.isolation.trusted_side) against running the agent in process.

The same agent runs twice per round on the same environment stand-in (commands are real `bash -c`
processes in a scratch dir, uploads are copies): once in this process (what harbor does without
isolation, the floor) and once through vero's isolation (a candidate process, every call relayed
over the pipe, files packed, checked and unpacked). It does N execs of `true`, then uploads and
downloads a directory of F files totalling S MiB. Prints the best of R rounds of each and the
ratios isolated / in-process. The isolated side runs as the same user here (no setpriv), so the
ratio measures the relay itself.

Run: ./pants run bench/relay.py -- [--execs N] [--files F] [--mib S] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import vero.modeb.isolation.candidate_host  # noqa: F401  (run as a module by the candidate process)
from bench.results import record
from vero.core.confine import unconfined
from vero.modeb.isolation.protocol import Start
from vero.modeb.isolation.spec import Isolation
from vero.modeb.isolation.trusted_side import CandidateProcess

AGENT = '''
import os, time
from pathlib import Path


class Agent:
    def __init__(self, logs_dir, **kwargs):
        self.logs_dir = logs_dir

    @staticmethod
    def name():
        return "bench"

    def version(self):
        return "1"

    async def setup(self, environment):
        return None

    async def run(self, instruction, environment, context):
        execs, payload = instruction.split("|")
        started = time.perf_counter()
        for _ in range(int(execs)):
            await environment.exec("true")
        middle = time.perf_counter()
        await environment.upload_dir(payload, "/payload")
        back = Path(os.environ.get("BENCH_BACK") or Path(os.environ["HOME"]) / "back")
        await environment.download_dir("/payload", back)
        (self.logs_dir / "times.txt").write_text(f"{middle - started} {time.perf_counter() - middle}")
'''


class Environment:
    """Harbor's environment API on a scratch dir: commands are real processes, files are copies."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.default_user = None
        self.task_env_config = None

    async def exec(self, command: str, cwd: str | None = None, env: dict[str, str] | None = None,
                   timeout_sec: int | None = None, user: str | int | None = None) -> Any:
        proc = await asyncio.create_subprocess_exec("bash", "-c", command, cwd=self.root,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        return SimpleNamespace(stdout=out.decode(), stderr=err.decode(), return_code=proc.returncode)

    async def upload_dir(self, source: Path, target: str) -> None:
        shutil.copytree(source, self.root / target.lstrip("/"), dirs_exist_ok=True)

    async def download_dir(self, source: str, target: Path) -> None:
        shutil.copytree(self.root / source.lstrip("/"), target, dirs_exist_ok=True)


def _payload(directory: Path, files: int, mib: float) -> None:
    directory.mkdir()
    size = int(mib * (1 << 20) / files)
    for index in range(files):
        (directory / f"f{index:05d}.bin").write_bytes(os.urandom(size))


async def _in_process(work: Path, instruction: str) -> tuple[float, float]:
    module: dict[str, Any] = {}
    exec(compile(AGENT, "bench_agent.py", "exec"), module)
    logs = work / "logs-in-process"
    logs.mkdir()
    agent = module["Agent"](logs_dir=logs)
    os.environ["BENCH_BACK"] = str(work / "back-in-process")
    try:
        await agent.run(instruction, Environment(work / "container-a"), None)
    finally:
        del os.environ["BENCH_BACK"]
    calls, files = (logs / "times.txt").read_text().split()
    return float(calls), float(files)


async def _isolated(work: Path, worktree: Path, isolation: Isolation,
                    instruction: str) -> tuple[float, float]:
    # The candidate process needs pydantic: under `./pants run` it lives on this process's sys.path.
    spec = isolation.spec("bench_agent:Agent", worktree)
    extra = [path for path in sys.path if os.path.isdir(path)]
    spec = spec.model_copy(update={"pythonpath": [*spec.pythonpath, *extra]})
    logs = work / "logs-isolated"
    logs.mkdir()
    process = await CandidateProcess.start(spec, Start(candidate=spec.candidate), logging.getLogger("bench"))
    try:
        await process.ready()
        environment = Environment(work / "container-b")
        await process.phase("setup", environment, logs_dir=logs)
        await process.phase("run", environment, logs_dir=logs, instruction=instruction, context=None)
    finally:
        await process.close(logs)
    calls, files = (logs / "times.txt").read_text().split()
    return float(calls), float(files)


def main() -> None:
    """Parse arguments, run the rounds, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--execs", type=int, default=300)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--mib", type=float, default=32.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vero-bench-relay-") as tmp:
        root = Path(tmp)
        worktree = root / "worktree"
        worktree.mkdir()
        (worktree / "bench_agent.py").write_text(textwrap.dedent(AGENT))
        payload = root / "payload"
        _payload(payload, args.files, args.mib)
        isolation = Isolation(confinement=unconfined(), scratch_root=root / "scratch")
        instruction = f"{args.execs}|{payload}"
        best_in = [float("inf")] * 2
        best_iso = [float("inf")] * 2
        try:
            for round_index in range(args.rounds):
                for name in ("a", "b"):
                    shutil.rmtree(root / f"round-{name}", ignore_errors=True)
                    (root / f"round-{name}").mkdir()
                    (root / f"round-{name}" / f"container-{name}").mkdir()
                # Interleaved: the same machine state for both sides of every round.
                in_process = asyncio.run(_in_process(root / "round-a", instruction))
                started = time.perf_counter()
                isolated = asyncio.run(_isolated(root / "round-b", worktree, isolation, instruction))
                total = time.perf_counter() - started
                best_in = [min(a, b) for a, b in zip(best_in, in_process)]
                best_iso = [min(a, b) for a, b in zip(best_iso, isolated)]
                print(f"round {round_index + 1}: in-process exec {in_process[0]:.3f} s, "
                      f"files {in_process[1]:.3f} s;"
                      f" isolated exec {isolated[0]:.3f} s, files {isolated[1]:.3f} s (process start to end "
                      f"{total:.3f} s)")
        finally:
            isolation.close()
    per_call_in = best_in[0] / args.execs * 1000
    per_call_iso = best_iso[0] / args.execs * 1000
    print(f"exec x{args.execs}: in-process {per_call_in:.2f} ms/call, isolated {per_call_iso:.2f} ms/call, "
          f"ratio {best_iso[0] / best_in[0]:.2f} (+{per_call_iso - per_call_in:.2f} ms/call)")
    print(f"upload+download of {args.files} files, {args.mib:g} MiB: in-process {best_in[1]:.3f} s, "
          f"isolated {best_iso[1]:.3f} s, ratio {best_iso[1] / best_in[1]:.2f}")
    record("relay", "exec, isolated / in-process", best_iso[0] / best_in[0],
           f"{args.execs} execs, +{per_call_iso - per_call_in:.2f} ms/call")
    record("relay", "file transfer, isolated / in-process", best_iso[1] / best_in[1],
           f"{args.files} files, {args.mib:g} MiB up+down")


if __name__ == "__main__":
    main()
