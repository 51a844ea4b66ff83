"""The vero entry point answers --version, also as the `vero` that the docs put on PATH."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.support.benchmarks import BUILD_ROOT
from tests.support.tools import runtime_pex
from vero import __version__
from vero.cli import cli


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"vero {__version__}"


def _setup_wrapper() -> Path:
    """build-support/bin/vero as build-support/setup.sh wrote it (next to its harbor link)."""
    configured = os.environ.get("VERO_HARBOR_BIN")
    bin_dir = Path(configured).parent if configured else BUILD_ROOT / "build-support/bin"
    wrapper = bin_dir / "vero"
    if not wrapper.is_file():
        pytest.skip(f"{wrapper} is missing: run build-support/setup.sh")  # a failure under CI=true
    return wrapper


def test_the_documented_vero_on_path_runs_the_packaged_pex(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    (checkout / "build-support/bin").mkdir(parents=True)
    shutil.copy2(_setup_wrapper(), checkout / "build-support/bin/vero")
    env = {**os.environ, "PATH": f"{checkout / 'build-support/bin'}{os.pathsep}{os.environ['PATH']}"}
    missing = subprocess.run(["vero", "--version"], capture_output=True, text=True, env=env, cwd=tmp_path,
                             check=False)
    assert missing.returncode == 2
    assert missing.stderr.strip() == (f"vero: {checkout}/dist/src.python.vero/vero.pex is missing: run ./pants "
                                      f"package src/python/vero:vero in {checkout}")
    (checkout / "dist/src.python.vero").mkdir(parents=True)
    shutil.copy2(runtime_pex(), checkout / "dist/src.python.vero/vero.pex")
    found = subprocess.run(["vero", "--version"], capture_output=True, text=True, env=env, cwd=tmp_path,
                           check=False)
    assert found.returncode == 0 and found.stdout.strip() == f"vero {__version__}", found.stderr
