"""CLI commands of this package, attached to the `vero harbor` group by vero.cli:
`serve` (the sidecar), `eval`, `status`, `submit` (the optimizer's client) and `finalize`
(the verifier's client, which always leaves a reward file behind)."""

from __future__ import annotations

import json
import math
import sys
import traceback
from pathlib import Path

import click
from pydantic import BaseModel, ValidationError

from vero.container import CONTAINER
from vero.core.engine import EvalRequest
from vero.errors import VeroError
from vero.fsutil import atomic_write_json
from vero.models import describe
from vero.serve.api import EvalResponse, FinalizeReport, StatusResponse, Submission, SubmitRequest
from vero.serve.client import SidecarClient, sidecar_url
from vero.serve.config import load_serve_config
from vero.serve.failure import clear_failure, record_failure
from vero.serve.token import read_token


def _print(reply: BaseModel) -> None:
    click.echo(json.dumps(reply.model_dump(mode="json"), indent=2, sort_keys=True))


@click.command("serve")
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path),
              help="serve.json written by `vero harbor build`")
@click.option("--host", default=None, help="override the config's listen address")
@click.option("--port", default=None, type=click.IntRange(1, 65535), help="override the config's port")
def serve_command(config_path: Path, host: str | None, port: int | None) -> None:
    """Run the trusted eval sidecar until SIGTERM. If it cannot start (or stops on an error), the
    reason is also written to `paths.log_dir`, which the task has Harbor collect."""
    from vero.serve.app import serve  # the server stack is only needed here

    log_dir = Path(CONTAINER.log_dir)
    try:
        config = load_serve_config(config_path)
        log_dir = Path(config.paths.log_dir)
        clear_failure(log_dir)
        serve(config, host=host, port=port)
    except VeroError as exc:
        record_failure(log_dir, exc.render())
        raise
    except Exception:
        record_failure(log_dir, traceback.format_exc())
        raise


@click.command("eval")
@click.option("--split", required=True, help="split to evaluate (see `vero harbor status`)")
@click.option("--commit", default=None, help=f"commit SHA or branch of {CONTAINER.repo_dir} (default: HEAD)")
@click.option("--sample-id", "sample_ids", multiple=True, help="evaluate only these samples (repeatable)")
@click.option("--num-samples", type=int, default=None, help="evaluate the first N samples of the split")
@click.option("--dataset-id", default=None, help="the dataset id from `vero harbor status` (optional)")
def eval_command(split: str, commit: str | None, sample_ids: tuple[str, ...], num_samples: int | None,
                 dataset_id: str | None) -> None:
    """Evaluate a commit on a split; print the aggregate and the remaining budget."""
    try:
        body = EvalRequest(split=split, commit=commit, sample_ids=list(sample_ids) or None, num_samples=num_samples,
                           dataset_id=dataset_id)
    except ValidationError as exc:
        raise VeroError(f"invalid evaluation request: {describe(exc)}", where="command line",
                        fix="see `vero harbor eval --help`") from None
    reply = SidecarClient(sidecar_url()).call("POST", "/eval", EvalResponse, body, timeout=None)
    _print(reply)
    if reply.warning:
        click.echo(f"warning: {reply.warning}", err=True)


@click.command("status")
def status_command() -> None:
    """Show splits, tiers, budgets, the baseline commit and the current submission."""
    _print(SidecarClient(sidecar_url()).call("GET", "/status", StatusResponse))


@click.command("submit")
@click.option("--commit", default=None, help=f"commit SHA or branch of {CONTAINER.repo_dir} (default: HEAD)")
def submit_command(commit: str | None) -> None:
    """Nominate a commit as the final candidate."""
    _print(SidecarClient(sidecar_url()).call("POST", "/submit", Submission, SubmitRequest(commit=commit), timeout=None))


def _write(path: Path, payload: object) -> None:
    try:
        atomic_write_json(path, payload)
    except OSError as exc:
        raise VeroError(f"cannot write {path.name}: {exc.strerror}", where=str(path),
                        fix="check that the directory exists and is writable (run as root)",
                        exit_code=1) from None


def _rewards(report: FinalizeReport) -> dict[str, float]:
    # Harbor reads reward.json as strict JSON: NaN or Infinity would lose every reward.
    if not all(math.isfinite(value) for value in report.rewards.values()):
        raise VeroError("the sidecar's finalize answer has a reward that is not a finite number",
                        where="POST /finalize", fix="see the sidecar log", exit_code=1)
    return report.rewards


@click.command("finalize")
@click.option("--token-file", required=True, type=click.Path(path_type=Path), help="the admin token file")
@click.option("--output", required=True, type=click.Path(path_type=Path),
              help="reward file to write, e.g. /logs/verifier/reward.json")
@click.option("--reward-key", "reward_keys", multiple=True,
              help="reward keys that get a 0.0 floor if the sidecar cannot answer "
                   "(repeatable; default: reward)")
@click.option("--timeout", type=click.FloatRange(min=1), default=None,
              help="seconds to wait for the sidecar; then the floors are written (default: wait)")
def finalize_command(token_file: Path, output: Path, reward_keys: tuple[str, ...], timeout: float | None) -> None:
    """Select and score the final candidate; always write the reward file (0.0 floors on failure)."""
    floors = dict.fromkeys(reward_keys or ("reward",), 0.0)
    try:
        client = SidecarClient(sidecar_url(), read_token(token_file))
        report = client.call("POST", "/finalize", FinalizeReport, timeout=timeout)
        rewards = {**dict.fromkeys(reward_keys, 0.0), **_rewards(report)}
    except VeroError as exc:
        click.echo(exc.render(), err=True)
        _write(output, floors)
        click.echo(f"wrote 0.0 floors to {output}", err=True)
        sys.exit(exc.exit_code or 1)
    _write(output, rewards)
    if report.baseline is not None:
        _write(output.with_name("baseline.json"), report.baseline)
    # The whole report (candidate, source, ranking) stays with the trial: the sidecar's own copy
    # goes away with its volume.
    _write(output.with_name("finalize.json"), report.model_dump(mode="json"))
    for error in report.errors:
        click.echo(f"warning: {error}", err=True)
    _print(report)


def register(group: click.Group) -> None:
    """Attach this package's commands to `group`."""
    for command in (serve_command, eval_command, status_command, submit_command, finalize_command):
        group.add_command(command)
