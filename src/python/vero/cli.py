"""The `vero` command line."""

from __future__ import annotations

import click

from vero import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vero", message="%(prog)s %(version)s")
def cli() -> None:
    """vero: build and evaluate sealed Harbor tasks for agent optimization."""


def main() -> None:
    """Console entry point."""
    cli()
