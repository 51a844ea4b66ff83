"""The Mode B runner (`./pants run //runner -- ...`): score one candidate commit on one split.

`run` checks the commit out into a temporary worktree, runs the nested `harbor run` with a live
progress bar, prints a per-task table and the aggregate, and persists every sample result
under `--results-dir` so a re-run resumes. `collate` re-collates an existing jobs directory.
Exit codes: 0 scored, 2 bad input, 3 harbor ran no trial at all (nothing saved; retry), 130
interrupted.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import click
from rich.console import Console

from vero.cli import VeroGroup
from vero.core.records import SampleResult, aggregate
from vero.core.sample_store import SampleStore
from vero.core.strategy import EvaluationContext, InfrastructureFailure
from vero.errors import VeroError
from vero.fsutil import atomic_write_bytes, remove_unfinished_writes
from vero.modeb.collate import RunNote, collate
from vero.modeb.config import is_registry_source
from vero.modeb.harbor_command import harbor_from_env, preflight
from vero.modeb.runner import display
from vero.modeb.runner.inputs import BenchmarkInput, from_build_yaml, from_flags, from_harbor_yaml
from vero.modeb.runner.results_owner import ResultsOwner, claim
from vero.modeb.runner.worktree import checkout, resolve_commit
from vero.modeb.strategy import HarborInterrupted, ModeBStrategy
from vero.modeb.task_source import TaskSource
from vero.modeb.trials import job_dirs, read_jobs
from vero.session.runner import ARCHIVE_NAME, runner_archive

EXIT_INTERRUPTED = 130
# The candidate's checkout, inside the locked results dir: a killed runner's is removed by the next.
CHECKOUT_DIR = ".candidate-checkout"


class RunnerGroup(VeroGroup):
    """vero's group (expected failures are one message and an exit code); harbor's stderr follows a
    run that produced nothing, and an interrupt exits 130."""

    def report(self, exc: VeroError) -> None:
        """The message, and for an `InfrastructureFailure` harbor's stderr: the runner is the
        developer's own tool, so what harbor said is theirs to read."""
        super().report(exc)
        if isinstance(exc, InfrastructureFailure) and exc.detail:
            click.echo(f"harbor's stderr ends with:\n{exc.detail}", err=True)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("interrupted: finished tasks were saved; run the same command again to resume",
                       err=True)
            sys.exit(EXIT_INTERRUPTED)


def _source_options(require_agent: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        options = [
            click.option("--build-config", type=click.Path(path_type=Path),
                         help="a Mode B build.yaml (validated as `vero harbor build` does)"),
            click.option("--harbor-config", type=click.Path(path_type=Path),
                         help="a YAML file with `harbor:` (HarborConfig) and `partition:`"),
            click.option("--partition", "partition_file", type=click.Path(path_type=Path),
                         help="a YAML/JSON {split: [task names]}; needs --task-source"
                              + (" and --agent" if require_agent else "")),
            click.option("--task-source", help="local Harbor task/dataset dir, registry dataset name@version "
                                               "or Harbor Hub package org/name@version"),
            click.option("--registry-path", type=click.Path(path_type=Path),
                         help="a local Harbor registry.json holding the name@version dataset"),
            click.option("--reward-key", help="reward key to score by (else pass, reward, mean of all)"),
            click.option("--aggregate-attempts", type=click.Choice(["best", "mean"]),
                         help="best trial per task, or mean over scored attempts"),
            click.option("--split", required=True, help="the split to score"),
            click.option("--json", "as_json", is_flag=True,
                         help="print one JSON object per sample, then {\"aggregate\": ...}"),
        ]
        for option in reversed(options):
            func = option(func)
        return func
    return decorate


def _load(build_config: Path | None, harbor_config: Path | None, partition_file: Path | None,
          task_source: str | None, agent: str | None, registry_path: Path | None) -> BenchmarkInput:
    chosen = [name for name, value in (("--build-config", build_config), ("--harbor-config", harbor_config),
                                       ("--partition", partition_file)) if value is not None]
    if len(chosen) != 1:
        raise VeroError("give exactly one of --build-config, --harbor-config, --partition "
                        f"(got {', '.join(chosen) or 'none'})", where="command line", fix="see --help")
    if task_source is not None and not is_registry_source(task_source):
        task_source = str(Path(task_source).resolve())   # flags are relative to the current directory
    if build_config is not None:
        loaded = from_build_yaml(build_config)
    elif harbor_config is not None:
        loaded = from_harbor_yaml(harbor_config)
    else:
        assert partition_file is not None
        loaded = from_flags(partition_file, task_source, agent)
    registry = str(registry_path.resolve()) if registry_path is not None else None
    return loaded.with_overrides({"task_source": task_source, "agent": agent, "registry_path": registry})


def _console(stderr: bool = False) -> Console:
    # Rich assumes 80 columns when not writing to a terminal; logs and pipes read better wider.
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 160)


