"""CLI commands of this package, attached to the `vero harbor` group by vero.cli."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    """Attach this package's commands to `group`."""
