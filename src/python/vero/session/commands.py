"""CLI commands of session archives: `vero report` (root group), `vero harbor archive` and
`vero harbor recover`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from rich.console import Console

from vero.core.redaction import Redactor
from vero.errors import VeroError
from vero.fsutil import atomic_write_bytes
from vero.serve.client import SidecarClient, sidecar_url
from vero.serve.config import load_serve_config
from vero.serve.token import read_token
from vero.session.admin import sidecar_archive
from vero.session.locate import report_for, session_at
from vero.session.recover import choose_commit, recover_files, recover_patch


def _declared_secrets(names: list[str]) -> dict[str, str]:
    # Without the values nothing can be redacted: refuse rather than write them out.
    missing = [name for name in names if name not in os.environ]
    if missing:
        raise VeroError(f"declared secrets are not set: {', '.join(missing)}", where="environment",
                        fix="run the archive command inside the eval sidecar (its environment has them)")
    return {name: os.environ[name] for name in names}


def _write(path: Path, data: bytes, mode: int) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write_bytes(path, data, mode)
    except OSError as exc:
        raise VeroError(f"cannot write the session archive: {exc.strerror or exc}", where=str(path),
                        fix="check that the directory is writable and has free space") from None


@click.command("archive")
@click.option("--output", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="the session.tar.gz to write")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              help="serve.json: read the admin volume directly (as root in the eval sidecar; no token)")
@click.option("--token-file", type=click.Path(path_type=Path, dir_okay=False),
              help="the admin token: ask the sidecar at VERO_EVAL_URL (the verifier's way)")
@click.option("--timeout", type=click.FloatRange(min=1), default=120.0, show_default=True,
              help="seconds to wait for the sidecar (with --token-file)")
def archive_command(output: Path, config_path: Path | None, token_file: Path | None, timeout: float) -> None:
    """Write the session archive: every commit, evaluation, the ledger and the finalize report."""
    if (config_path is None) == (token_file is None):
        raise VeroError("give exactly one of --config and --token-file", where="command line",
                        fix="--config serve.json inside the sidecar, --token-file in the verifier")
    if config_path is not None:
        config = load_serve_config(config_path)
        redactor = Redactor(_declared_secrets(config.secrets))
        data = sidecar_archive(config, redactor)
        _write(output, data, 0o600)
    else:
        assert token_file is not None
        data = SidecarClient(sidecar_url(), read_token(token_file)).download("/session", timeout=timeout)
        _write(output, data, 0o644)
    click.echo(f"wrote {output} ({len(data)} bytes)")


@click.command("report")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.option("--html", "html_file", type=click.Path(path_type=Path, dir_okay=False),
              help="also write a self-contained HTML page with plots")
def report_command(path: Path, as_json: bool, html_file: Path | None) -> None:
    """Summarise a session archive, a Harbor trial dir or a whole jobs dir."""
    report = report_for(path)
    if html_file is not None:
        from vero.session.html import write_html  # the plotting library is only needed here

        write_html(html_file, report)
    if as_json:
        click.echo(json.dumps(report.model_dump(mode="json"), indent=2, sort_keys=True))
    else:
        console = Console(width=None if sys.stdout.isatty() else 160)
        from vero.session.terminal import render

        render(console, report)
    if html_file is not None:
        click.echo(f"wrote {html_file}", err=True)


@click.command("recover")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--winner", is_flag=True, help="the commit finalize selected")
@click.option("--commit", default=None, help="a commit of the session (SHA or unique prefix)")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              help="directory to write the files to (new, empty, or an earlier recover's); "
                   "with --patch, the patch file (new)")
@click.option("--patch", is_flag=True, help="write the diff against the baseline instead of the files")
def recover_command(path: Path, winner: bool, commit: str | None, out: Path, patch: bool) -> None:
    """Materialise a candidate's files (or its diff) from a session archive or a trial dir."""
    if winner == (commit is not None):
        raise VeroError("give exactly one of --winner and --commit", where="command line",
                        fix="--winner for finalize's choice, --commit SHA for any commit of the session")
    session = session_at(path)
    sha = choose_commit(session, winner=winner, commit=commit)
    if patch:
        done = recover_patch(session, sha, out)
        click.echo(f"wrote the diff of {sha} against the baseline {session.task.baseline_commit} to {done.path}")
    else:
        done = recover_files(session, sha, out)
        click.echo(f"wrote {done.files} files of {sha} to {done.path}")


def register(harbor: click.Group) -> None:
    """Attach `archive` and `recover` to the `vero harbor` group."""
    harbor.add_command(archive_command)
    harbor.add_command(recover_command)