def _command(value: str | None) -> list[str] | None:
    """A path to an executable stays one argument (it may contain spaces); else a shell-like split."""
    if not value:
        return None
    return [str(Path(value).absolute())] if Path(value).is_file() else shlex.split(value)


def _inside(root: Path, relative: str) -> Path:
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_dir():
        raise VeroError(f"--agent-path {relative!r} is not a directory of the candidate commit",
                        where=str(root), fix="pass a directory inside the repository (default: its root)")
    return path


@contextmanager
def _exclusive(directory: Path) -> Iterator[None]:
    """One runner per results dir: two would race on the same tasks."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise VeroError("another runner is using this results directory", where=str(directory),
                            fix="wait for it to finish, or pass a different --results-dir") from None
        yield


def _print_results(console: Console, results: list[SampleResult], title: str, as_json: bool) -> None:
    agg = aggregate(results)
    if as_json:
        click.echo(display.json_lines(results, agg))
        return
    console.print(display.results_table(results, title))
    console.print(display.aggregate_table(agg))


@click.group(cls=RunnerGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """vero Mode B runner: score a candidate's Harbor agent with a nested `harbor run`."""


@cli.command()
@_source_options(require_agent=True)
@click.option("--agent", help="module:Class of the candidate's Harbor agent")
@click.option("--model", "-m", help="model passed to harbor -m")
@click.option("--environment", "-e", help="Harbor environment (docker, modal, daytona, ...)")
@click.option("--n-concurrent", "-n", type=int, help="concurrent trials (harbor -n)")
@click.option("--n-attempts", "-k", type=int, help="attempts per task (harbor -k)")
@click.option("--max-retries", "-r", type=int, help="retries per trial (harbor -r)")
@click.option("--timeout", type=float, help="seconds for the whole harbor run")
@click.option("--harbor-command",
              help="how to invoke harbor: a path, or a command line such as 'uvx harbor==0.24.0' "
                   "[default: $VERO_HARBOR_BIN (one executable), else harbor_command of the config]")
@click.option("--extra-arg", "extra_args", multiple=True, help="extra argument for harbor run (repeatable)")
@click.option("--repo", type=click.Path(path_type=Path), default=Path("."), show_default=True,
              help="the candidate's git repository")
@click.option("--commit", default="HEAD", show_default=True, help="the candidate commit (SHA, branch or tag)")
@click.option("--agent-path", default=".", show_default=True,
              help="directory inside the repo that holds the agent package (put on PYTHONPATH)")
@click.option("--sample-id", "sample_ids", multiple=True,
              help="score only these tasks of the split (repeatable)")
@click.option("--results-dir", type=click.Path(path_type=Path),
              help="where sample results and Harbor jobs go [default: .vero/runs/<split>-<commit12>]")
