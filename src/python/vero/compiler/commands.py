"""CLI commands of this package, attached to the `vero harbor` group by vero.cli:
`build`, `verify`, `run` and `describe`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from vero.compiler.compiler import build_task
from vero.compiler.description import describe
from vero.compiler.identity import task_digest
from vero.compiler.loader import load_build_config
from vero.compiler.run import run_task
from vero.compiler.seal import load_seal, sha256_file
from vero.compiler.seal import verify as verify_seal
from vero.errors import VeroError
from vero.termination import sigterm_unwinds

_CONFIG = click.option("-c", "--config", "config", required=True,
                       type=click.Path(path_type=Path, dir_okay=False),
                       help="build.yaml of the benchmark")
_RUNTIME_PEX = click.option("--runtime-pex", type=click.Path(path_type=Path, dir_okay=False), default=None,
                            help="vero PEX to bake into the images (default: the PEX running this command)")
_DRY_RUN = click.option("--dry-run/--no-dry-run", default=True, show_default=True,
                        help="Mode A: run the baseline on a few rows at build time (the import and scorer "
                             "checks run either way)")


@click.command("build")
@_CONFIG
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="task directory to write (new, empty, or written by an earlier build)")
@_RUNTIME_PEX
@_DRY_RUN
@click.option("--base-image-main", default=None,
              help="base image of main when build.yaml sets no base_image_main (a repository-wide default)")
@click.option("--base-image-sidecar", default=None,
              help="base image of the sidecar when build.yaml sets no base_image_sidecar")
def build_command(config: Path, out: Path, runtime_pex: Path | None, dry_run: bool,
                  base_image_main: str | None, base_image_sidecar: str | None) -> None:
    """Compile build.yaml into a sealed Harbor task directory."""
    with sigterm_unwinds():   # a stopped build removes its staging directory
        result = build_task(config, out, runtime_pex, dry_run=dry_run,
                            base_images=(base_image_main, base_image_sidecar))
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    for note in result.notes:
        click.echo(f"checked: {note}")
    click.echo(f"built {result.out}: {result.n_files} files, baseline {result.commit}, "
               f"seal {result.root_digest}, build.yaml sha256 {result.build_config_sha256}")


@click.command("verify")
@click.argument("task_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("-c", "--config", "config", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="also check that the task was compiled from this build.yaml (same sha256)")
def verify_command(task_dir: Path, config: Path | None) -> None:
    """Check a compiled task against its SEAL.json (exit 1 naming what changed)."""
    report = verify_seal(task_dir)
    compiled_from = report.build_config_sha256 or "not recorded (built by an older vero)"
    if report.ok:
        # The task digest is what session archives name the task by (task.json).
        click.echo(f"ok: {report.n_files} files match the seal {report.root}; compiled from a build.yaml "
                   f"with sha256 {compiled_from}; task digest {task_digest(load_seal(task_dir).files)}")
        if config is not None:
            _check_compiled_from(task_dir, config, report.build_config_sha256)
        return
    for label, paths in (("edited", report.edited), ("missing", report.missing), ("extra", report.extra)):
        for path in paths:
            click.echo(f"{label}: {path}", err=True)
    if report.root_mismatch:
        click.echo("edited: SEAL.json (its root digest does not match its file list)", err=True)
    click.echo(f"error: {task_dir}: does not match its seal", err=True)
    sys.exit(1)


def _check_compiled_from(task_dir: Path, config: Path, recorded: str | None) -> None:
    try:
        current = sha256_file(config)
    except OSError as exc:
        raise VeroError(f"cannot read {config}: {exc.strerror}", where="-c", fix="pass the path of build.yaml",
                        exit_code=1) from None
    if current != recorded:
        raise VeroError(f"was compiled from another build.yaml (sha256 {recorded}), not from {config} "
                        f"(sha256 {current}): it holds an earlier build, e.g. because the last build failed",
                        where=str(task_dir), fix=f"rebuild it from {config}", exit_code=1)
    click.echo(f"ok: compiled from {config}")


@click.command("run", context_settings={"ignore_unknown_options": True})
@_CONFIG
@click.option("-a", "--agent", required=True, help="the optimizer agent (harbor -a)")
@click.option("-m", "--model", default=None, help="the optimizer's model (harbor -m)")
@_RUNTIME_PEX
@_DRY_RUN
@click.option("--harbor", "harbor_bin", default=None,
              help="harbor CLI to run (default: $VERO_HARBOR_BIN, else `harbor` on PATH)")
@click.argument("harbor_args", nargs=-1, type=click.UNPROCESSED)
def run_command(config: Path, agent: str, model: str | None, runtime_pex: Path | None, dry_run: bool,
                harbor_bin: str | None, harbor_args: tuple[str, ...]) -> None:
    """Compile into a temporary dir and `harbor run` it; extra arguments go to harbor."""
    sys.exit(run_task(config, agent, model, harbor_args, runtime_pex=runtime_pex, harbor=harbor_bin,
                      dry_run=dry_run))


@click.command("describe")
@_CONFIG
def describe_command(config: Path) -> None:
    """Print, as JSON, the inputs and secret names build.yaml names (for build tools)."""
    click.echo(describe(load_build_config(config).config).model_dump_json())


def register(group: click.Group) -> None:
    """Attach this package's commands to `group`."""
    group.add_command(build_command)
    group.add_command(verify_command)
    group.add_command(run_command)
    group.add_command(describe_command)
