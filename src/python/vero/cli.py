"""The `vero` command line."""

from __future__ import annotations

import sys
from typing import Any

import click

from vero import __version__
from vero.compiler import commands as build_commands
from vero.errors import VeroError
from vero.serve import commands as serve_commands
from vero.session import commands as session_commands


class VeroGroup(click.Group):
    """Reports expected failures (VeroError) as one message and an exit code, no traceback.
    Every vero command line's group is one (the Mode B runner's too)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except VeroError as exc:
            self.report(exc)
            sys.exit(exc.exit_code)

    def report(self, exc: VeroError) -> None:
        """Print an expected failure to stderr; a subclass may add what its users may read."""
        click.echo(exc.render(), err=True)


@click.group(cls=VeroGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vero", message="%(prog)s %(version)s")
def cli() -> None:
    """vero: build and evaluate sealed Harbor tasks for agent optimization."""


@cli.group(cls=VeroGroup)
def harbor() -> None:
    """Compile, serve and evaluate Harbor optimization tasks."""


build_commands.register(harbor)
serve_commands.register(harbor)
session_commands.register(harbor)
cli.add_command(session_commands.report_command)


def main() -> None:
    """Console entry point."""
    cli()