def run(build_config: Path | None, harbor_config: Path | None, partition_file: Path | None,
        task_source: str | None, registry_path: Path | None, reward_key: str | None,
        aggregate_attempts: str | None, split: str, as_json: bool, agent: str | None, model: str | None,
        environment: str | None, n_concurrent: int | None, n_attempts: int | None, max_retries: int | None,
        timeout: float | None, harbor_command: str | None, extra_args: tuple[str, ...], repo: Path, commit: str,
        agent_path: str, sample_ids: tuple[str, ...], results_dir: Path | None) -> None:
    """Score COMMIT of REPO on one split; re-running the same command resumes."""
    loaded = _load(build_config, harbor_config, partition_file, task_source, agent, registry_path).with_overrides({
        "reward_key": reward_key, "aggregate_attempts": aggregate_attempts, "model": model,
        "environment": environment, "n_concurrent": n_concurrent, "n_attempts": n_attempts,
        "max_retries": max_retries, "timeout": timeout,
        "harbor_command": _command(harbor_command) or harbor_from_env(os.environ),
        "extra_args": list(extra_args) or None})
    config = loaded.harbor_config()
    names = loaded.split(split)
    selected = list(dict.fromkeys(sample_ids)) or names
    preflight(config, os.environ)   # a missing harbor or Compose fails before any checkout
    sha = resolve_commit(repo, commit)
    results_dir = results_dir or Path(".vero") / "runs" / f"{split}-{sha[:12]}"
    strategy = ModeBStrategy(config, {split: names}, base_dir=loaded.base_dir,
                             jobs_dir=(results_dir / "jobs").resolve())
    strategy.refs_for(split, selected)   # an unknown --sample-id fails before the checkout
    console = _console(stderr=True)
    with _exclusive(results_dir):
        # The lock is ours: any temp file here is a write of a runner that was killed.
        for directory in (results_dir, results_dir / "samples", results_dir / "jobs"):
            remove_unfinished_writes(directory)
        claim(results_dir, ResultsOwner(commit=sha, agent=config.agent, model=config.model))
        with checkout(repo, sha, results_dir.resolve() / CHECKOUT_DIR) as checkout_dir:
            worktree = _inside(checkout_dir, agent_path)
            store = SampleStore(results_dir / "samples")
            console.print(f"scoring {sha[:12]} on split {split!r} ({len(selected)} tasks) with {config.agent}; "
                          f"results in {results_dir}")
            with display.progress_bar(console, split) as progress:
                context = EvaluationContext(commit=sha, split=split, worktree=worktree, sample_ids=selected,
                                            store=store, progress=progress)
                try:
                    evaluation = strategy.evaluate(context)
                except HarborInterrupted:
                    console.print(f"[yellow]interrupted[/yellow]; results so far are in {results_dir}")
                    raise
    results, report = evaluation.samples, evaluation.report
    if report.reaped:
        console.print(f"stopped harbor left running by an earlier runner: {', '.join(report.reaped)}")
    if report.adopted:
        console.print(f"adopted from earlier jobs: {', '.join(report.adopted)}")
    if report.job_name is None:
        console.print("nothing to run: every task already has a result (error samples would re-run)")
    elif report.outcome is not None:
        state = "timed out" if report.outcome.timed_out else f"exit code {report.outcome.exit_code}"
        console.print(f"harbor job {report.job_name}: {state} after {report.outcome.duration_s:.0f}s")
        if report.outcome.failed:
            console.print(report.outcome.stderr_end(), markup=False, highlight=False)
    # The same archive format as a compiled task's session: `vero report` and `recover` read it.
    archive = results_dir / ARCHIVE_NAME
    atomic_write_bytes(archive, runner_archive(origin=loaded.origin, config=config, partition=loaded.partition,
                                               split=split, commit=sha, repo=repo, results=results))
    console.print(f"session archive: {archive} (vero report {archive})")
    _print_results(_console(), results, f"{split} @ {sha[:12]}", as_json)


@cli.command(name="collate")
@_source_options(require_agent=False)
@click.option("--jobs-dir", type=click.Path(path_type=Path), required=True,
              help="a Harbor jobs dir (-o) or a single job dir")
@click.option("--commit", default="-", help="commit label recorded in the results")
def collate_command(build_config: Path | None, harbor_config: Path | None, partition_file: Path | None,
                    task_source: str | None, registry_path: Path | None, reward_key: str | None,
                    aggregate_attempts: str | None, split: str, as_json: bool, jobs_dir: Path, commit: str) -> None:
    """Re-collate an existing jobs directory against a partition and split (runs nothing)."""
    loaded = _load(build_config, harbor_config, partition_file, task_source, None, registry_path).with_overrides(
        {"reward_key": reward_key, "aggregate_attempts": aggregate_attempts})
    settings = loaded.collation()
    source = TaskSource.open(loaded.task_source, loaded.base_dir, loaded.registry_path)
    refs = source.resolve(loaded.split(split), where=f"partition.{split}")
    if not job_dirs(jobs_dir):
        raise VeroError("no Harbor job directory found", where=str(jobs_dir),
                        fix="pass the -o dir of a harbor run, or one job dir inside it")
    results = collate(refs, read_jobs(jobs_dir), settings, split=split, commit=commit,
                      note=RunNote(job=str(jobs_dir)), fallback_start=time.time(), where=str(jobs_dir))
    _print_results(_console(), results, f"{split} (collated from {jobs_dir})", as_json)


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM is handled like Ctrl-C: stop harbor's process group, save what finished, exit 130.
    raise KeyboardInterrupt


def main() -> None:
    """Console entry point of the runner PEX."""
    signal.signal(signal.SIGTERM, _terminate)
    cli()
