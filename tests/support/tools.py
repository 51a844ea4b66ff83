"""Locating the external tools (Docker engine, harbor CLI, base image) that tests drive."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

BASE_IMAGE = os.environ.get("VERO_BASE_IMAGE", "vero/base:bookworm")


def _unavailable(what: str, how: str) -> None:
    # The conftest turns every skip into a failure under CI=true.
    pytest.skip(f"{what} is not available: {how}")


def require_docker() -> None:
    """Skip (fail under CI) unless a Docker engine with Compose v2 answers."""
    if shutil.which("docker") is None:
        _unavailable("docker", "install Docker Engine")
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    if info.returncode != 0:
        _unavailable("the Docker daemon", f"'docker info' failed: {info.stderr.strip()[-300:]}")
    compose = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, check=False)
    if compose.returncode != 0:
        _unavailable("docker compose (v2)", "run build-support/setup.sh")


def require_base_image() -> str:
    """Return the local base image tag, skipping (failing under CI) when it was not built."""
    require_docker()
    probe = subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True, check=False)
    if probe.returncode != 0:
        _unavailable(f"the base image {BASE_IMAGE}", "run build-support/setup.sh")
    return BASE_IMAGE


def harbor_bin() -> Path:
    """Path of the harbor CLI installed by build-support/setup.sh."""
    configured = os.environ.get("VERO_HARBOR_BIN")
    candidate = Path(configured) if configured else None
    if candidate is None or not candidate.exists():
        found = shutil.which("harbor")
        if found is None:
            _unavailable("the harbor CLI", "run build-support/setup.sh (or set VERO_HARBOR_BIN)")
            raise AssertionError("unreachable")
        candidate = Path(found)
    return candidate


def runtime_pex() -> Path:
    """The real vero PEX: a `runtime_package_dependencies` of the test under Pants, else the one
    `./pants package src/python/vero:vero` left in dist/ (for runs outside Pants)."""
    for candidate in (Path("src.python.vero/vero.pex"),
                      Path(__file__).resolve().parents[2] / "dist/src.python.vero/vero.pex"):
        if candidate.is_file():
            return candidate.absolute()
    _unavailable("the vero PEX", "run ./pants package src/python/vero:vero")
    raise AssertionError("unreachable")
