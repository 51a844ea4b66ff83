"""The vero entry point answers --version."""

from __future__ import annotations

from click.testing import CliRunner

from vero import __version__
from vero.cli import cli


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"vero {__version__}"
