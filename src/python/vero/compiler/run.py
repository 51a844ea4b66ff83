"""`vero harbor run`: compile into a temporary directory, `harbor run` it, always clean up."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from vero.compiler.compiler import build_task
from vero.compiler.config import BuildConfig
from vero.compiler.loader import load_build_config
from vero.errors import VeroError
from vero.modeb.harbor_command import check_docker_compose, find_harbor
from vero.termination import sigterm_unwinds


def _uses_docker(harbor_args: Sequence[str]) -> bool:
    for index, arg in enumerate(harbor_args):
        for flag in ("-e", "--env"):
            if arg == flag and index + 1 < len(harbor_args):
                return harbor_args[index + 1] == "docker"
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1] == "docker"
    return True  # harbor's default environment


def check_base_images(config: BuildConfig) -> None:
    """Both base images must exist locally: nothing can be pulled and harbor would fail late."""
    missing = []
    for image in dict.fromkeys([config.base_image_main, config.sidecar_image()]):
        probe = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", image],
                               capture_output=True, text=True, check=False)
        if probe.returncode != 0:
            if "daemon" in probe.stderr.lower() and "connect" in probe.stderr.lower():
                raise VeroError(f"the Docker daemon is not reachable: {probe.stderr.strip()}",
                                where="harbor run", fix="start Docker, or check DOCKER_HOST")
            missing.append(image)
    if missing:
        raise VeroError(f"base image(s) not present locally: {', '.join(missing)}", where="harbor run",
                        fix="build them first (build-support/setup.sh builds vero/base:bookworm), or change "
                            "base_image_main / base_image_sidecar in build.yaml")


def run_task(config_path: Path, agent: str, model: str | None, harbor_args: Sequence[str], *,
             runtime_pex: Path | None = None, harbor: str | None = None,
             env: Mapping[str, str] | None = None, dry_run: bool = True) -> int:
    """Compile `config_path` into a temporary dir, run `harbor run` on it, return harbor's exit code.

    The temporary dir is removed whatever happens, also when this process is interrupted.
    """
    env = os.environ if env is None else env
    harbor_bin = find_harbor(harbor, env)
    loaded = load_build_config(config_path)
    if _uses_docker(harbor_args):
        check_docker_compose(env, where="harbor run")
        check_base_images(loaded.config)
    with sigterm_unwinds():
        scratch = Path(tempfile.mkdtemp(prefix="vero-run-"))
        try:
            task_dir = scratch / loaded.config.name.split("/")[1]
            result = build_task(config_path, task_dir, runtime_pex, env, dry_run=dry_run)
            for warning in result.warnings:
                print(f"warning: {warning}", file=sys.stderr)
            argv = [harbor_bin, "run", "-p", str(task_dir), "-a", agent]
            if model:
                argv += ["-m", model]
            argv += list(harbor_args)
            return _run_forwarding_signals(argv, env)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _run_forwarding_signals(argv: list[str], env: Mapping[str, str]) -> int:
    """Run `argv` and wait for it, whatever signal arrives, so the caller can clean up after it.

    SIGTERM is passed on. Ctrl-C already reaches harbor (same process group), so SIGINT is not
    forwarded a second time: harbor then cancels its trials and tears its containers down itself.
    """
    proc = subprocess.Popen(argv, env=dict(env))

    def forward(signum: int, _frame: FrameType | None) -> None:
        proc.send_signal(signum)

    def wait_for_child(_signum: int, _frame: FrameType | None) -> None:
        return None

    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
                signal.SIGINT: signal.signal(signal.SIGINT, wait_for_child)}
    try:
        return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
